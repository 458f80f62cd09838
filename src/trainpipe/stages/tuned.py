"""The tune stage's result as the pretrain and finetune stages take it."""

from __future__ import annotations

from trainpipe.stages.context import StageContext, make_context
from trainpipe.tune.space import apply_params


def tuned_context(ctx: StageContext, tune_uri: str) -> tuple[StageContext, dict]:
    """``ctx`` with the best parameters of the tune artifact set applied, and ``best.json``."""
    best = ctx.open(tune_uri).get_json("best.json")
    return make_context(apply_params(ctx.cfg, best["params"]).to_json(), ctx.run_id), best


def tuned_summary(best: dict) -> dict:
    """What a trained stage records about the search it took its parameters from."""
    return {"tuned_params": best["params"], "tuned_from_trial": best["trial"]}
