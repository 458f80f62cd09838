"""The tuning report: one self-contained HTML page (a KFP HTML artifact).

Sections: the best trial against the untuned default, the best-so-far curve, every trial's
per-epoch curve (where pruning stopped it), parameter
importance (fANOVA), one scatter per parameter (metric against value) and every trial with its
parameters, metric, epochs run and state (complete, pruned, failed).
"""

from __future__ import annotations

import html
import math

from trainpipe.evaluate.plots import _png, img_tag, plt

_STYLE = """body{font-family:sans-serif;margin:2em;max-width:80em}
td,th{padding:2px 10px;text-align:right}th{background:#eee}td:first-child{text-align:left}
.best{background:#d9f2de}.pruned{color:#777}.fail{color:#b00020}"""


def best_so_far(trials: list[dict], maximize: bool) -> list[tuple[int, float]]:
    """(trial number, best value up to it) over completed trials, in trial order."""
    points, best = [], None
    for t in sorted(trials, key=lambda t: t["number"]):
        if t["value"] is None:
            continue
        if best is None or (t["value"] > best if maximize else t["value"] < best):
            best = t["value"]
        points.append((t["number"], best))
    return points


def _best_so_far_png(trials: list[dict], maximize: bool, metric: str) -> bytes:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    done = [t for t in trials if t["value"] is not None]
    ax.scatter([t["number"] for t in done], [t["value"] for t in done], s=12, label="trial")
    curve = best_so_far(trials, maximize)
    ax.step(
        [p[0] for p in curve],
        [p[1] for p in curve],
        where="post",
        color="tab:red",
        label="best so far",
    )
    ax.set(xlabel="trial", ylabel=metric, title="Best so far")
    ax.legend(fontsize=7)
    return _png(fig)


def _curves_png(trials: list[dict], metric: str) -> bytes:
    """Every trial's per-epoch metric: where the pruner cut the bad ones off."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for t in trials:
        points = sorted((int(k), v) for k, v in t["intermediate"].items())
        if not points:
            continue
        style = {"pruned": ("tab:grey", 0.6), "fail": ("tab:red", 0.8)}.get(t["state"])
        color, alpha = style or ("tab:blue", 0.9)
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            color=color,
            alpha=alpha,
            linewidth=1,
            marker="." if len(points) == 1 else None,
        )
    ax.set(xlabel="epoch", ylabel=metric, title="Trials per epoch (grey: pruned)")
    return _png(fig)


def _importance_png(importance: dict[str, float]) -> bytes:
    names = list(importance)[::-1]
    fig, ax = plt.subplots(figsize=(5, 0.4 * len(names) + 1.2))
    ax.barh(names, [importance[n] for n in names], color="tab:blue")
    ax.set(xlabel="importance (fANOVA)", title="Parameter importance")
    return _png(fig)


def _scatter_png(trials: list[dict], keys: list[str], metric: str) -> bytes:
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    done = [t for t in trials if t["value"] is not None]
    for ax, key in zip(axes.flat, keys, strict=False):
        values = [t["params"].get(key) for t in done]
        ax.scatter(
            [str(v) if isinstance(v, str | bool) else v for v in values],
            [t["value"] for t in done],
            s=14,
        )
        if key.endswith(("lr", "weight_decay")) and all(
            isinstance(v, float) and v > 0 for v in values
        ):
            ax.set_xscale("log")
        ax.set(xlabel=key, ylabel=metric)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle("Metric per parameter (completed trials)")
    fig.tight_layout()
    return _png(fig)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def tuning_html(result: dict, trials: list[dict], importance: dict[str, float]) -> str:
    metric, maximize = result["metric"], result["direction"] == "maximize"
    keys = list(result["params"])
    parts = [
        f"<html><head><meta charset='utf-8'><style>{_STYLE}</style></head><body>",
        "<h1>Hyperparameter search</h1>",
    ]
    baseline = result.get("baseline_value")
    parts.append(
        f"<p>Best trial <b>#{result['trial']}</b>: {metric} <b>{result['value']:.4f}</b>"
        + (
            f" vs untuned default {baseline:.4f} (gain {result['gain']:+.4f})"
            if baseline is not None
            else ""
        )
        + f". Strategy {html.escape(result['strategy'])}, {len(trials)} trials, "
        f"{result['epochs_run']} epochs trained of {result['epochs_budget']} without pruning.</p>"
    )
    parts.append("<table><tr><th>parameter</th><th>best</th><th>default</th></tr>")
    for key in keys:
        parts.append(
            f"<tr><td>{html.escape(key)}</td><td>{_fmt(result['params'][key])}</td>"
            f"<td>{_fmt(result['default_params'].get(key))}</td></tr>"
        )
    parts.append("</table>")
    if any(t["value"] is not None for t in trials):
        parts.append(
            "<h2>Best so far</h2>"
            + img_tag(_best_so_far_png(trials, maximize, metric), "best so far")
        )
        parts.append(
            "<h2>Metric per parameter</h2>"
            + img_tag(_scatter_png(trials, keys, metric), "scatter per parameter")
        )
    if importance:
        parts.append(
            "<h2>Parameter importance</h2>"
            + img_tag(_importance_png(importance), "parameter importance")
        )
    parts.append(
        "<h2>Trials</h2><table><tr><th>#</th><th>state</th>"
        f"<th>{html.escape(metric)}</th><th>epochs</th><th>wall s</th>"
        + "".join(f"<th>{html.escape(k)}</th>" for k in keys)
        + "</tr>"
    )
    for t in sorted(trials, key=lambda t: t["number"]):
        css = (
            "best"
            if t["number"] == result["trial"]
            else {"pruned": "pruned", "fail": "fail"}.get(t["state"], "")
        )
        label = t["state"] + (" (default)" if t["baseline"] else "")
        if t.get("failure"):
            label += f": {html.escape(t['failure'])}"
        value = "-" if t["value"] is None else f"{t['value']:.4f}"
        wall = "-" if t["wall_s"] is None else f"{t['wall_s']:.1f}"
        parts.append(
            f"<tr class='{css}'><td>{t['number']}</td><td>{label}</td><td>{value}</td>"
            f"<td>{t['epochs']}</td><td>{wall}</td>"
            + "".join(f"<td>{_fmt(t['params'].get(k, '-'))}</td>" for k in keys)
            + "</tr>"
        )
    parts.append("</table></body></html>")
    return "\n".join(parts)
