"""Reading Parquet/CSV/JSONL from paths, file:// and s3:// (moto server), and the digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from trainpipe.data.validation import (
    DataReadError,
    infer_schema,
    load_digits_table,
    read_table,
    validate_dataset,
    write_table,
)
from trainpipe.data.validation.hashing import row_hashes
from trainpipe.data.validation.io import array_shape
from trainpipe.data.validation.synthetic import example_table


def test_digits_table_has_image_arrays_with_shape():
    table = load_digits_table()
    assert table.num_rows == 1797
    field = table.schema.field("pixels")
    assert field.type == pa.list_(pa.float32(), 64)
    assert array_shape(field) == [1, 8, 8]
    assert table.schema.field("label").type == pa.int64()
    assert read_table("digits").equals(table)


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_round_trip_keeps_arrays_and_shape(tmp_path: Path, suffix: str):
    table = example_table(50, seed=1)
    uri = f"file://{tmp_path}/data.{suffix}"
    write_table(table, uri)
    back = read_table(uri)
    assert back.column_names == table.column_names
    assert array_shape(back.schema.field("pixels")) in ([1, 4, 4], [16])
    assert back.column("pixels").to_pylist() == table.column("pixels").to_pylist()
    assert back.column("color").to_pylist() == table.column("color").to_pylist()


def test_csv_from_a_plain_path(tmp_path: Path):
    table = example_table(30, seed=1).drop_columns(["pixels"])
    write_table(table, str(tmp_path / "data.csv"))
    back = read_table(str(tmp_path / "data.csv"))
    assert back.column("x").to_pylist() == pytest.approx(table.column("x").to_pylist())
    assert back.column("color").to_pylist() == table.column("color").to_pylist()


def test_jsonl_nested_lists_become_fixed_shape_arrays(tmp_path: Path):
    rows = [{"image": np.full((2, 3), i).tolist(), "label": i % 2} for i in range(6)]
    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    table = read_table(str(tmp_path / "x.jsonl"))
    assert pa.types.is_fixed_size_list(table.schema.field("image").type)
    assert array_shape(table.schema.field("image")) == [2, 3]
    schema = infer_schema(table, label_column="label")
    assert schema.column("image").shape == [2, 3]


def test_jsonl_null_array_rows_stay_null(tmp_path: Path):
    lines = ['{"a": [[1, 2], [3, 4]]}', '{"a": null}', '{"a": [[5, 6], [7, 8]]}']
    (tmp_path / "n.jsonl").write_text("\n".join(lines))
    table = read_table(str(tmp_path / "n.jsonl"))
    assert table.column("a").to_pylist() == [[1, 2, 3, 4], None, [5, 6, 7, 8]]
    assert validate_dataset(table).anomalies == []
    assert len(set(row_hashes(table).tolist())) == 3


def test_folder_of_parquet_files_is_one_table(tmp_path: Path):
    for i in range(3):
        write_table(example_table(10, seed=i), str(tmp_path / "part" / f"p{i}.parquet"))
    assert read_table(str(tmp_path / "part")).num_rows == 30


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.parquet", b"PAR1 not really", "bad.parquet is unreadable as parquet"),
        ("bad.jsonl", b'{"a": 1}\n{"a": 2, "b', "bad.jsonl is unreadable as jsonl"),
        ("bad.csv", b"a,b\n1,2\n3,4,5\n", "bad.csv is unreadable as csv"),
        ("empty.csv", b"", "the file is empty"),
        ("data.xlsx", b"xx", "cannot tell the format"),
    ],
)
def test_unreadable_files_raise_one_clear_line(tmp_path: Path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataReadError, match=expected) as info:
        read_table(str(tmp_path / name))
    assert "\n" not in str(info.value)


def test_missing_file_is_a_read_error(tmp_path: Path):
    with pytest.raises(DataReadError, match="does not exist"):
        read_table(str(tmp_path / "nope.parquet"))


def test_s3_reading_through_storage(s3_bucket: str, s3_endpoint: str):
    train, test = example_table(300, seed=1), example_table(200, seed=2)
    write_table(train, f"{s3_bucket}/data/train.parquet", endpoint_url=s3_endpoint)
    write_table(test, f"{s3_bucket}/data/test.jsonl", endpoint_url=s3_endpoint)
    assert read_table(f"{s3_bucket}/data/train.parquet", endpoint_url=s3_endpoint).equals(train)
    report = validate_dataset(
        {"train": f"{s3_bucket}/data/train.parquet", "test": f"{s3_bucket}/data/test.jsonl"},
        reference=f"{s3_bucket}/data/train.parquet",
        label_column="label",
        endpoint_url=s3_endpoint,
    )
    assert report.passed, [a.message for a in report.anomalies]
    assert report.splits["test"].num_rows == 200


def test_s3_missing_object_is_an_unreadable_anomaly(s3_bucket: str, s3_endpoint: str):
    report = validate_dataset({"train": f"{s3_bucket}/nope.parquet"}, endpoint_url=s3_endpoint)
    (anomaly,) = report.anomalies
    assert anomaly.check == "unreadable"
    assert "does not exist" in anomaly.message
