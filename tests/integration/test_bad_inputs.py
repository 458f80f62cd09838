"""Bad datasets given to ``trainpipe run`` end in one line naming the problem, exit 1.

The failing stage is named from kfp.local's own report, and no stage prints a traceback.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.integration.test_local_run import FAST, trainpipe

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("one_class", "has only the class a in 'label'; a classifier needs examples of at least 2"),
        ("float_labels", "data error: "),
    ],
)
def test_bad_dataset_ends_in_one_line(tmp_path, kind, message):
    rng = np.random.default_rng(0)
    n = 120
    label = ["a"] * n if kind == "one_class" else rng.normal(size=n)
    source = tmp_path / "data.parquet"
    pq.write_table(
        pa.table({"x0": rng.normal(size=n), "x1": rng.normal(size=n), "label": label}), source
    )
    done = trainpipe(
        "run", "--output", str(tmp_path / "out"), "--set", f"data.source={source}", *FAST
    )
    assert done.returncode == 1, done.stdout[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("trainpipe: ")]
    assert len(errors) == 2, done.stderr[-3000:]  # the stage's own line, then the run's
    assert message in errors[0]
    assert errors[1].startswith("trainpipe: the pipeline failed at stage 'validate_data'")
