"""The validation report: a verdict per check, anomalies, statistics and drift, as JSON, a
self-contained HTML page (histograms as embedded PNG pictures) and a short Markdown summary.

    report.blocking          # anomalies that reject the data
    report.summary_line()    # "REJECTED: 2 blocking, 1 warning (out_of_range, leakage) ..."
    report.save("s3://bucket/runs/r1/validate_data")   # report.json, report.html, summary.md
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from trainpipe import __version__
from trainpipe.data.validation.checks import Anomaly
from trainpipe.data.validation.drift import DriftResult
from trainpipe.data.validation.schema import CHECKS, Schema
from trainpipe.data.validation.stats import ColumnStatistics, DatasetStatistics
from trainpipe.storage import open_store

REPORT_VERSION = 1
Verdict = Literal["pass", "warn", "fail", "skipped"]
# The HTML report draws at most this many columns per split; the JSON has all of them.
MAX_PLOTTED_COLUMNS = 60


class CheckVerdict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    verdict: Verdict
    blocking: int
    warnings: int


class ValidationReport(BaseModel):
    """Everything one validation run found; ``blocking`` decides whether data may be used."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    report_version: int = REPORT_VERSION
    trainpipe_version: str = __version__
    created_at: str
    schema_source: Literal["given", "reference", "data", "none"]
    """Where the schema came from: a file/object, inferred from the reference, or from the data."""
    data_schema: Schema | None
    splits: dict[str, DatasetStatistics | None]
    """Statistics per split; None when the split could not be read."""
    reference: DatasetStatistics | None = None
    anomalies: list[Anomaly]
    drift: list[DriftResult]
    evaluated: list[str]
    """Checks that ran (the rest are reported as skipped)."""

    # ---- verdicts ---------------------------------------------------------------------------

    @property
    def blocking(self) -> list[Anomaly]:
        return [a for a in self.anomalies if a.severity == "blocking"]

    @property
    def warnings(self) -> list[Anomaly]:
        return [a for a in self.anomalies if a.severity == "warning"]

    @property
    def passed(self) -> bool:
        return not self.blocking

    def checks(self) -> dict[str, CheckVerdict]:
        out = {}
        for check in CHECKS:
            found = [a for a in self.anomalies if a.check == check]
            blocking = sum(a.severity == "blocking" for a in found)
            warnings = len(found) - blocking
            if blocking:
                verdict: Verdict = "fail"
            elif warnings:
                verdict = "warn"
            elif check in self.evaluated:
                verdict = "pass"
            else:
                verdict = "skipped"
            out[check] = CheckVerdict(verdict=verdict, blocking=blocking, warnings=warnings)
        return out

    def summary_line(self) -> str:
        rows = ", ".join(
            f"{name} {stats.num_rows:,} rows" if stats else f"{name} unreadable"
            for name, stats in self.splits.items()
        )
        drift = f"; {self.drift_summary()}" if self.drift else ""
        if not self.anomalies:
            return f"PASSED: no anomalies ({rows}{drift})"
        failed = sorted({a.check for a in self.blocking})
        warned = sorted({a.check for a in self.warnings})
        verdict = "REJECTED" if self.blocking else "PASSED with warnings"
        blocking = f"{len(self.blocking)} blocking" + (f" ({', '.join(failed)})" if failed else "")
        plural = "s" if len(self.warnings) != 1 else ""
        warning = f"{len(self.warnings)} warning{plural}" + (
            f" ({', '.join(warned)})" if warned else ""
        )
        parts = [blocking, warning]
        return f"{verdict}: {'; '.join(parts)} ({rows}{drift})"

    def drift_summary(self) -> str:
        """Drift counted by feature: a feature drifted when it drifted in any split."""
        features = list(dict.fromkeys(r.column for r in self.drift))
        drifted = list(dict.fromkeys(r.column for r in self.drift if r.drifted))
        unsure = {r.column for r in self.drift if "inconclusive" in r.details} - set(drifted)
        text = f"drift in {len(drifted)} of {len(features)} features"
        if drifted:
            text += f" ({', '.join(drifted[:5])}{', ...' if len(drifted) > 5 else ''})"
        if unsure:
            text += f", {len(unsure)} more too small a sample to tell"
        return text

    # ---- JSON -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["passed"] = self.passed
        data["summary"] = self.summary_line()
        data["checks"] = {k: v.model_dump() for k, v in self.checks().items()}
        return _finite(data)

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    # ---- Markdown ---------------------------------------------------------------------------

    def to_markdown(self) -> str:
        lines = [f"# Data validation: {self.summary_line()}", ""]
        lines += ["| check | verdict | blocking | warnings |", "|---|---|---|---|"]
        for check, v in self.checks().items():
            if v.verdict != "skipped":
                lines.append(f"| {check} | {v.verdict} | {v.blocking} | {v.warnings} |")
        if self.anomalies:
            lines += ["", "## Anomalies", ""]
            lines += [f"- **{a.severity}** {a.message}" for a in self.anomalies]
        noted = [r for r in self.drift if r.drifted or "inconclusive" in r.details]
        if noted:
            lines += ["", "## Drift", ""]
            lines += [f"- {_drift_text(r)}" for r in noted]
        return "\n".join(lines) + "\n"

    # ---- HTML -------------------------------------------------------------------------------

    def to_html(self) -> str:
        return _render_html(self)

    # ---- files ------------------------------------------------------------------------------

    def save(self, uri: str) -> dict[str, str]:
        """Write report.json, report.html and summary.md under ``uri``; returns their URIs."""
        store = open_store(uri)
        outputs = {
            "report.json": self.to_json().encode(),
            "report.html": self.to_html().encode(),
            "summary.md": self.to_markdown().encode(),
        }
        for name, data in outputs.items():
            store.put_bytes(name, data)
        return {name: store.uri_for(name) for name in outputs}


def new_report(**fields: Any) -> ValidationReport:
    return ValidationReport(created_at=datetime.now(UTC).isoformat(timespec="seconds"), **fields)


def _finite(obj: Any) -> Any:
    """JSON has no inf/NaN: write them as strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _drift_text(r: DriftResult) -> str:
    parts = []
    for name, value in r.metrics.items():
        limit = r.thresholds.get(name)
        mark = f" > {limit:.3g}" if name in r.exceeded and limit is not None else ""
        parts.append(f"{name} {value:.3g}{mark}")
    where = f"split={r.split} " if r.split else ""
    unsure = f" (inconclusive: {r.details['inconclusive']})" if "inconclusive" in r.details else ""
    return f"{where}column={r.column}: {', '.join(parts)}{unsure}"


# ---- HTML rendering -------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;font-size:13px}th{background:#f3f3f3}.fail{background:#fdd}.warn{background:#ffe9b3}
.pass{background:#dfd}.skipped{color:#999}.cols{display:flex;flex-wrap:wrap;gap:12px}
.col{border:1px solid #ddd;padding:6px;width:360px;font-size:12px}h1{font-size:20px}
.verdict{font-size:18px;padding:6px 10px;display:inline-block}
"""


def _render_html(report: ValidationReport) -> str:
    esc = html.escape
    verdict_class = "fail" if not report.passed else "warn" if report.anomalies else "pass"
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>trainpipe data validation"
        f"</title><style>{_CSS}</style></head><body>",
        "<h1>Data validation</h1>",
        f"<div class='verdict {verdict_class}'>{esc(report.summary_line())}</div>",
        f"<p>Schema: {esc(report.schema_source)}; created {esc(report.created_at)}; "
        f"trainpipe {esc(report.trainpipe_version)}</p>",
        "<h2>Checks</h2><table><tr><th>check</th><th>verdict</th><th>blocking</th>"
        "<th>warnings</th></tr>",
    ]
    for check, v in report.checks().items():
        out.append(
            f"<tr class='{v.verdict}'><td>{check}</td><td>{v.verdict}</td>"
            f"<td>{v.blocking}</td><td>{v.warnings}</td></tr>"
        )
    out.append("</table>")
    if report.anomalies:
        out.append("<h2>Anomalies</h2><table><tr><th>severity</th><th>message</th></tr>")
        for a in report.anomalies:
            cls = "fail" if a.severity == "blocking" else "warn"
            out.append(f"<tr class='{cls}'><td>{a.severity}</td><td>{esc(a.message)}</td></tr>")
        out.append("</table>")
    if report.drift:
        out.append(
            "<h2>Drift against the reference</h2><table><tr><th>split</th><th>column</th>"
            "<th>kind</th><th>metrics (threshold)</th><th>n ref / cur</th></tr>"
        )
        for r in report.drift:
            metrics = ", ".join(
                f"{k} {v:.3g}" + (f" ({r.thresholds[k]:.3g})" if r.thresholds.get(k) else "")
                for k, v in r.metrics.items()
            )
            if "inconclusive" in r.details:
                metrics += f"; inconclusive: {r.details['inconclusive']}"
            out.append(
                f"<tr class='{'warn' if r.drifted else 'pass'}'><td>{esc(str(r.split))}</td>"
                f"<td>{esc(r.column)}</td><td>{r.kind}</td><td>{esc(metrics)}</td>"
                f"<td>{r.n_reference:,} / {r.n_current:,}</td></tr>"
            )
        out.append("</table>")
    out.append("<h2>Columns</h2>")
    names: list[str] = []
    for stats in [report.reference, *report.splits.values()]:
        if stats is not None:
            names += [n for n in stats.columns if n not in names]
    series = {name: s for name, s in report.splits.items() if s is not None}
    if report.reference is not None:
        series = {"reference": report.reference} | series
    out.append("<div class='cols'>")
    for name in names[:MAX_PLOTTED_COLUMNS]:
        per_split = {k: s.columns[name] for k, s in series.items() if name in s.columns}
        out.append(_column_html(name, per_split))
    out.append("</div>")
    if len(names) > MAX_PLOTTED_COLUMNS:
        out.append(f"<p>{len(names) - MAX_PLOTTED_COLUMNS} more columns are in report.json.</p>")
    out.append("</body></html>")
    return "\n".join(out)


def _column_html(name: str, per_split: dict[str, ColumnStatistics]) -> str:
    esc = html.escape
    first = next(iter(per_split.values()))
    rows = []
    for split, s in per_split.items():
        facts = [f"n={s.count:,}", f"missing={s.missing:,}"]
        if s.nan or s.inf:
            facts.append(f"nan={s.nan:,} inf={s.inf:,}")
        if s.min is not None:
            facts.append(f"min={s.min:.4g} max={s.max:.4g} mean={s.mean:.4g} std={s.std:.4g}")
        if s.distinct is not None:
            facts.append(f"distinct={s.distinct:,}")
        if s.length is not None:
            facts.append(f"length {s.length.min}..{s.length.max} (mean {s.length.mean:.1f})")
        if s.shape is not None:
            facts.append(f"shape={s.shape}")
        rows.append(f"<div><b>{esc(split)}</b>: {esc(', '.join(facts))}</div>")
    picture = _plot(name, per_split)
    img = (
        f"<img alt='histogram of {esc(name)}' src='data:image/png;base64,{picture}'>"
        if picture
        else ""
    )
    return (
        f"<div class='col'><h3>{esc(name)} <small>{esc(first.kind)} {esc(first.type)}</small>"
        f"</h3>{img}{''.join(rows)}</div>"
    )


def _plot(name: str, per_split: dict[str, ColumnStatistics]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    first = next(iter(per_split.values()))
    images = {
        k: s.mean_example for k, s in per_split.items() if s.mean_example and s.shape is not None
    }
    show_images = bool(images) and len(first.shape or []) >= 2
    panels = 1 + (len(images) if show_images else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.6, 2.2), dpi=80, squeeze=False)
    ax = axes[0][0]
    drew = False
    # Categories on numeric positions: string x values make matplotlib log "Using categorical
    # units" for every column whose values look like numbers.
    categories = list(dict.fromkeys(str(v) for s in per_split.values() for v, _ in s.top_k or []))
    for split, s in per_split.items():
        if s.histogram is not None and sum(s.histogram.counts):
            edges = np.asarray(s.histogram.edges)
            counts = np.asarray(s.histogram.counts, dtype=float)
            ax.stairs(counts / counts.sum(), edges, label=split)
            drew = True
        elif s.top_k:
            positions = [categories.index(str(v)) for v, _ in s.top_k]
            total = sum(c for _, c in s.top_k) or 1
            ax.plot(positions, [c / total for _, c in s.top_k], marker="o", label=split)
            ax.set_xticks(range(len(categories)), categories)
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
            drew = True
    if not drew:
        plt.close(fig)
        return None
    ax.set_title("text length" if first.kind == "text" else "share", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)
    if show_images:
        for i, (split, mean) in enumerate(images.items(), start=1):
            image = _first_channel(np.asarray(mean).reshape(first.shape or [-1]))
            axes[0][i].imshow(image, cmap="gray_r")
            axes[0][i].set_title(f"mean {split}", fontsize=7)
            axes[0][i].axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _first_channel(array: Any) -> Any:
    """A 2-D picture from a CHW or HWC mean image (first channel), or a higher-rank array."""
    while array.ndim > 2:
        array = array[0] if array.shape[0] <= 4 or array.shape[-1] > 4 else array[..., 0]
    return array
