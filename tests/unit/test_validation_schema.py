"""Schema inference, the YAML round trip, hand edits, and one-line errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainpipe.data.validation import (
    Schema,
    SchemaError,
    infer_schema,
    load_digits_table,
    load_schema,
    save_schema,
    schema_from_yaml,
    schema_to_yaml,
    validate_dataset,
)
from trainpipe.data.validation.synthetic import example_table


def test_inference_kinds_and_label():
    schema = infer_schema(example_table(500, seed=1), label_column="label")
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds == {
        "x": "numeric",
        "count": "numeric",
        "color": "categorical",
        "review": "text",
        "pixels": "array",
        "label": "categorical",
    }
    assert schema.column("color").values == ["blue", "green", "red"]
    assert schema.column("pixels").shape == [1, 4, 4]
    assert schema.label.values == [0, 1, 2]
    assert schema.label.max_imbalance_ratio >= 1.5


def test_digits_schema_round_trip(tmp_path: Path):
    schema = infer_schema(load_digits_table(), label_column="label", infer_ranges=True)
    assert schema.column("pixels").min == 0 and schema.column("pixels").max == 16
    uri = save_schema(schema, str(tmp_path / "schema.yaml"))
    assert uri.startswith("file://")
    assert load_schema(str(tmp_path / "schema.yaml")) == schema
    assert load_schema(uri) == schema
    assert schema_from_yaml(schema_to_yaml(schema)) == schema


def test_hand_tightened_file_is_read_and_enforced(tmp_path: Path):
    path = tmp_path / "schema.yaml"
    save_schema(infer_schema(example_table(500, seed=1)), str(path))
    text = path.read_text()
    assert text.startswith("# trainpipe data schema (version 1)")
    # A person tightens x's range after trainpipe wrote the file (its sha256 goes stale).
    head, _, tail = text.partition("- name: x\n")
    path.write_text(
        head + "- name: x\n" + tail.replace("min: null\n  max: null", "min: -1\n  max: 1", 1)
    )
    schema = load_schema(str(path))
    assert (schema.column("x").min, schema.column("x").max) == (-1, 1)
    report = validate_dataset(example_table(200, seed=2), schema)
    assert [a.check for a in report.blocking] == ["out_of_range"]


def test_schema_models_are_frozen_and_strict():
    schema = infer_schema(example_table(50, seed=1))
    with pytest.raises(ValueError):
        schema.min_rows = 5  # type: ignore[misc]
    with pytest.raises(ValueError):
        Schema.model_validate({"columns": [], "bogus": 1})


BASE = "version: 1\ncolumns:\n- {name: age, kind: numeric, dtype: int%s}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE % ", maxx: 3", "unknown key `columns[0] (age).maxx`; remove it or fix its spelling"),
        (BASE % ", min: abc", "key `columns[0] (age).min`: Input should be a valid number"),
        (BASE % ", min: 5, max: 1", "key `columns[0] (age)`: min 5.0 is above max 1.0; swap them"),
        (BASE.replace("numeric", "number") % "", "key `columns[0] (age).kind` must be numeric"),
        (BASE % ", max_missing_fraction: 2", "max_missing_fraction`: Input should be less than"),
        ("version: 7\ncolumns: []\n", "version 7 is not supported"),
        ("columns: [\n", "not valid YAML at line 2"),
        ("- 1\n", "expected a mapping with 'version' and 'columns'"),
        (BASE % "" + "label: {column: y}\n", "label column 'y' is not under columns; add it"),
        ("version: 1\n", "key `columns` is required; add it"),
    ],
)
def test_bad_schema_is_one_line_naming_key_and_fix(text: str, expected: str):
    with pytest.raises(SchemaError) as info:
        schema_from_yaml(text, source="s.yaml")
    message = str(info.value)
    assert message.startswith("s.yaml: ")
    assert expected in message
    assert "\n" not in message


def test_missing_schema_file(tmp_path: Path):
    with pytest.raises(SchemaError, match=r"schema .* is unreadable: missing artifact"):
        load_schema(str(tmp_path / "none.yaml"))


def test_unknown_label_column_is_a_schema_error():
    with pytest.raises(SchemaError, match="label column 'target' is not in the data"):
        infer_schema(example_table(10), label_column="target")
