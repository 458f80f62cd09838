"""The gate's rules as pure functions: evaluation results in, a decision with every reason out.

    decision = decide(cfg.gate, metrics, comparison)
    decision.decision            # "promote" only if every rule passed
    decision.rules               # [RuleResult(rule="min_value", passed=True, detail="...")...]

``metrics`` is the challenger's ``metrics.json`` (with ``slices``), ``comparison`` the evaluate
stage's ``comparison.json``: the champion it scored on the same test split (or None), its
metrics and slices, and the bootstrap intervals. The evaluate stage runs ``decide`` to show the
verdict in its report; the gate stage runs it again on the stored files, adds
:func:`champion_unchanged` (and, in continual runs, :func:`forgetting_bound`), and its answer
is the one the pipeline branches on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from trainpipe.evaluate.config import GateConfig

PROMOTE = "promote"
REJECT = "reject"

METRIC_LABELS = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "macro_precision": "macro precision",
    "macro_recall": "macro recall",
    "top_k_accuracy": "top-k accuracy",
    "log_loss": "log loss",
    "ece": "ECE",
    "r2": "R^2",
    "rmse": "RMSE",
    "test_perplexity": "LM test perplexity",
}


def primary_metric(cfg: GateConfig, metrics: dict) -> str:
    """The gate's metric: ``gate.metric`` for classification, R^2 for a regression model."""
    return "r2" if metrics.get("task") == "regression" else cfg.metric


@dataclass(frozen=True)
class RuleResult:
    rule: str
    passed: bool
    detail: str
    values: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    rules: list[RuleResult]
    champion: dict | None
    """{"version", "etag", "uri"} of the champion the rules compared against, or None."""

    @property
    def decision(self) -> str:
        return PROMOTE if all(r.passed for r in self.rules) else REJECT

    @property
    def reason(self) -> str:
        """One line: the failed rules when rejecting, else the headline rules."""
        if self.decision == REJECT:
            return "; ".join(r.detail for r in self.rules if not r.passed)
        headline = [r.detail for r in self.rules if r.rule in ("min_value", "beats_champion")]
        return "; ".join(headline)

    def with_rule(self, rule: RuleResult) -> Decision:
        return Decision([*self.rules, rule], self.champion)

    def to_dict(self) -> dict:
        return {
            "decision": self.decision,
            "reason": self.reason,
            "rules": [asdict(r) for r in self.rules],
            "champion": self.champion,
        }


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _at_least(rule: str, metric: str, value: float, bound: float) -> RuleResult:
    passed = value >= bound
    sign = ">=" if passed else "<"
    return RuleResult(
        rule,
        passed,
        f"{_label(metric)} {value:.4f} {sign} min {bound:.4f}",
        {"metric": metric, "value": value, "min": bound},
    )


def _at_most(rule: str, metric: str, value: float, bound: float) -> RuleResult:
    passed = value <= bound
    sign = "<=" if passed else ">"
    return RuleResult(
        rule,
        passed,
        f"{_label(metric)} {value:.4f} {sign} max {bound:.4f}",
        {"metric": metric, "value": value, "max": bound},
    )


def threshold_rules(cfg: GateConfig, metrics: dict) -> list[RuleResult]:
    if metrics.get("task") == "regression":
        rules = [_at_least("min_value", "r2", metrics["r2"], cfg.min_r2)]
        if cfg.max_rmse is not None:
            rules.append(_at_most("max_rmse", "rmse", metrics["rmse"], cfg.max_rmse))
        return rules
    rules = [_at_least("min_value", cfg.metric, metrics[cfg.metric], cfg.min_value)]
    if cfg.max_log_loss is not None:
        rules.append(_at_most("max_log_loss", "log_loss", metrics["log_loss"], cfg.max_log_loss))
    if cfg.max_ece is not None:
        rules.append(_at_most("max_ece", "ece", metrics["ece"], cfg.max_ece))
    return rules


def beats_champion(cfg: GateConfig, metrics: dict, comparison: dict) -> RuleResult:
    champion = comparison.get("champion")
    if champion is None:
        return RuleResult(
            "beats_champion", True, "no champion yet: first model, nothing to beat", {}
        )
    version = champion["version"]
    if not champion["comparable"]:
        return RuleResult(
            "beats_champion",
            False,
            f"champion version {version} cannot be scored on this test data "
            f"({champion['why_not']}); promote by hand with `trainpipe registry promote`",
            {"champion_version": version},
        )
    metric = primary_metric(cfg, metrics)
    label = _label(metric)
    ours, theirs = metrics[metric], champion["metrics"][metric]
    delta = ours - theirs
    interval = (comparison.get("intervals", {}).get(metric) or {}).get("difference")
    ci = ""
    if interval:
        pct = round(interval["confidence"] * 100)
        ci = f", {pct}% CI [{interval['lower']:+.4f}, {interval['upper']:+.4f}]"
    values = {
        "metric": metric,
        "challenger": ours,
        "champion": theirs,
        "difference": delta,
        "min_improvement": cfg.min_improvement,
        "champion_version": version,
        "difference_interval": interval,
    }
    passed = delta >= cfg.min_improvement
    detail = (
        f"{label} {ours:.4f} vs champion v{version} {theirs:.4f}: {delta:+.4f}{ci} "
        f"{'>=' if passed else '<'} min improvement {cfg.min_improvement:+.4f}"
    )
    if passed and cfg.require_confident_improvement:
        passed = interval is not None and interval["lower"] >= cfg.min_improvement
        if not passed:
            detail += " but the interval's lower end is below it (could be noise)"
    return RuleResult("beats_champion", passed, detail, values)


def slice_guard(cfg: GateConfig, metrics: dict, comparison: dict) -> RuleResult | None:
    """Fails when a guarded slice lost more accuracy than allowed; None when disabled."""
    if cfg.max_slice_regression is None:
        return None
    champion = comparison.get("champion")
    if champion is None or not champion["comparable"]:
        return RuleResult("slices", True, "no comparable champion: no slice to compare", {})
    margin = cfg.max_slice_regression
    guarded, regressed = [], []
    for name, ours in metrics["slices"].items():
        theirs = champion["slices"].get(name)
        if theirs is None or ours["n"] < cfg.min_slice_examples:
            continue
        delta = ours["accuracy"] - theirs["accuracy"]
        entry = {
            "slice": name,
            "n": ours["n"],
            "challenger": ours["accuracy"],
            "champion": theirs["accuracy"],
            "difference": delta,
        }
        guarded.append(entry)
        if delta < -margin - 1e-12:  # a drop of exactly the margin is allowed
            regressed.append(entry)
    values = {"max_regression": margin, "guarded": guarded, "regressed": regressed}
    if regressed:
        listed = ", ".join(
            f"{e['slice']} {e['champion']:.4f} -> {e['challenger']:.4f} ({e['difference']:+.4f})"
            for e in sorted(regressed, key=lambda e: e["difference"])
        )
        return RuleResult(
            "slices",
            False,
            f"{len(regressed)} of {len(guarded)} guarded slices lost more than {margin:.4f} "
            f"accuracy vs the champion: {listed}",
            values,
        )
    if not guarded:
        detail = f"no slice has the {cfg.min_slice_examples} examples needed to guard it"
    else:
        worst = min(guarded, key=lambda e: e["difference"])
        detail = (
            f"no guarded slice ({len(guarded)}) lost more than {margin:.4f} accuracy vs the "
            f"champion (worst: {worst['slice']} {worst['difference']:+.4f})"
        )
    return RuleResult("slices", True, detail, values)


def beats_linear_baseline(cfg: GateConfig, metrics: dict) -> RuleResult | None:
    """Fails when the network is worse than the linear baseline by more than the margin."""
    baselines = metrics.get("baselines")
    if cfg.max_gap_to_linear is None or not baselines:
        return None
    metric = primary_metric(cfg, metrics)
    label = _label(metric)
    ours, linear = metrics[metric], baselines["linear"][metric]
    best_name = max(("linear", "hgb"), key=lambda n: baselines[n][metric])
    gap = ours - linear
    passed = gap >= -cfg.max_gap_to_linear - 1e-12
    detail = (
        f"{label} {ours:.4f} vs linear baseline {linear:.4f} ({gap:+.4f}; allowed "
        f"-{cfg.max_gap_to_linear:.4f}); best baseline {best_name} "
        f"{baselines[best_name][metric]:.4f}"
    )
    if not passed:
        detail = (
            f"the network is worse than a linear model on the same split: {detail}; fix "
            "optimization first (learning rate, epochs, width) or raise gate.max_gap_to_linear"
        )
    values = {
        "metric": metric,
        "network": ours,
        "linear": linear,
        "hgb": baselines["hgb"][metric],
        "difference": gap,
        "max_gap": cfg.max_gap_to_linear,
    }
    return RuleResult("beats_linear_baseline", passed, detail, values)


def class_coverage(metrics: dict) -> RuleResult | None:
    """Macro metrics are undefined when the test split lacks a class seen in training."""
    missing = metrics.get("classes_missing_from_test")
    if missing is None:
        return None
    if missing:
        return RuleResult(
            "test_covers_classes",
            False,
            f"the test split has no example of class(es) {missing} seen in training, so its "
            "metrics say nothing about them; add test examples of every class (or let the "
            "pipeline split the data)",
            {"missing": missing},
        )
    return RuleResult(
        "test_covers_classes", True, "every class seen in training is in the test split", {}
    )


def perplexity_bound(cfg: GateConfig, metrics: dict) -> RuleResult | None:
    """Language-model DAG: the pretrained LM's test perplexity (``metrics["language_model"]``)
    must not exceed ``gate.max_perplexity``. None when disabled or no LM was pretrained."""
    lm = metrics.get("language_model")
    if cfg.max_perplexity is None or not lm:
        return None
    rule = _at_most("max_perplexity", "test_perplexity", lm["test_perplexity"], cfg.max_perplexity)
    if rule.passed:
        return rule
    return RuleResult(
        rule.rule,
        False,
        f"the language model did not learn the corpus well enough: {rule.detail}; train longer "
        "or larger, or raise gate.max_perplexity",
        rule.values,
    )


def decide(cfg: GateConfig, metrics: dict, comparison: dict) -> Decision:
    rules = threshold_rules(cfg, metrics)
    checks = (class_coverage(metrics), beats_linear_baseline(cfg, metrics))
    for rule in (*checks, perplexity_bound(cfg, metrics)):
        if rule is not None:
            rules.append(rule)
    rules.append(beats_champion(cfg, metrics, comparison))
    guard = slice_guard(cfg, metrics, comparison)
    if guard is not None:
        rules.append(guard)
    champion = comparison.get("champion")
    seen = {k: champion[k] for k in ("version", "etag", "uri")} if champion else None
    return Decision(rules, seen)


def champion_unchanged(
    evaluated: dict | None, current_version: str | None, current_etag: str | None
) -> RuleResult:
    """The champion the evaluation compared against must still be the champion now."""
    was = evaluated["version"] if evaluated else None
    if was == current_version and (evaluated is None or evaluated["etag"] == current_etag):
        return RuleResult(
            "champion_unchanged",
            True,
            f"champion unchanged since evaluation ({'v' + was if was else 'none'})",
            {"evaluated": was, "current": current_version},
        )
    return RuleResult(
        "champion_unchanged",
        False,
        f"the champion changed since evaluation (was {'v' + was if was else 'none'}, now "
        f"{'v' + current_version if current_version else 'none'}); rerun the pipeline to compare "
        "against the new champion",
        {"evaluated": was, "current": current_version},
    )


def forgetting_bound(metrics: dict, comparison: dict, max_drop: float | None) -> RuleResult | None:
    """Continual runs: accuracy on the fixed original test set (the first examples of the test
    split, ``metrics["fixed_test"]``) may fall at most ``max_drop`` below the champion's. None
    when the evaluation has no fixed test set (batch runs)."""
    fixed = metrics.get("fixed_test")
    if fixed is None:
        return None
    accuracy, theirs = fixed["accuracy"], comparison.get("fixed_test", {}).get("champion_accuracy")
    values = {"accuracy": accuracy, "champion": theirs, "max_drop": max_drop}
    if max_drop is None:
        return RuleResult("forgetting", True, "forgetting bound disabled", values)
    if theirs is None:
        return RuleResult(
            "forgetting", True, "forgetting: no comparable champion, nothing to forget", values
        )
    drop = theirs - accuracy
    passed = drop <= max_drop + 1e-12
    detail = (
        f"forgetting: accuracy on the original test set {theirs:.4f} -> {accuracy:.4f} "
        f"(drop {drop:+.4f} {'<=' if passed else '>'} max {max_drop:.4f})"
    )
    return RuleResult("forgetting", passed, detail, values | {"drop": drop})
