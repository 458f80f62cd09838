"""Each anomaly class: data with exactly that fault is caught with its specific message, and
clean data from the same distribution passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from trainpipe.data.validation import (
    Schema,
    array_field,
    check_table,
    infer_schema,
    validate_dataset,
    write_table,
)
from trainpipe.data.validation.synthetic import example_table

REFERENCE = example_table(1000, seed=1)


def tightened_schema() -> Schema:
    """The inferred schema plus the limits a user would add by hand."""
    data = infer_schema(REFERENCE, label_column="label").model_dump()
    for column in data["columns"]:
        if column["name"] == "x":
            column |= {"min": -6.0, "max": 6.0}
        if column["name"] == "count":
            column |= {"max_missing_fraction": 0.05}
        if column["name"] == "review":
            column |= {"max_length": 200}
        if column["name"] == "pixels":
            column |= {"min": 0.0, "max": 16.0}
    data["label"]["max_imbalance_ratio"] = 3.0
    return Schema.model_validate(data)


SCHEMA = tightened_schema()


def clean(seed: int = 2, n: int = 400) -> pa.Table:
    return example_table(n, seed=seed)


def with_values(table: pa.Table, name: str, rows: list[int], value: object) -> pa.Table:
    values = table.column(name).to_pylist()
    for row in rows:
        values[row] = value
    i = table.schema.get_field_index(name)
    return table.set_column(
        i, table.schema.field(name), pa.array(values, table.schema.field(name).type)
    )


def checks_of(report) -> set[str]:
    return {a.check for a in report.anomalies}


def test_clean_splits_from_the_same_distribution_pass():
    report = validate_dataset({"train": clean(2), "validation": clean(3), "test": clean(4)}, SCHEMA)
    assert report.anomalies == [], [a.message for a in report.anomalies]
    assert report.passed
    assert report.checks()["leakage"].verdict == "pass"
    assert report.checks()["out_of_range"].verdict == "pass"


def test_inferred_schema_passes_a_fresh_sample():
    schema = infer_schema(REFERENCE, label_column="label")
    for seed in range(2, 6):
        report = validate_dataset({"train": clean(seed, n=700)}, schema)
        assert report.anomalies == [], [a.message for a in report.anomalies]


def _truncated(tmp_path: Path) -> dict[str, object]:
    """A Parquet file cut in half by some other tool (no trainpipe sha256 sidecar)."""
    path = tmp_path / "train.parquet"
    pq.write_table(clean(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return {"train": str(path)}


def _imbalanced() -> pa.Table:
    table = clean(n=900)
    keep = pc.or_(pc.not_equal(table.column("label"), 2), pc.less(pa.array(range(900)), 150))
    return table.filter(keep)


def _reshaped() -> pa.Table:
    table = clean()
    field, array = array_field("pixels", np.zeros((400, 1, 5, 5), np.float32), [1, 5, 5])
    return table.set_column(table.schema.get_field_index("pixels"), field, array)


def _leaky() -> dict[str, pa.Table]:
    train = clean(2)
    test = pa.concat_tables([clean(3, n=300), train.slice(10, 5)])
    return {"train": train, "test": test}


FAULTS = {
    "missing_column": (
        lambda _: {"train": clean().drop_columns(["color"])},
        "split=train column=color check=missing_column: required column is absent",
        "blocking",
    ),
    "extra_column": (
        lambda _: {"train": clean().append_column("notes", pa.array(["a"] * 400))},
        "column=notes check=extra_column: column is not in the schema (type string)",
        "warning",
    ),
    "wrong_type": (
        lambda _: {"train": clean().set_column(0, "x", pc.cast(clean().column("x"), pa.string()))},
        "column=x check=wrong_type: type is string, the schema expects numeric float",
        "blocking",
    ),
    "out_of_range": (
        lambda _: {"train": with_values(clean(), "x", [1, 2, 3], 50.0)},
        "column=x check=out_of_range: 3 of 400 values (0.75%) are outside [-6, 6]: 0 below, "
        "3 above (observed",
        "blocking",
    ),
    "nan": (
        lambda _: {"train": with_values(clean(), "x", [5, 6, 7, 8], float("nan"))},
        "column=x check=nan: 4 of 400 values are NaN (1.00%)",
        "blocking",
    ),
    "inf": (
        lambda _: {"train": with_values(clean(), "x", [5, 9], float("inf"))},
        "column=x check=inf: 2 of 400 values are infinite (0.50%)",
        "blocking",
    ),
    "unseen_category": (
        lambda _: {"train": with_values(clean(), "color", list(range(10)), "purple")},
        "column=color check=unseen_category: 10 of 400 values (2.50%) are not among the 3 known "
        "categories (1 new values, e.g. 'purple')",
        "blocking",
    ),
    "missing_fraction": (
        lambda _: {"train": with_values(clean(), "count", list(range(40)), None)},
        "column=count check=missing_fraction: 40 of 400 values missing (10.00%), above the "
        "limit 5.00%",
        "blocking",
    ),
    "array_shape": (
        lambda _: {"train": _reshaped()},
        "column=pixels check=array_shape: every example has shape [1, 5, 5] (25 values), the "
        "schema expects [1, 4, 4] (16 values)",
        "blocking",
    ),
    "empty_dataset": (
        lambda _: {"train": clean().slice(0, 0)},
        "split=train check=empty_dataset: 0 rows, the schema needs at least 1",
        "blocking",
    ),
    "unreadable": (
        _truncated,
        "check=unreadable: ",
        "blocking",
    ),
    "unknown_label": (
        lambda _: {"train": with_values(clean(), "label", [0, 1, 2, 3, 4], 7)},
        "column=label check=unknown_label: 5 of 400 labels (1.25%) are outside the known set "
        "of 3 (7)",
        "blocking",
    ),
    "class_imbalance": (
        lambda _: {"train": _imbalanced()},
        "column=label check=class_imbalance: imbalance ratio",
        "warning",
    ),
    "duplicates": (
        lambda _: {"train": pa.concat_tables([clean(), clean().slice(0, 4)])},
        "split=train check=duplicates: 4 of 404 rows (0.99%) repeat an earlier row, above the "
        "limit 0.00%",
        "warning",
    ),
    "leakage": (
        lambda _: _leaky(),
        "split=test check=leakage: 5 of 305 test examples (1.64%) also appear in train "
        "(identical 5 feature columns)",
        "blocking",
    ),
    "text_length": (
        lambda _: {"train": with_values(clean(), "review", [3], "word " * 100)},
        "column=review check=text_length: 1 of 400 texts are outside [none, 200] characters",
        "blocking",
    ),
}


@pytest.mark.parametrize("check", sorted(FAULTS))
def test_each_fault_is_caught_with_its_message(check: str, tmp_path: Path):
    make, message, severity = FAULTS[check]
    report = validate_dataset(make(tmp_path), SCHEMA)
    assert checks_of(report) == {check}, [a.message for a in report.anomalies]
    (anomaly,) = report.anomalies
    assert message in anomaly.message
    assert anomaly.severity == severity
    assert report.passed == (severity == "warning")
    assert report.checks()[check].verdict == ("fail" if severity == "blocking" else "warn")


def test_every_check_has_a_fault_test():
    from trainpipe.data.validation.schema import CHECKS

    assert set(CHECKS) - set(FAULTS) == {"drift"}  # drift: test_validation_drift.py


def test_unreadable_message_names_the_file(tmp_path: Path):
    report = validate_dataset(_truncated(tmp_path), SCHEMA)
    (anomaly,) = report.anomalies
    assert "train.parquet is unreadable as parquet" in anomaly.message
    assert "truncated" in anomaly.message
    assert report.splits["train"] is None


def test_truncated_file_written_through_storage_fails_its_sha256(tmp_path: Path):
    path = tmp_path / "train.jsonl"
    write_table(clean(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    report = validate_dataset({"train": str(path)}, SCHEMA)
    (anomaly,) = report.anomalies
    assert anomaly.check == "unreadable"
    assert "train.jsonl is corrupt: sha256" in anomaly.message


def test_out_of_range_does_not_double_count_infinities():
    table = with_values(with_values(clean(), "x", [1], 50.0), "x", [2], float("inf"))
    anomalies = {a.check: a for a in check_table(table, SCHEMA)}
    assert set(anomalies) == {"out_of_range", "inf"}
    assert anomalies["out_of_range"].values["count"] == 1


def test_array_element_range_and_nan():
    table = clean()
    values = np.stack(table.column("pixels").to_numpy(zero_copy_only=False)).reshape(400, 1, 4, 4)
    values[0, 0, 0, 0] = 99
    values[1, 0, 1, 1] = np.nan
    field, array = array_field("pixels", values.astype(np.float32), [1, 4, 4])
    report = validate_dataset({"train": table.set_column(4, field, array)}, SCHEMA)
    messages = {a.check: a.message for a in report.anomalies}
    assert set(messages) == {"out_of_range", "nan"}
    assert "1 of 6,400 array elements" in messages["out_of_range"]
    assert "1 of 6,400 array elements are NaN" in messages["nan"]


def test_severity_override_makes_a_warning_blocking():
    schema = SCHEMA.model_copy(update={"severity": {"duplicates": "blocking"}})
    report = validate_dataset({"train": pa.concat_tables([clean(), clean().slice(0, 4)])}, schema)
    assert [a.check for a in report.blocking] == ["duplicates"]


def test_without_schema_or_reference_quality_checks_still_run():
    train = clean()
    report = validate_dataset({"train": train, "test": train.slice(0, 50)}, label_column="label")
    assert report.schema_source == "data"
    assert checks_of(report) == {"leakage"}
