"""The search's outcome: the best trial, the untuned baseline and the gain between them."""

from __future__ import annotations

from trainpipe.config import Config
from trainpipe.tune.space import current_values
from trainpipe.tune.study import TrialRecord, TuneError, budget, trial_epochs


def summarize(trials: list[TrialRecord], cfg: Config) -> dict:
    """best.json: the parameters fine-tuning takes, with the evidence for them."""
    tune = cfg.tune
    maximize = tune.resolved_direction == "maximize"
    complete = [t for t in trials if t.value is not None]
    if not complete:
        states = sorted({t.state for t in trials})
        raise TuneError(
            f"no trial completed ({len(trials)} trials: {', '.join(states) or 'none'}); "
            "check the failures in the log, or raise tune.trials or tune.timeout_s"
        )
    # Ties go to the earlier trial, so the default wins when nothing beats it.
    best = sorted(complete, key=lambda t: (-t.value if maximize else t.value, t.number))[0]
    baseline = next((t for t in complete if t.baseline), None)
    gain = None
    if baseline is not None:
        gain = best.value - baseline.value if maximize else baseline.value - best.value
    per_trial = trial_epochs(cfg)
    planned = tune.pbt.population if tune.strategy == "pbt" else budget(cfg)
    return {
        "trial": best.number,
        "value": best.value,
        "params": best.params,
        "default_params": current_values(cfg, list(tune.space)),
        "metric": tune.metric,
        "direction": tune.resolved_direction,
        "strategy": tune.strategy if tune.strategy == "pbt" else f"{tune.sampler}+{tune.pruner}",
        "baseline_value": baseline.value if baseline else None,
        "gain": gain,
        "trials": len(trials),
        "complete": len(complete),
        "pruned": sum(t.state == "pruned" for t in trials),
        "failed": sum(t.state == "fail" for t in trials),
        "epochs_run": sum(t.epochs for t in trials),
        "epochs_budget": planned * per_trial,
    }
