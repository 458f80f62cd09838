"""validate_data: read the data, validate it, split it, and store the splits and the report.

Blocking anomalies stop the pipeline here with one line naming the column, the check and the
numbers; the full report is stored beside the run either way, so nothing downstream ever runs
on rejected data and the reason is never lost.
"""

from __future__ import annotations

from trainpipe.data.datasets import encode, read_source, split_tables
from trainpipe.data.sharded import (
    is_sharded,
    open_sharded,
    record_summary,
    sharded_record,
    table_plan,
)
from trainpipe.data.shards import discover_shards
from trainpipe.data.stored import write_validated
from trainpipe.data.validation import SchemaError, load_schema, schema_to_yaml, validate_dataset
from trainpipe.data.validation.streaming import validate_shards
from trainpipe.errors import ConfigError, DataError
from trainpipe.stages.context import make_context


def _write_report(writer, report) -> None:
    writer.put_text("report.json", report.to_json())
    writer.put_text("report.html", report.to_html())
    writer.put_text("summary.md", report.to_markdown())


def run_validate(
    config_json: str, run_id: str, job_id: str = "", html_report=None
) -> tuple[str, str]:
    """Returns (run id, data URI). The run id is the one given, else the KFP job's id, so a
    scheduled run on a cluster gets a fresh folder without anyone choosing a name."""
    run_id = run_id or job_id
    if not run_id:
        raise DataError("validate_data needs a run_id or the KFP job id; pass run_id")
    ctx = make_context(config_json, run_id)
    cfg = ctx.cfg.data
    endpoint_url = ctx.cfg.storage.endpoint_url
    try:
        schema = load_schema(cfg.schema_uri, endpoint_url=endpoint_url) if cfg.schema_uri else None
    except SchemaError as exc:
        raise ConfigError(f"config error: data.schema_uri: {exc}") from None
    if is_sharded(cfg, endpoint_url):
        return run_id, _validate_sharded(ctx, schema, html_report)
    raw = read_source(cfg, endpoint_url=endpoint_url)
    dataset = encode(raw, cfg)
    try:
        report = validate_dataset(
            split_tables(raw, dataset),
            schema,
            reference=cfg.reference_uri,
            # A regression target is validated as a numeric column, not as a label set.
            label_column=None if dataset.regression else raw.label_column,
            endpoint_url=endpoint_url,
        )
    except SchemaError as exc:  # a column type the data checks cannot describe
        raise DataError(f"data error: {cfg.source}: {exc}") from None
    writer = _accepted_writer(ctx, report, dataset.source, html_report)
    info = write_validated(writer, dataset, warnings=[a.message for a in report.warnings])
    uri = writer.commit(
        summary={
            "examples": sum(info["split_sizes"].values()),
            **info["split_sizes"],
            "verdict": "passed",
            "warnings": len(report.warnings),
        }
    )
    return run_id, uri


def _accepted_writer(ctx, report, source: str, html_report):
    """Report the verdict; raise (after storing the rejected report) when it blocks, else a
    writer holding the report and the schema, for the caller to add the data and commit."""
    if html_report is not None:
        with open(html_report.path, "w") as f:
            f.write(report.to_html())
    print(f"[validate_data] {report.summary_line()}", flush=True)
    if report.blocking:
        rejected = ctx.writer("validate_data_rejected", inputs={"data": source})
        _write_report(rejected, report)
        uri = rejected.commit(summary={"verdict": "rejected", "blocking": len(report.blocking)})
        first = report.blocking[0].message
        more = f" (+{len(report.blocking) - 1} more)" if len(report.blocking) > 1 else ""
        raise DataError(f"data rejected: {first}{more}; full report: {uri}/report.html")
    writer = ctx.writer("validate_data", inputs={"data": source})
    _write_report(writer, report)
    if report.data_schema is not None:
        # Stored with the run: a user can copy it, tighten it and pass it as data.schema_uri.
        writer.put_text("schema.yaml", schema_to_yaml(report.data_schema))
    return writer


def _validate_sharded(ctx, schema, html_report) -> str:
    """Validate a sharded source shard by shard and record its split shards (no arrays): the
    training stages stream them."""
    cfg, endpoint = ctx.cfg.data, ctx.cfg.storage.endpoint_url
    shard_set, splits = open_sharded(cfg, endpoint)
    reference = None
    if cfg.reference_uri:
        reference = discover_shards(
            cfg.reference_uri, endpoint_url=endpoint, cache=cfg.streaming.cache()
        )
    plan = table_plan(shard_set, splits["train"], cfg)
    regression = plan is not None and plan.task == "regression"
    report, summaries = validate_shards(
        shard_set,
        splits,
        schema,
        # A regression target is validated as a numeric column, not as a label set.
        label_column=None if regression else cfg.label_column,
        reference=reference,
        workers=max(1, cfg.streaming.loader_workers),
    )
    writer = _accepted_writer(ctx, report, shard_set.uri, html_report)
    labels = [] if regression else sorted({v for s in summaries.values() for v in s.labels})
    target = summaries["train"].columns.get(cfg.label_column) if regression else None
    record = sharded_record(
        shard_set,
        splits,
        cfg,
        labels,
        [int(summaries["train"].labels.get(v, 0)) for v in labels],
        plan,
        # Exact moments of the whole training split where validation kept them.
        (target.mean, target.std or 1.0) if target is not None and target.finite else None,
    )
    record["warnings"] = [a.message for a in report.warnings]
    writer.put_json("dataset.json", record)
    return writer.commit(summary=record_summary(record))
