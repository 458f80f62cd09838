"""The data schema: inferred from a reference dataset, saved as versioned YAML, tightened by hand.

    schema = infer_schema(reference, label_column="label")
    save_schema(schema, "s3://bucket/runs/r1/validate_data/schema.yaml")
    schema = load_schema("schema.yaml")          # SchemaError: one line naming the key and fix

A schema file looks like this (every key is optional except ``version`` and the column ``name``/
``kind``/``dtype``; unknown keys are errors so typos do not silently disable a check)::

    version: 1
    min_rows: 1
    allow_extra_columns: false
    max_duplicate_fraction: 0.0
    check_leakage: true
    severity: {drift: blocking}          # override the default severity of any check
    drift_defaults: {psi: 0.25, js: 0.2, ks: 0.15}
    label: {column: label, values: [0, 1, 2], max_imbalance_ratio: 3.0}
    columns:
    - {name: age, kind: numeric, dtype: int, min: 0, max: 130, max_missing_fraction: 0.01}
    - {name: color, kind: categorical, dtype: string, values: [red, green, blue]}
    - {name: review, kind: text, dtype: string, max_length: 5000}
    - {name: pixels, kind: array, dtype: float, shape: [1, 8, 8], min: 0, max: 16}
    - {name: label, kind: categorical, dtype: int}
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainpipe.data.validation.io import array_shape
from trainpipe.storage import StorageError, open_store, split_uri

SCHEMA_VERSION = 1

Severity = Literal["blocking", "warning"]
CheckName = Literal[
    "unreadable",
    "empty_dataset",
    "missing_column",
    "extra_column",
    "wrong_type",
    "out_of_range",
    "nan",
    "inf",
    "unseen_category",
    "missing_fraction",
    "text_length",
    "array_shape",
    "unknown_label",
    "class_imbalance",
    "duplicates",
    "leakage",
    "drift",
]
CHECKS: tuple[str, ...] = CheckName.__args__  # type: ignore[attr-defined]
_WARNINGS = ("extra_column", "class_imbalance", "duplicates", "drift")
DEFAULT_SEVERITY: dict[str, Severity] = {
    check: "warning" if check in _WARNINGS else "blocking" for check in CHECKS
}
DType = Literal["int", "float", "bool", "string"]
# Strings with at most this many distinct values (and repeats) are categories, not free text.
MAX_INFERRED_CATEGORIES = 50


class SchemaError(ValueError):
    """The schema file is unreadable or invalid; the message names the key and the fix."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class DriftThresholds(_Model):
    """Distances above which a feature counts as drifted; null turns that metric off."""

    psi: float | None = Field(0.25, ge=0)
    """Population stability index over reference-quantile bins (0.1 small, 0.25 large)."""
    js: float | None = Field(0.2, ge=0, le=1)
    """Jensen-Shannon distance (base 2, in [0, 1]) between the two histograms."""
    ks: float | None = Field(0.15, ge=0, le=1)
    """Kolmogorov-Smirnov statistic (largest CDF gap) for numbers, lengths and pixel means."""
    embedding_auc: float | None = Field(0.75, ge=0.5, le=1)
    """ROC AUC of a classifier telling reference from current embeddings (0.5: no drift)."""
    max_p_value: float | None = Field(0.01, gt=0, le=1)
    """A distance above its threshold counts as drift only when a test (Kolmogorov-Smirnov for
    numbers, chi-square for categories) finds the samples different at this level: on small
    samples the distances are large by chance. Null: the distances alone decide."""


class _Column(_Model):
    name: str = Field(min_length=1)
    """Column name in the data."""
    required: bool = True
    """A missing required column is a ``missing_column`` anomaly."""
    max_missing_fraction: float = Field(0.0, ge=0, le=1)
    """Largest allowed fraction of null values (rows with no value)."""
    drift: DriftThresholds | None = None
    """Per-feature drift thresholds; null uses the schema's ``drift_defaults``."""


class _Ranged(_Model):
    min: float | None = None
    """Smallest allowed value (inclusive); null for no bound."""
    max: float | None = None
    """Largest allowed value (inclusive); null for no bound."""
    allow_nan: bool = False
    """NaN values are allowed (they are not counted as missing)."""
    allow_inf: bool = False
    """Infinite values are allowed."""

    @model_validator(mode="after")
    def _range_ordered(self) -> _Ranged:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}; swap them")
        return self


class NumericColumn(_Column, _Ranged):
    """A number per row."""

    kind: Literal["numeric"] = "numeric"
    """Column kind."""
    dtype: Literal["int", "float"]
    """Value type: int data is accepted for float columns, not the other way round."""


class CategoricalColumn(_Column):
    """A category per row (strings, small ints, booleans)."""

    kind: Literal["categorical"] = "categorical"
    """Column kind."""
    dtype: DType
    """Value type."""
    values: list[str | int | bool] | None = None
    """Allowed categories; null accepts any value."""
    max_unseen_fraction: float = Field(0.0, ge=0, le=1)
    """Largest allowed fraction of rows whose value is not in ``values``."""


class TextColumn(_Column):
    """Free text per row."""

    kind: Literal["text"] = "text"
    """Column kind."""
    dtype: Literal["string"] = "string"
    """Value type."""
    min_length: int | None = Field(None, ge=0)
    """Shortest allowed text in characters; null for no bound."""
    max_length: int | None = Field(None, ge=0)
    """Longest allowed text in characters; null for no bound."""


class ArrayColumn(_Column, _Ranged):
    """A fixed-shape numeric array per row (an image, a spectrum), stored as fixed_size_list."""

    kind: Literal["array"] = "array"
    """Column kind."""
    dtype: Literal["int", "float"]
    """Element type."""
    shape: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)
    """Shape of one example, e.g. [1, 8, 8] for an 8x8 single-channel image."""


Column = Annotated[
    NumericColumn | CategoricalColumn | TextColumn | ArrayColumn, Field(discriminator="kind")
]


class LabelSchema(_Model):
    """The target column of a supervised dataset."""

    column: str
    """Name of the label column (it also appears under ``columns``)."""
    values: list[str | int | bool] | None = None
    """The known label set; other labels are ``unknown_label`` anomalies. Null accepts any."""
    max_imbalance_ratio: float | None = Field(None, ge=1)
    """Largest allowed (most frequent class count / least frequent class count)."""


class Schema(_Model):
    """What a dataset must look like; the file format is documented in docs/validation.md."""

    version: Literal[1] = SCHEMA_VERSION
    """Schema file format version."""
    columns: list[Column]
    """Expected columns."""
    label: LabelSchema | None = None
    """The label column and its constraints, for supervised data."""
    min_rows: int = Field(1, ge=0)
    """Fewer rows than this is an ``empty_dataset`` anomaly."""
    allow_extra_columns: bool = False
    """Columns not listed here are accepted silently instead of an ``extra_column`` warning."""
    max_duplicate_fraction: float = Field(0.0, ge=0, le=1)
    """Largest allowed fraction of rows that repeat an earlier row (all columns equal)."""
    check_leakage: bool = True
    """Look for identical examples (all non-label columns equal) across splits."""
    severity: dict[CheckName, Severity] = {}
    """Overrides of the default severity per check, e.g. ``{drift: blocking}``."""
    drift_defaults: DriftThresholds = DriftThresholds()
    """Drift thresholds for columns that set none."""

    @model_validator(mode="after")
    def _consistent(self) -> Schema:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"column {dupes[0]!r} is listed twice; keep one entry")
        if self.label is not None and self.label.column not in names:
            raise ValueError(
                f"label column {self.label.column!r} is not under columns; add it there"
            )
        return self

    def column(self, name: str) -> NumericColumn | CategoricalColumn | TextColumn | ArrayColumn:
        return next(c for c in self.columns if c.name == name)

    def severity_of(self, check: str) -> Severity:
        return self.severity.get(check, DEFAULT_SEVERITY[check])  # type: ignore[call-overload]

    def thresholds(self, name: str) -> DriftThresholds:
        spec = next((c for c in self.columns if c.name == name), None)
        return spec.drift if spec is not None and spec.drift is not None else self.drift_defaults


# ---- types ----------------------------------------------------------------------------------


def dtype_family(t: pa.DataType) -> str:
    """ "int", "float", "bool", "string", "array", "list", "null" or "other" for an Arrow type."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_fixed_size_list(t):
        return "array"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return "list"
    if pa.types.is_null(t):
        return "null"
    return "other"


def element_family(t: pa.DataType) -> str:
    while pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        t = t.value_type
    return dtype_family(t)


# ---- inference ------------------------------------------------------------------------------


def infer_schema(
    table: pa.Table,
    *,
    label_column: str | None = None,
    infer_ranges: bool = False,
    imbalance_headroom: float = 2.0,
) -> Schema:
    """A schema that ``table`` passes, loose enough that a fresh sample of the same data does.

    Observed NaN/inf allow them; the observed missing fraction gets headroom; categories are the
    observed values; array shapes are exact. Value ranges are only written when
    ``infer_ranges`` (a resample can exceed an observed maximum); tighten them by hand instead.
    """
    if label_column is not None and label_column not in table.column_names:
        raise SchemaError(
            f"label column {label_column!r} is not in the data (columns: "
            f"{', '.join(table.column_names)}); pass the right --label-column"
        )
    n = table.num_rows
    columns = [
        _infer_column(field, table.column(field.name), n, field.name == label_column, infer_ranges)
        for field in table.schema
    ]
    label = None
    if label_column is not None:
        counts = pc.value_counts(table.column(label_column).drop_null())
        values = sorted(counts.field("values").to_pylist(), key=_sort_key)
        ratio = _imbalance(counts.field("counts").to_numpy())
        label = LabelSchema(
            column=label_column,
            values=values,
            max_imbalance_ratio=_round_up(max(ratio * imbalance_headroom, 1.5), 2)
            if math.isfinite(ratio)
            else None,
        )
    return Schema(columns=columns, label=label)


def _infer_column(
    field: pa.Field, column: pa.ChunkedArray, n: int, is_label: bool, infer_ranges: bool
) -> NumericColumn | CategoricalColumn | TextColumn | ArrayColumn:
    family = dtype_family(field.type)
    missing = missing_headroom(column.null_count / n if n else 0.0)
    common: dict[str, Any] = {"name": field.name, "max_missing_fraction": missing}
    if family == "array":
        values = pc.list_flatten(column)
        elem = element_family(field.type)
        return ArrayColumn(
            dtype="int" if elem == "int" else "float",
            shape=array_shape(field) or [field.type.list_size],
            **_ranged(values, elem, infer_ranges),
            **common,
        )
    if family in ("int", "float") and not is_label:
        return NumericColumn(dtype=family, **_ranged(column, family, infer_ranges), **common)
    if family in ("int", "bool", "string") and (is_label or family == "bool"):
        return CategoricalColumn(dtype=family, **common)  # the label set lives in `label`
    if family == "string":
        counts = pc.value_counts(column.drop_null()) if n else None
        distinct = len(counts) if counts is not None else 0
        if distinct <= MAX_INFERRED_CATEGORIES and distinct <= max(1, (n - column.null_count) // 2):
            values = sorted(counts.field("values").to_pylist()) if counts is not None else []
            return CategoricalColumn(dtype="string", values=values, **common)
        return TextColumn(**common)
    if family == "null":
        return NumericColumn(dtype="float", **common)
    raise SchemaError(
        f"column {field.name!r} has type {field.type}, which validation does not support; "
        "convert it to a number, string or fixed-size numeric list, or drop it"
    )


def _ranged(values: pa.ChunkedArray | pa.Array, family: str, infer_ranges: bool) -> dict:
    out: dict[str, Any] = {}
    if family == "float" and len(values):
        nan = pc.sum(pc.is_nan(values)).as_py() or 0
        inf = pc.sum(pc.is_inf(values)).as_py() or 0
        out = {"allow_nan": nan > 0, "allow_inf": inf > 0}
    if infer_ranges and len(values):
        finite = pc.filter(values, pc.is_finite(values)) if family == "float" else values
        lo, hi = (s.as_py() for s in pc.min_max(finite).values())
        if lo is not None:
            out |= {"min": float(lo), "max": float(hi)}
    return out


def missing_headroom(observed: float) -> float:
    """Room for sampling noise above an observed missing fraction (0 stays 0): a validation
    split of a hundred rows easily shows twice the training split's rate plus a few rows."""
    if observed == 0:
        return 0.0
    return min(1.0, _round_up(observed * 2 + 0.03, 3))


def _round_up(x: float, digits: int) -> float:
    scale = 10**digits
    return math.ceil(x * scale) / scale


def _imbalance(counts: np.ndarray) -> float:
    if len(counts) == 0:
        return 1.0
    lo = counts.min()
    return float(counts.max() / lo) if lo > 0 else math.inf


def _sort_key(v: Any) -> tuple[str, Any]:
    return (type(v).__name__, v)


# ---- files ----------------------------------------------------------------------------------

_HEADER = """\
# trainpipe data schema (version {version}). Edit to tighten: set min/max ranges, allowed
# categories (values), max_missing_fraction, required, array shape, label values and
# max_imbalance_ratio, per-column drift thresholds, and severity overrides per check.
# Format: docs/validation.md. Unknown keys are rejected.
"""


class _Dumper(yaml.SafeDumper):
    pass


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(v, dict | list) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_dict(dumper: yaml.SafeDumper, data: dict) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=False)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(dict, _represent_dict)


def schema_to_yaml(schema: Schema) -> str:
    data = schema.model_dump(mode="json")
    # name, kind and dtype first: that is how a person scans the file.
    data["columns"] = [
        {k: c[k] for k in ("name", "kind", "dtype")} | {k: v for k, v in c.items()}
        for c in data["columns"]
    ]
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100)
    return _HEADER.format(version=schema.version) + body


def schema_from_yaml(text: str, *, source: str = "schema") -> Schema:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SchemaError(
            f"{source}: not valid YAML{where} ({getattr(exc, 'problem', exc)}); fix the syntax"
        ) from None
    if not isinstance(raw, dict):
        raise SchemaError(
            f"{source}: expected a mapping with 'version' and 'columns', got "
            f"{type(raw).__name__}; start from `trainpipe validate DATA --write-schema FILE`"
        )
    if raw.get("version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise SchemaError(
            f"{source}: version {raw['version']!r} is not supported; this trainpipe reads "
            f"version {SCHEMA_VERSION} (regenerate with --write-schema)"
        )
    try:
        return Schema.model_validate(raw)
    except ValidationError as exc:
        raise SchemaError(f"{source}: {_describe(exc, raw)}") from None


def _describe(exc: ValidationError, raw: dict) -> str:
    """The first error as 'key `columns[2] (age).min`: problem (got X); fix'."""
    err = exc.errors()[0]
    loc: list[str] = []
    node: Any = raw
    for part in err["loc"]:
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) else None
            name = item.get("name") if isinstance(item, dict) else None
            loc[-1] += f"[{part}]" + (f" ({name})" if name else "")
            node = node[part] if isinstance(node, list) else None
        elif isinstance(node, dict) and part in node:
            loc.append(str(part))
            node = node[part]
        elif part in (
            "numeric",
            "categorical",
            "text",
            "array",
            "function-after[_range_ordered()]",
        ):
            continue  # the discriminator tag pydantic adds to the location
        else:
            loc.append(str(part))
            node = None
    key = ".".join(loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key `{key}`; remove it or fix its spelling (see docs/validation.md)"
    if kind == "missing":
        return f"key `{key}` is required; add it"
    if kind == "union_tag_invalid":
        return f"key `{key}.kind` must be numeric, categorical, text or array; fix it"
    if kind == "union_tag_not_found":
        return f"key `{key}` needs a `kind` (numeric, categorical, text or array); add it"
    got = err.get("input")
    got_text = "" if isinstance(got, dict | list) else f" (got {got!r})"
    if kind == "value_error":
        return f"key `{key}`: {err['msg'].removeprefix('Value error, ')}"
    return f"key `{key}`: {err['msg']}{got_text}; fix that value"


def save_schema(schema: Schema, uri: str) -> str:
    """Write the schema as YAML through storage; returns the URI."""
    base, name = split_uri(uri)
    store = open_store(base)
    store.put_bytes(name, schema_to_yaml(schema).encode())
    return store.uri_for(name)


def load_schema(uri: str, *, endpoint_url: str | None = None) -> Schema:
    """Read and validate a schema file; any problem is a one-line :class:`SchemaError`."""
    base, name = split_uri(uri)
    try:
        store = open_store(base, endpoint_url=endpoint_url)
        # A schema is meant to be edited by hand after trainpipe wrote it, so the sha256
        # recorded at write time goes stale; its integrity check is the validation below.
        data = store.get_editable_bytes(name)
    except StorageError as exc:
        raise SchemaError(f"schema {uri} is unreadable: {exc}") from None
    return schema_from_yaml(data.decode("utf-8", errors="replace"), source=uri)
