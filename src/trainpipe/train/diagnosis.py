"""Reading learning curves the way a practitioner does, plus a linear baseline to compare with.

    diagnosis = diagnose(history, chance_loss=math.log(10), baseline_train_loss=0.21)
    diagnosis.state   # "healthy", "underfitting", "overfitting", "optimization", "instability",
                      # or "loss_metric_mismatch"

The rules (checked in this order, the first that fits wins):
- instability: the training loss goes up and down a lot from epoch to epoch;
- optimization: the training loss stalls early, far above where it should get (and worse
  than a linear model on the same data: an optimization problem, not a capacity one);
- underfitting: training and validation loss both stay high;
- overfitting: training loss low while validation loss is much higher and rising from its best;
- loss_metric_mismatch: the loss keeps falling while the validation metric does not improve.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

ADVICE = {
    "healthy": "curves look healthy: both losses fall and validation tracks training",
    "underfitting": "both losses stay high: more capacity, longer training or better features",
    "overfitting": "training loss is low but validation loss is high and rising: regularize "
    "(weight decay, dropout), augment, early-stop or get more data",
    "optimization": "the training loss plateaued early: tune the learning rate or optimizer, "
    "add normalization, check initialization",
    "instability": "the loss oscillates: lower the learning rate, enlarge the batch, clip "
    "gradients, check initialization",
    "loss_metric_mismatch": "the loss falls while the metric does not improve: the loss does not "
    "match the task (check label encoding, class weights, the metric)",
}


@dataclass(frozen=True)
class Diagnosis:
    state: str
    advice: str
    evidence: dict
    worse_than_linear_baseline: bool

    def to_dict(self) -> dict:
        return asdict(self)

    def summary_line(self) -> str:
        # Whether the network is worse than a linear model is the gate's call, on the test
        # split (trainpipe.stages.evaluate.reconcile_diagnosis); a training-loss comparison here
        # (dropout and smoothing raise a network's training loss) would contradict it.
        return f"{self.state}: {self.advice}"


def diagnose(
    history: list[dict],
    *,
    chance_loss: float,
    baseline_train_loss: float | None = None,
) -> Diagnosis:
    """``chance_loss``: the loss of guessing (log(num_classes) for cross-entropy)."""
    train = np.array([r["train_loss"] for r in history], dtype=float)
    val = np.array([r["val_loss"] for r in history], dtype=float)
    metric = np.array([r["val_metric"] for r in history], dtype=float)
    n = len(train)
    final_train, final_val, best_val = train[-1], val[-1], val.min()
    steps = np.diff(train)
    # Sign changes of large training-loss moves measure oscillation.
    big = steps[np.abs(steps) > 0.05 * max(abs(train[0]), 1e-8)]
    reversals = int(np.sum(np.diff(np.sign(big)) != 0)) if len(big) > 1 else 0
    early = max(1, n // 4)
    early_drop = (train[0] - train[early]) / max(abs(train[0]), 1e-8) if n > 1 else 0.0
    late_drop = (train[early] - final_train) / max(abs(train[early]), 1e-8) if n > 1 else 0.0
    worse = baseline_train_loss is not None and final_train > baseline_train_loss * 1.05
    evidence = {
        "epochs": n,
        "final_train_loss": float(final_train),
        "final_val_loss": float(final_val),
        "best_val_loss": float(best_val),
        "chance_loss": float(chance_loss),
        "train_loss_reversals": reversals,
        "early_relative_drop": float(early_drop),
        "late_relative_drop": float(late_drop),
        "baseline_train_loss": baseline_train_loss,
        "metric_gain": float(metric.max() - metric[0]) if n else 0.0,
    }
    high = 0.5 * chance_loss
    if n >= 4 and reversals >= max(3, n // 3):
        state = "instability"
    elif n >= 4 and late_drop < 0.05 and final_train > high and worse:
        state = "optimization"
    elif final_train > high and final_val > high:
        state = "underfitting"
    elif final_val > 2.0 * max(final_train, 1e-3) and final_val > 1.2 * best_val:
        state = "overfitting"
    elif n >= 4 and early_drop + late_drop > 0.3 and evidence["metric_gain"] <= 0.0:
        state = "loss_metric_mismatch"
    else:
        state = "healthy"
    return Diagnosis(state, ADVICE[state], evidence, bool(worse))


def linear_baseline_train_loss(x: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    """Training log loss of a multinomial logistic regression on the flattened inputs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # float64: probabilities computed in float32 miss sklearn's sum-to-one tolerance. Scaled
    # inputs let lbfgs converge within max_iter on raw (unnormalized) features.
    flat = x.reshape(len(x), -1).astype(np.float64)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(flat, y)
    probabilities = np.zeros((len(x), num_classes))
    probabilities[:, model.classes_] = model.predict_proba(flat)
    probabilities /= probabilities.sum(axis=1, keepdims=True)  # float32 inputs round off
    return float(log_loss(y, probabilities, labels=list(range(num_classes))))
