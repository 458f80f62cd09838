"""The evaluation report: one self-contained HTML page (KFP's UI renders it as an HTML artifact)."""

from __future__ import annotations

import html

from trainpipe.evaluate.plots import confusion_matrix_png, img_tag, learning_curves_png


def evaluation_html(metrics: dict, history: dict, gate_note: str = "") -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{m['precision']:.3f}</td><td>{m['recall']:.3f}</td>"
        f"<td>{m['f1']:.3f}</td><td>{m['support']}</td></tr>"
        for name, m in metrics["per_class"].items()
    )
    curves = img_tag(
        learning_curves_png(history["history"], "fine-tuning", history["metric_name"]),
        "learning curves",
    )
    confusion = img_tag(
        confusion_matrix_png(metrics["confusion_matrix"], metrics["labels"]), "confusion matrix"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>trainpipe evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:right}}</style>
</head><body>
<h1>Evaluation on the test split</h1>
<p>accuracy <b>{metrics["accuracy"]:.4f}</b> &middot; macro-F1 <b>{metrics["macro_f1"]:.4f}</b>
&middot; log loss {metrics["log_loss"]:.4f} &middot; {metrics["num_examples"]} examples</p>
<p>{html.escape(gate_note)}</p>
<h2>Learning curves</h2>{curves}
<h2>Confusion matrix</h2>{confusion}
<h2>Per class</h2>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{rows}</table>
</body></html>
"""
