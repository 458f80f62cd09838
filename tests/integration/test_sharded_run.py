"""``trainpipe run`` on a sharded source: Parquet shards streamed from moto's S3 server through
every stage, and bad shards stopping validation with one line naming the shard."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tests.integration.test_local_run import FAST, run_id_of, trainpipe
from trainpipe.data.shards import write_shards
from trainpipe.storage import open_store

pytestmark = pytest.mark.slow


def grades(n: int = 800, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    label = rng.choice(["low", "mid", "high"], size=n)
    center = np.select([label == "low", label == "mid"], [-2.0, 0.0], 2.0)
    columns = {f"x{i}": rng.normal(size=n) + center * (i % 2) for i in range(6)}
    return pa.table({**columns, "grade": label})


def test_sharded_run_from_s3(tmp_path, s3_bucket, s3_endpoint):
    write_shards(
        grades(),
        f"{s3_bucket}/shards",
        rows_per_shard=100,
        row_group_rows=50,
        endpoint_url=s3_endpoint,
    )
    done = trainpipe(
        "run",
        "--output",
        str(tmp_path),
        *FAST,
        *("--set", f"storage.uri={s3_bucket}/pipe"),
        *("--set", f"storage.endpoint_url={s3_endpoint}"),  # only in config, as a user sets it
        *("--set", f"data.source={s3_bucket}/shards/"),
        *("--set", "data.label_column=grade"),
        *("--set", f"data.streaming.cache_dir={tmp_path / 'cache'}"),
        *("--set", "gate.slice_columns=[x1]"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    store = open_store(f"{s3_bucket}/pipe", endpoint_url=s3_endpoint)
    run = f"runs/{run_id_of(done.stdout)}"
    data = store.get_json(f"{run}/validate_data/dataset.json")
    assert data["format"] == "shards" and data["source"].startswith("s3://")
    assert sum(len(v) for v in data["shards"].values()) == 8
    assert not store.exists(f"{run}/validate_data/train.npz")  # streamed, never stored as arrays
    evaluation = store.get_json(f"{run}/evaluate/metrics.json")
    assert evaluation["num_examples"] == data["split_sizes"]["test"]
    assert evaluation["accuracy"] > 0.6
    assert any(name.startswith("x1 in [") for name in evaluation["slices"])  # streamed slices
    assert list((tmp_path / "cache").glob("*.parquet"))  # shards came through the local cache


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncated", "does not match the sha256 in shards.json"),
        ("truncated, no index", "is not a readable Parquet file"),
        ("missing", "is listed in shards.json but missing"),
    ],
)
def test_bad_shard_fails_with_one_line_naming_it(tmp_path, damage, expected):
    write_shards(grades(400), str(tmp_path / "shards"), rows_per_shard=100)
    shard = tmp_path / "shards" / "part-00002.parquet"
    if damage.startswith("truncated"):
        shard.write_bytes(shard.read_bytes()[:-200])
    else:
        shard.unlink()
    if damage.endswith("no index"):
        (tmp_path / "shards" / "shards.json").unlink()
    done = trainpipe(
        "run",
        "--output",
        str(tmp_path / "out"),
        *("--set", f"data.source={tmp_path / 'shards'}"),
        *("--set", "data.label_column=grade"),
    )
    assert done.returncode == 1
    output = done.stdout + done.stderr
    lines = [line for line in output.splitlines() if "part-00002.parquet" in line]
    assert len(lines) == 1 and "data error: shard" in lines[0], output[-3000:]
    assert expected in lines[0]
    assert "Traceback" not in output
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("trainpipe: the pipeline failed at stage 'validate_data'")


def test_image_folder_run(tmp_path):
    """JPEG/PNG files in one sub-folder per class, prepared as shards, through every stage."""
    import io

    from PIL import Image

    from trainpipe.data.images import prepare_images

    rng = np.random.default_rng(0)
    for label, (row, col) in {"top": (2, 6), "left": (6, 2), "bottom": (10, 6)}.items():
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(40):
            pixels = rng.integers(0, 60, (12, 12)).astype(np.uint8)
            pixels[row : row + 3, col : col + 3] = 250  # a bright square whose place is the class
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG" if i % 2 else "JPEG", quality=95)
            suffix = "png" if i % 2 else "jpg"
            (tmp_path / "images" / label / f"{i:03d}.{suffix}").write_bytes(buffer.getvalue())
    prepare_images(str(tmp_path / "images"), str(tmp_path / "shards"), rows_per_shard=12)
    done = trainpipe(
        "run",
        "--output",
        str(tmp_path / "out"),
        *FAST,
        *("--set", f"data.source={tmp_path / 'shards'}"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    store = open_store(str(tmp_path / "out"))
    run = f"runs/{run_id_of(done.stdout)}"
    data = store.get_json(f"{run}/validate_data/dataset.json")
    assert data["feature_shape"] == [1, 12, 12] and data["feature_columns"] == ["image"]
    assert data["label_names"] == ["bottom", "left", "top"]
    assert store.get_json(f"{run}/evaluate/metrics.json")["accuracy"] > 0.6


def prices(n: int = 1200, seed: int = 0) -> pa.Table:
    """A regression table with a string category (some missing) and a numeric column with
    missing values: what single-file tables preprocess."""
    rng = np.random.default_rng(seed)
    x0, x1 = rng.normal(size=n), rng.normal(size=n)
    x1[rng.random(n) < 0.1] = np.nan
    city = rng.choice(["north", "south", "east"], size=n).astype(object)
    city[rng.random(n) < 0.1] = None
    price = 2 * x0 + np.where(city == "north", 3.0, 0.0) + np.nan_to_num(x1)
    price += rng.normal(size=n) * 0.1
    return pa.table({"x0": x0, "x1": x1, "city": pa.array(list(city), pa.string()), "price": price})


def test_sharded_regression_table_run(tmp_path):
    """Sharded Parquet with categories, missing values and a numeric target: the same
    preprocessing and regression as a single table, streamed through every stage."""
    # Row groups of 100 rows: streaming validation infers the schema (how many values may be
    # missing) from the first training row group, which must see some missing cities.
    write_shards(prices(), str(tmp_path / "shards"), rows_per_shard=100, row_group_rows=100)
    done = trainpipe(
        "run",
        "--output",
        str(tmp_path / "out"),
        *FAST,
        *("--set", f"data.source={tmp_path / 'shards'}"),
        *("--set", "data.label_column=price"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    store = open_store(str(tmp_path / "out"))
    run = f"runs/{run_id_of(done.stdout)}"
    data = store.get_json(f"{run}/validate_data/dataset.json")
    assert data["format"] == "shards" and data["task"] == "regression"
    columns = {c["name"]: c for c in data["preprocess"]["columns"]}
    assert columns["city"]["kind"] == "categorical"
    assert sorted(columns["city"]["categories"]) == ["east", "north", "south"]
    assert columns["x1"]["indicator"]  # missing values seen in the training sample
    assert data["target_scale"][1] > 1.0  # the target's spread, from validation's moments
    metrics = store.get_json(f"{run}/evaluate/metrics.json")
    assert metrics["num_examples"] == data["split_sizes"]["test"]
    assert metrics["r2"] > 0.9, metrics["r2"]
    model = store.get_json(f"{run}/export_onnx/model.json")
    assert [i["name"] for i in model["inputs"]] == ["x0", "x1", "city"]
    assert {i["name"]: i["datatype"] for i in model["inputs"]}["city"] == "BYTES"
