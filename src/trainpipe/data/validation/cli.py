"""``trainpipe validate``: check data before anything trains on it.

    trainpipe validate data/train.parquet --schema schema.yaml
    trainpipe validate train=s3://b/train.parquet test=s3://b/test.parquet \\
        --reference s3://b/accepted/train.parquet --label-column label --report report.html
    trainpipe validate digits --label-column label --write-schema schema.yaml

DATA is a file or folder URI (Parquet, CSV, JSONL, .npz with x and y; file://, s3:// or a path)
or ``digits``; name splits as SPLIT=URI to check leakage between them. One DATA that is a prefix
of Parquet shards (``shards.json`` or ``*.parquet``) is validated shard by shard with bounded
memory. Without --schema, the schema is inferred from --reference, or else from the first DATA
(then only data-quality problems show).

Exit status: 0 clean (warnings allowed), 1 blocking anomalies (one line each on stdout),
2 usage errors (bad arguments, unreadable schema or reference).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import PurePosixPath

from trainpipe.cli_help import example_epilog
from trainpipe.data.shards import is_shard_prefix
from trainpipe.data.validation.api import validate_dataset
from trainpipe.data.validation.io import DataReadError, read_table
from trainpipe.data.validation.report import ValidationReport
from trainpipe.data.validation.schema import SchemaError, load_schema, save_schema
from trainpipe.errors import DataError
from trainpipe.storage import StorageError, open_store, split_uri

EXIT_CLEAN, EXIT_ANOMALIES, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainpipe validate",
        description="Validate datasets: schema, anomalies, drift. Exit 0 clean, 1 blocking "
        "anomalies, 2 usage error.",
        **example_epilog(
            "trainpipe validate train=data/train.parquet test=data/test.parquet "
            "--reference data/last_month.parquet --label-column label --report report.html"
        ),
    )
    parser.add_argument(
        "data",
        nargs="+",
        metavar="DATA",
        help="[SPLIT=]URI of a Parquet/CSV/JSONL/.npz file or folder, or 'digits'",
    )
    parser.add_argument(
        "--schema",
        metavar="FILE",
        help="schema YAML, a path or URI (default: inferred from --reference, else from the "
        "first DATA)",
    )
    parser.add_argument(
        "--reference",
        metavar="DATA",
        help="reference data to check drift against (default: none, no drift checks)",
    )
    parser.add_argument(
        "--report",
        metavar="FILE",
        action="append",
        default=[],
        help="write the report: .html page, .md summary, otherwise JSON (repeatable; "
        "default: none, the summary line only)",
    )
    parser.add_argument(
        "--label-column",
        metavar="NAME",
        help="the label column, checked for leakage and class balance (default: none)",
    )
    parser.add_argument(
        "--write-schema",
        metavar="FILE",
        help="write the schema used as YAML, to edit and pass as --schema (default: not written)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="print only blocking anomalies (default: off, also warnings and the summary)",
    )
    return parser


def parse_splits(items: list[str]) -> dict[str, str]:
    """``train=uri`` pairs, or bare URIs named after their file stem."""
    splits: dict[str, str] = {}
    for item in items:
        name, sep, uri = item.partition("=")
        if not sep or "/" in name or ":" in name:
            uri = item
            name = "data" if len(items) == 1 else PurePosixPath(uri.rstrip("/")).name.split(".")[0]
        if not uri or not name:
            raise ValueError(f"DATA {item!r} is empty; give SPLIT=URI or a URI")
        if name in splits:
            raise ValueError(f"split {name!r} is given twice; name them, e.g. train=URI test=URI")
        splits[name] = uri
    return splits


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse prints its own usage line
        return EXIT_CLEAN if exc.code in (0, None) else EXIT_USAGE
    try:
        splits = parse_splits(args.data)
        schema = load_schema(args.schema) if args.schema else None
        sharded_reference = args.reference and is_shard_prefix(args.reference)
        reference = read_table(args.reference) if args.reference and not sharded_reference else None
    except (ValueError, SchemaError, DataReadError) as exc:
        print(f"error: {_reference_hint(exc, args)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if len(splits) == 1 and is_shard_prefix(next(iter(splits.values()))):
            report = _validate_shard_prefix(splits, schema, args)
        else:
            report = validate_dataset(
                splits, schema=schema, reference=reference, label_column=args.label_column
            )
    except SchemaError as exc:  # e.g. --label-column names no column
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DataError as exc:  # a missing or unreadable shard
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ANOMALIES
    try:
        if args.write_schema and report.data_schema is not None:
            save_schema(report.data_schema, args.write_schema)
        for target in args.report:
            _write_report(report, target)
    except StorageError as exc:
        print(f"error: cannot write output: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for anomaly in report.blocking:
        print(f"BLOCKING {anomaly.message}")
    if not args.quiet:
        for anomaly in report.warnings:
            print(f"warning {anomaly.message}")
        print(report.summary_line())
    return EXIT_ANOMALIES if report.blocking else EXIT_CLEAN


def _validate_shard_prefix(splits: dict[str, str], schema, args) -> ValidationReport:
    """A prefix of Parquet shards, validated shard by shard (docs/data-at-scale.md)."""
    from trainpipe.data.shards import discover_shards
    from trainpipe.data.validation.streaming import validate_shards

    ((name, uri),) = splits.items()
    shards = discover_shards(uri)
    reference = discover_shards(args.reference) if args.reference else None
    report, _ = validate_shards(
        shards, {name: shards.shards}, schema, label_column=args.label_column, reference=reference
    )
    return report


def _reference_hint(exc: Exception, args: argparse.Namespace) -> str:
    if isinstance(exc, DataReadError) and args.reference:
        return f"--reference {exc}"
    return str(exc)


def _write_report(report: ValidationReport, target: str) -> None:
    if target.endswith((".html", ".htm")):
        data = report.to_html()
    elif target.endswith(".md"):
        data = report.to_markdown()
    else:
        data = report.to_json()
    base, name = split_uri(target)
    open_store(base).put_bytes(name, data.encode())


if __name__ == "__main__":
    sys.exit(main())
