"""The evaluation report: one self-contained HTML page (KFP's UI renders it as an HTML artifact).

    html = evaluation_html(metrics, comparison, decision.to_dict(), histories)

Sections: the gate's decision with every rule, challenger against champion with bootstrap
intervals, pretraining (did it learn, and did it help: fine-tuned from the pretrained encoder
against from scratch), learning curves (fine-tuning and, when it ran, pretraining), confusion
matrix, reliability diagram, per-class metrics and slices (with why a slice is not guarded).
"""

from __future__ import annotations

import html

from trainpipe.evaluate.gate import METRIC_LABELS
from trainpipe.evaluate.plots import (
    confusion_matrix_png,
    img_tag,
    learning_curves_png,
    loss_curves_png,
    predicted_vs_actual_png,
    reliability_png,
)

HEADLINE = (
    "accuracy",
    "macro_f1",
    "macro_precision",
    "macro_recall",
    "top_k_accuracy",
    "log_loss",
    "ece",
)

_STYLE = """body{font-family:sans-serif;margin:2em;max-width:70em}
td,th{padding:2px 10px;text-align:right}th{background:#eee}td:first-child{text-align:left}
.pass{color:#176b2c}.fail{color:#b00020;font-weight:bold}
.banner{font-size:1.4em;padding:.4em .8em;display:inline-block;border-radius:4px}
.promote{background:#d9f2de}.reject{background:#fbd9dd}"""


def _esc(value: object) -> str:
    return html.escape(str(value))


def _interval(interval: dict | None, signed: bool = False) -> str:
    if not interval:
        return ""
    fmt = "{:+.4f}" if signed else "{:.4f}"
    return f" <small>[{fmt.format(interval['lower'])}, {fmt.format(interval['upper'])}]</small>"


def _decision_section(decision: dict) -> str:
    verdict = decision["decision"]
    rows = "".join(
        f"<tr><td>{_esc(r['rule'])}</td>"
        f"<td class='{'pass' if r['passed'] else 'fail'}'>{'pass' if r['passed'] else 'FAIL'}</td>"
        f"<td style='text-align:left'>{_esc(r['detail'])}</td></tr>"
        for r in decision["rules"]
    )
    return (
        f"<h2>Gate</h2><p class='banner {verdict}'>{verdict.upper()}</p>"
        f"<p>{_esc(decision['reason'])}</p>"
        f"<table><tr><th>rule</th><th>result</th><th>detail</th></tr>{rows}</table>"
    )


def shown_headline(metrics: dict) -> tuple[str, ...]:
    """The headline metrics worth showing: top-k accuracy is always 1.0 when k is at least the
    number of classes (k=2 on a binary task), so it is left out then."""
    trivial_top_k = metrics.get("top_k", 0) >= len(metrics.get("labels", []))
    return tuple(name for name in HEADLINE if not (name == "top_k_accuracy" and trivial_top_k))


def _comparison_section(metrics: dict, comparison: dict) -> str:
    champion = comparison.get("champion")
    intervals = comparison.get("intervals", {})
    comparable = bool(champion and champion["comparable"])
    if champion is None:
        note = "No champion in the registry yet: this is the first model."
    elif not comparable:
        note = f"Champion version {champion['version']} not comparable: {champion['why_not']}"
    else:
        note = (
            f"Champion: version {champion['version']} (ONNX Runtime, sha256 "
            f"{champion['model_sha256'][:12]}…), scored on the same {metrics['num_examples']} "
            "test examples."
        )
    confidence = comparison.get("confidence")
    ci_note = (
        f"Brackets: {round(confidence * 100)}% paired bootstrap intervals "
        f"({comparison.get('bootstrap_resamples')} resamples)."
        if intervals
        else ""
    )
    header = "<tr><th>metric</th><th>challenger</th>"
    if comparable:
        header += "<th>champion</th><th>difference</th>"
    rows = ""
    for name in shown_headline(metrics):
        ci = intervals.get(name, {})
        label = METRIC_LABELS[name] + (
            f" (k={metrics['top_k']})" if name == "top_k_accuracy" else ""
        )
        row = f"<tr><td>{label}</td><td>{metrics[name]:.4f}{_interval(ci.get('challenger'))}</td>"
        if comparable:
            theirs = champion["metrics"][name]
            row += (
                f"<td>{theirs:.4f}{_interval(ci.get('champion'))}</td>"
                f"<td>{metrics[name] - theirs:+.4f}{_interval(ci.get('difference'), True)}</td>"
            )
        rows += row + "</tr>"
    return (
        f"<h2>Challenger and champion</h2><p>{_esc(note)} {_esc(ci_note)}</p>"
        f"<table>{header}</tr>{rows}</table>"
    )


def _slices_section(metrics: dict, comparison: dict, min_examples: int) -> str:
    champion = comparison.get("champion")
    theirs = champion["slices"] if champion and champion["comparable"] else {}
    rows = ""
    for name, ours in metrics["slices"].items():
        other = theirs.get(name)
        guarded = _guarded(ours["n"], other, champion, min_examples)
        cells = f"<td>{other['accuracy']:.4f}</td>" if other else "<td>-</td>"
        cells += f"<td>{ours['accuracy'] - other['accuracy']:+.4f}</td>" if other else "<td>-</td>"
        rows += (
            f"<tr><td>{_esc(name)}</td><td>{ours['n']}</td><td>{ours['accuracy']:.4f}</td>"
            f"{cells}<td>{guarded}</td></tr>"
        )
    return (
        "<h2>Slices</h2><p>Accuracy per slice of the test split (on a class slice: that class's "
        "recall). A guarded slice may not get worse than the champion's by more than the gate "
        "allows.</p><table><tr><th>slice</th><th>examples</th><th>challenger</th>"
        f"<th>champion</th><th>difference</th><th>guarded</th></tr>{rows}</table>"
    )


def _guarded(n: int, champion_slice: dict | None, champion: dict | None, min_n: int) -> str:
    if champion is None:
        return "no: no champion yet"
    if not champion["comparable"]:
        return "no: champion not comparable"
    if champion_slice is None:
        return "no: the champion has no such slice"
    if n < min_n:
        return f"no: fewer than {min_n} examples"
    return "yes"


def _pretraining_section(pretraining: dict | None) -> str:
    """Whether pretraining learned (its curve diagnosis) and whether it helped fine-tuning."""
    if not pretraining:
        return ""
    parts = ["<h2>Pretraining</h2>"]
    diagnosis = pretraining.get("diagnosis")
    if diagnosis:
        evidence = diagnosis["evidence"]
        first, last = evidence["chance_loss"], evidence["final_train_loss"]
        drop = (first - last) / first if first else 0.0
        curve = f"its training loss went from {first:.4f} to {last:.4f} ({drop:.1%} lower)"
        if diagnosis["state"] == "healthy":
            parts.append(f"<p class='pass'>Pretraining learned: {_esc(curve)}.</p>")
        else:
            parts.append(
                f"<p class='fail'>Pretraining failed ({_esc(diagnosis['state'])}): "
                f"{_esc(curve)}; {_esc(diagnosis['advice'])}. Its encoder gives fine-tuning "
                "little to start from.</p>"
            )
    if "scratch_val_score" in pretraining:
        ours, scratch = pretraining["pretrained_val_score"], pretraining["scratch_val_score"]
        score = pretraining.get("score", "accuracy")
        parts.append(
            f"<p>With {pretraining['labelled_examples']} labelled examples, fine-tuning from "
            f"the pretrained encoder reached validation {score} <b>{ours:.4f}</b> against "
            f"<b>{scratch:.4f}</b> from scratch ({ours - scratch:+.4f}): the "
            f"<b>{_esc(pretraining['initialization'])}</b> model ships (chosen on validation; "
            f"test {score} {pretraining['pretrained_test_score']:.4f} vs "
            f"{pretraining['scratch_test_score']:.4f}, reported only).</p>"
        )
    return "".join(parts) if len(parts) > 1 else ""


def _curves_section(histories: dict[str, dict]) -> str:
    parts = []
    finetune = histories.get("fine-tuning")
    if finetune and finetune.get("history"):
        png = learning_curves_png(finetune["history"], "fine-tuning", finetune["metric_name"])
        parts.append(img_tag(png, "learning curves"))
    pretrain = histories.get("pretraining")
    if pretrain and pretrain.get("history"):
        parts.append(img_tag(loss_curves_png(pretrain["history"], "pretraining"), "pretraining"))
    return "<h2>Learning curves</h2>" + ("".join(parts) or "<p>No training history.</p>")


def _baselines_section(metrics: dict) -> str:
    baselines = metrics.get("baselines")
    if not baselines:
        return ""
    names = ("r2", "rmse", "mae") if metrics.get("task") == "regression" else HEADLINE[:2]
    head = "".join(f"<th>{_esc(METRIC_LABELS.get(n, n))}</th>" for n in names)
    blend = metrics.get("blend")
    shipped = "trainpipe model"
    if blend and (blend["linear_weight"] > 0 or blend.get("trees_weight", 0) > 0):
        shipped += (
            f" (network blended with the linear model at weight {blend['linear_weight']:.2f}"
            + (
                f" and the trees at weight {blend['trees_weight']:.2f}"
                if blend.get("trees_weight")
                else ""
            )
            + ")"
        )
    rows = [(shipped, metrics)] + [
        (baselines[key]["model"], baselines[key]) for key in ("linear", "hgb")
    ]
    body = "".join(
        f"<tr><td>{_esc(label)}</td>" + "".join(f"<td>{m[n]:.4f}</td>" for n in names) + "</tr>"
        for label, m in rows
    )
    return (
        "<h2>Baselines on the same split</h2><p>Fitted on the same labelled training rows and "
        f"scored on the same {metrics['num_examples']} test examples.</p>"
        f"<table><tr><th>model</th>{head}</tr>{body}</table>"
        + _blend_paragraph(blend)
        + _diagnosis_paragraph(metrics)
    )


def _blend_paragraph(blend: dict | None) -> str:
    if not blend:
        return ""
    return (
        f"<p>Blend: the linear model's weight {blend['linear_weight']:.2f}"
        + (
            f" and the gradient-boosted trees' weight {blend['trees_weight']:.2f}" + " were"
            if "trees_weight" in blend
            else " was"
        )
        + " chosen on "
        + f"{_esc(blend['chosen_by'])} (lowest {_esc(blend['loss'])}); the test split was not "
        "used.</p>"
    )


def _language_model_section(metrics: dict) -> str:
    """The language model the text classifier was fine-tuned from (language-model DAG)."""
    lm = metrics.get("language_model")
    if not lm:
        return ""
    return (
        f"<h2>Language model</h2><p>Pretrained {_esc(lm['kind'])} LM, {lm['num_params']:,} "
        f"parameters: validation perplexity {lm['val_perplexity']:.2f}, test perplexity "
        f"{lm['test_perplexity']:.2f}.</p>"
    )


def _diagnosis_paragraph(metrics: dict) -> str:
    diagnosis = metrics.get("diagnosis")
    return f"<p>Learning curves: {_esc(diagnosis['line'])}</p>" if diagnosis else ""


def regression_html(
    metrics: dict, comparison: dict, decision: dict, histories: dict[str, dict]
) -> str:
    picture = img_tag(
        predicted_vs_actual_png(metrics["actual"], metrics["predicted"]), "predicted vs actual"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>trainpipe evaluation</title>
<style>{_STYLE}</style>
</head><body>
<h1>Evaluation on the test split (regression)</h1>
<p>R^2 <b>{metrics["r2"]:.4f}</b> &middot; RMSE <b>{metrics["rmse"]:.4g}</b>
&middot; MAE {metrics["mae"]:.4g} &middot; {metrics["num_examples"]} examples</p>
{_decision_section(decision)}
{_baselines_section(metrics)}
<h2>Predictions</h2>{picture}
{_curves_section(histories)}
</body></html>
"""


def evaluation_html(
    metrics: dict,
    comparison: dict,
    decision: dict,
    histories: dict[str, dict],
    *,
    min_slice_examples: int = 20,
    pretraining: dict | None = None,
) -> str:
    """``pretraining``: the pretrain stage's ``diagnosis`` and the fine-tune stage's
    pretrained-vs-scratch comparison (``pretraining_payoff.json``'s
    validation and test scores and which initialization shipped), when they exist."""
    if metrics.get("task") == "regression":
        return regression_html(metrics, comparison, decision, histories)
    per_class = "".join(
        f"<tr><td>{_esc(name)}</td><td>{m['precision']:.3f}</td><td>{m['recall']:.3f}</td>"
        f"<td>{m['f1']:.3f}</td><td>{m['support']}</td></tr>"
        for name, m in metrics["per_class"].items()
    )
    confusion = img_tag(
        confusion_matrix_png(metrics["confusion_matrix"], metrics["labels"]), "confusion matrix"
    )
    reliability = img_tag(reliability_png(metrics["reliability"]), "reliability diagram")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>trainpipe evaluation</title>
<style>{_STYLE}</style>
</head><body>
<h1>Evaluation on the test split</h1>
<p>accuracy <b>{metrics["accuracy"]:.4f}</b> &middot; macro-F1 <b>{metrics["macro_f1"]:.4f}</b>
&middot; log loss {metrics["log_loss"]:.4f} &middot; ECE {metrics["ece"]:.4f}
&middot; {metrics["num_examples"]} examples</p>
{_decision_section(decision)}
{_comparison_section(metrics, comparison)}
{_baselines_section(metrics)}
{_language_model_section(metrics)}
{_pretraining_section(pretraining)}
{_curves_section(histories)}
<h2>Confusion matrix</h2>{confusion}
<h2>Calibration</h2><p>Expected calibration error {metrics["ece"]:.4f}.</p>{reliability}
<h2>Per class</h2>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{per_class}</table>
{_slices_section(metrics, comparison, min_slice_examples)}
</body></html>
"""
