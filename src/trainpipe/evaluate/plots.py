"""Pictures for reports as PNG bytes: learning curves, confusion matrix, reliability diagram."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # headless: pods and CI have no display
import matplotlib.pyplot as plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def learning_curves_png(history: list[dict], title: str, metric_name: str) -> bytes:
    epochs = [r["epoch"] for r in history]
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    loss_ax.plot(epochs, [r["train_loss"] for r in history], label="train")
    loss_ax.plot(epochs, [r["val_loss"] for r in history], label="validation")
    loss_ax.set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    loss_ax.legend()
    metric_ax.plot(epochs, [r["val_metric"] for r in history], color="tab:green")
    metric_ax.set(xlabel="epoch", ylabel=metric_name, title=f"{title}: validation {metric_name}")
    return _png(fig)


def loss_curves_png(history: list[dict], title: str) -> bytes:
    """Train and validation loss per epoch (pretraining has no label metric to show)."""
    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ax.plot(epochs, [r["train_loss"] for r in history], label="train")
    ax.plot(epochs, [r["val_loss"] for r in history], label="validation")
    ax.set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    ax.legend()
    return _png(fig)


def reliability_png(bins: list[dict], title: str = "Reliability (test)") -> bytes:
    """Accuracy against mean confidence per confidence bin; the diagonal is perfect calibration.
    Bar width is the bin; the number above a bar is its example count."""
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="calibrated")
    filled = [b for b in bins if b["count"]]
    ax.bar(
        [b["lower"] for b in filled],
        [b["accuracy"] for b in filled],
        width=[b["upper"] - b["lower"] for b in filled],
        align="edge",
        edgecolor="tab:blue",
        alpha=0.6,
        label="accuracy",
    )
    ax.plot(
        [b["confidence"] for b in filled],
        [b["accuracy"] for b in filled],
        "o",
        color="tab:red",
        markersize=3,
        label="mean confidence",
    )
    for b in filled:
        ax.text(b["lower"], b["accuracy"] + 0.01, str(b["count"]), fontsize=6)
    ax.set(xlim=(0, 1), ylim=(0, 1.08), xlabel="confidence", ylabel="accuracy", title=title)
    ax.legend(loc="upper left", fontsize=7)
    return _png(fig)


def confusion_matrix_png(matrix: list[list[int]], labels: list[str]) -> bytes:
    size = max(3.5, 0.45 * len(labels) + 1.5)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test)")
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                color = "white" if count > peak / 2 else "black"
                ax.text(j, i, str(count), ha="center", va="center", color=color, fontsize=8)
    return _png(fig)


def img_tag(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode()
    return f'<img alt="{alt}" src="data:image/png;base64,{encoded}"/>'


def predicted_vs_actual_png(actual: list[float], predicted: list[float]) -> bytes:
    """Regression: predictions against targets (the diagonal is perfect) and the residuals."""
    fig, (scatter, hist) = plt.subplots(1, 2, figsize=(9, 3.6))
    scatter.scatter(actual, predicted, s=8, alpha=0.6)
    low, high = min(min(actual), min(predicted)), max(max(actual), max(predicted))
    scatter.plot([low, high], [low, high], color="tab:red", linewidth=1)
    scatter.set(xlabel="actual", ylabel="predicted", title="predicted vs actual (test)")
    residuals = [p - a for a, p in zip(actual, predicted, strict=True)]
    hist.hist(residuals, bins=30, color="tab:gray")
    hist.set(xlabel="predicted - actual", ylabel="examples", title="residuals (test)")
    return _png(fig)
