"""Data validation on Apache Arrow: statistics, schema, anomalies, drift and readable reports.

    from trainpipe.data.validation import infer_schema, read_table, validate_dataset

    train = read_table("s3://bucket/data/train.parquet")
    schema = infer_schema(train, label_column="label")
    report = validate_dataset({"train": train, "test": "s3://bucket/data/test.parquet"},
                              schema=schema, reference=train)
    report.blocking, report.to_json(), report.to_html(), report.summary_line()

Command line: ``trainpipe validate DATA [--schema FILE] [--reference DATA] [--report FILE]``
(see :mod:`trainpipe.data.validation.cli`). Format and checks: docs/validation.md.
"""

from trainpipe.data.validation.api import validate_dataset
from trainpipe.data.validation.checks import Anomaly, check_table
from trainpipe.data.validation.drift import DriftResult, embedding_drift, table_drift
from trainpipe.data.validation.io import (
    DataReadError,
    array_field,
    load_digits_table,
    read_table,
    write_table,
)
from trainpipe.data.validation.report import ValidationReport
from trainpipe.data.validation.schema import (
    ArrayColumn,
    CategoricalColumn,
    DriftThresholds,
    LabelSchema,
    NumericColumn,
    Schema,
    SchemaError,
    TextColumn,
    infer_schema,
    load_schema,
    save_schema,
    schema_from_yaml,
    schema_to_yaml,
)
from trainpipe.data.validation.stats import DatasetStatistics, compute_statistics

__all__ = [
    "Anomaly",
    "ArrayColumn",
    "CategoricalColumn",
    "DataReadError",
    "DatasetStatistics",
    "DriftResult",
    "DriftThresholds",
    "LabelSchema",
    "NumericColumn",
    "Schema",
    "SchemaError",
    "TextColumn",
    "ValidationReport",
    "array_field",
    "check_table",
    "compute_statistics",
    "embedding_drift",
    "infer_schema",
    "load_digits_table",
    "load_schema",
    "read_table",
    "save_schema",
    "schema_from_yaml",
    "schema_to_yaml",
    "table_drift",
    "validate_dataset",
    "write_table",
]
