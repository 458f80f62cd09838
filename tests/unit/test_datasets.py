"""Data loading: built-in digits, user tables and arrays from file:// and s3://, clear errors."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainpipe.data.config import DataConfig
from trainpipe.data.datasets import check_source, label_subset, load_dataset
from trainpipe.errors import DataError
from trainpipe.storage import open_store


def make_table(n: int = 300, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    label = rng.choice(["cat", "dog", "emu"], size=n)
    offset = np.select([label == "cat", label == "dog"], [0.0, 2.0], 4.0)
    return pa.table(
        {
            "f1": rng.normal(size=n) + offset,
            "f2": rng.normal(size=n) - offset,
            "f3": rng.integers(0, 5, size=n),
            "species": label,
        }
    )


def test_digits_split_is_stratified_and_deterministic():
    cfg = DataConfig()
    first, second = load_dataset(cfg), load_dataset(cfg)
    assert first.feature_shape == [1, 8, 8]
    assert first.num_classes == 10
    total = len(first.train) + len(first.validation) + len(first.test)
    assert total == 1797
    assert len(first.test) == pytest.approx(0.2 * 1797, abs=2)
    np.testing.assert_array_equal(first.test.y, second.test.y)
    counts = np.bincount(first.test.y)
    assert counts.min() >= 30  # every digit is represented in the test split
    assert first.train.x.min() >= 0.0 and first.train.x.max() <= 1.0


def test_parquet_table_with_string_labels(tmp_path):
    pq.write_table(make_table(), tmp_path / "animals.parquet")
    cfg = DataConfig(source=str(tmp_path / "animals.parquet"), label_column="species")
    dataset = load_dataset(cfg)
    assert dataset.label_names == ["cat", "dog", "emu"]
    assert dataset.feature_shape == [3]
    assert dataset.feature_names == ["f1", "f2", "f3"]
    assert dataset.train.x.dtype == np.float32


def test_csv_with_selected_columns(tmp_path):
    import pyarrow.csv as pacsv

    pacsv.write_csv(make_table(), tmp_path / "animals.csv")
    cfg = DataConfig(
        source=f"file://{tmp_path}/animals.csv", label_column="species", feature_columns=["f1"]
    )
    assert load_dataset(cfg).feature_shape == [1]


def test_npz_arrays_keep_their_shape(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "imgs.npz", x=rng.random((120, 1, 4, 4)), y=rng.integers(0, 3, 120))
    dataset = load_dataset(DataConfig(source=str(tmp_path / "imgs.npz")))
    assert dataset.feature_shape == [1, 4, 4]
    assert dataset.label_names == ["0", "1", "2"]


def test_presplit_folder(tmp_path):
    for split, seed in (("train", 0), ("validation", 1), ("test", 2)):
        pq.write_table(make_table(60, seed), tmp_path / f"{split}.parquet")
    dataset = load_dataset(DataConfig(source=str(tmp_path), label_column="species"))
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (60, 60, 60)


def test_parquet_from_s3(s3_bucket, s3_endpoint):
    buffer = io.BytesIO()
    pq.write_table(make_table(), buffer)
    open_store(s3_bucket, endpoint_url=s3_endpoint).put_bytes(
        "data/animals.parquet", buffer.getvalue()
    )
    cfg = DataConfig(source=f"{s3_bucket}/data/animals.parquet", label_column="species")
    assert load_dataset(cfg, endpoint_url=s3_endpoint).num_classes == 3


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing_file", "does not exist; fix data.source"),
        ("missing_folder", "does not exist or is empty"),
        ("no_label", "has no label column 'species'"),
        ("tiny_class", "(2 examples) cannot appear in train, validation and test"),
        ("unsupported_type", "t.parquet: feature column 'seen' has type timestamp"),
        ("variable_list", "t.parquet: feature column 'tags' has type list<element: int64>"),
        ("garbage", "garbage.parquet is unreadable as parquet"),
        ("incomplete_split", "has no validation.parquet/.csv/.jsonl/.npz"),
        ("bad_shape", "cannot take data.feature_shape [2, 2]"),
        ("one_class", "has only the class cat in 'species'; a classifier needs examples of at"),
        ("duplicate_columns", "has duplicate column names ['f1']; rename them"),
        ("duplicate_columns_csv", "has duplicate column names ['f1']; rename them"),
        ("npz_1d_x", "has x of shape [30] and y of shape [30]; x needs one row per example"),
        ("npz_lengths", "has 30 rows in x but 20 labels in y; they must have the same length"),
    ],
)
def test_bad_data_is_one_clear_error(tmp_path, setup, message):
    table = make_table()
    cfg_kwargs = {"label_column": "species"}
    if setup == "missing_file":
        source = str(tmp_path / "nope.parquet")
    elif setup == "missing_folder":
        source = str(tmp_path / "nope")
    elif setup == "no_label":
        pq.write_table(table.drop(["species"]), tmp_path / "t.parquet")
        source = str(tmp_path / "t.parquet")
    elif setup == "tiny_class":
        species = table.column("species").to_pylist()
        species[3] = species[4] = "unicorn"
        table = table.drop(["species"]).append_column("species", pa.array(species))
        pq.write_table(table, tmp_path / "t.parquet")
        source = str(tmp_path / "t.parquet")
    elif setup == "unsupported_type":
        seen = pa.array(np.arange(len(table)), pa.int64()).cast(pa.timestamp("s"))
        pq.write_table(table.append_column("seen", seen), tmp_path / "t.parquet")
        source = str(tmp_path / "t.parquet")
    elif setup == "variable_list":
        tags = pa.array([[i] * (i % 3) for i in range(len(table))], pa.list_(pa.int64()))
        pq.write_table(table.append_column("tags", tags), tmp_path / "t.parquet")
        source = str(tmp_path / "t.parquet")
    elif setup == "garbage":
        (tmp_path / "garbage.parquet").write_bytes(b"not parquet at all")
        source = str(tmp_path / "garbage.parquet")
    elif setup == "incomplete_split":
        pq.write_table(table, tmp_path / "train.parquet")
        source = str(tmp_path)
    elif setup == "one_class":
        species = pa.array(["cat"] * len(table))
        pq.write_table(
            table.set_column(table.schema.get_field_index("species"), "species", species),
            tmp_path / "t.parquet",
        )
        source = str(tmp_path / "t.parquet")
    elif setup == "duplicate_columns":
        names = ["f1" if name == "f2" else name for name in table.column_names]
        pq.write_table(table.rename_columns(names), tmp_path / "t.parquet")
        source = str(tmp_path / "t.parquet")
    elif setup == "duplicate_columns_csv":
        (tmp_path / "t.csv").write_text("f1,f1,species\n1,2,cat\n3,4,dog\n")
        source = str(tmp_path / "t.csv")
    elif setup.startswith("npz"):
        x = np.zeros(30) if setup == "npz_1d_x" else np.zeros((30, 4))
        y = np.arange(30) % 2 if setup == "npz_1d_x" else np.arange(20) % 2
        np.savez(tmp_path / "t.npz", x=x, y=y)
        source = str(tmp_path / "t.npz")
    else:
        pq.write_table(table, tmp_path / "t.parquet")
        source = str(tmp_path / "t.parquet")
        cfg_kwargs["feature_shape"] = [2, 2]
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(source=source, **cfg_kwargs))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_feature_types_are_classified_as_validation_classifies_them(tmp_path):
    """Loading and the schema share one type family: a decimal column is a number to both."""
    import decimal

    from trainpipe.data.validation.schema import infer_schema

    table = make_table()
    price = pa.array([decimal.Decimal(i) / 4 for i in range(len(table))], pa.decimal128(9, 2))
    table = table.append_column("price", price)
    pq.write_table(table, tmp_path / "t.parquet")
    dataset = load_dataset(DataConfig(source=str(tmp_path / "t.parquet"), label_column="species"))
    assert "price" in dataset.feature_names
    column = next(c for c in infer_schema(table).columns if c.name == "price")
    assert column.kind == "numeric" and column.dtype == "float"


def test_check_source_fails_fast(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        check_source(DataConfig(source=str(tmp_path / "x.csv")))
    check_source(DataConfig())  # the built-in dataset always exists


def test_label_subset_is_stratified():
    dataset = load_dataset(DataConfig())
    subset = label_subset(dataset.train, 0.1, seed=0)
    assert len(subset) == pytest.approx(0.1 * len(dataset.train), abs=10)
    assert set(np.unique(subset.y)) == set(range(10))
    np.testing.assert_array_equal(subset.y, label_subset(dataset.train, 0.1, seed=0).y)
