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
    ],
)
def test_bad_dataset_ends_in_one_line(tmp_path, kind, message):
    rng = np.random.default_rng(0)
    n = 120
    # (Float labels are no longer bad input: they make a regression task, tested end to end in
    # tests/integration/test_local_run.py.)
    label = ["a"] * n
    source = tmp_path / "data.parquet"
    pq.write_table(
        pa.table({"x0": rng.normal(size=n), "x1": rng.normal(size=n), "label": label}), source
    )
    done = trainpipe(
        "run", "--output", str(tmp_path / "out"), "--set", f"data.source={source}", *FAST
    )
    assert done.returncode == 1, done.stdout[-2000:]
    output = done.stdout + done.stderr  # kfp.local relays the stage's stderr on stdout
    assert "Traceback" not in output, output[-3000:]
    stage_lines = [line for line in done.stdout.splitlines() if "trainpipe: data error" in line]
    assert len(stage_lines) == 1 and message in stage_lines[0], output[-3000:]
    (run_line,) = [line for line in done.stderr.splitlines() if line.startswith("trainpipe: ")]
    assert run_line.startswith("trainpipe: the pipeline failed at stage 'validate_data'")
