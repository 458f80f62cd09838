"""gate: decide whether the evaluated, exported model may be registered and deployed."""

from __future__ import annotations

from trainpipe.stages.context import make_context
from trainpipe.stages.entry import stage_entry

PROMOTE = "promote"
REJECT = "reject"


def decide(metric: str, value: float, min_value: float) -> tuple[str, str]:
    if value >= min_value:
        return PROMOTE, f"{metric} {value:.4f} >= threshold {min_value:.4f}"
    return REJECT, f"{metric} {value:.4f} < threshold {min_value:.4f}"


@stage_entry
def run_gate(config_json: str, run_id: str, evaluate_uri: str, export_uri: str) -> str:
    ctx = make_context(config_json, run_id)
    cfg = ctx.cfg.gate
    scores = ctx.open(evaluate_uri).get_json("metrics.json")
    ctx.open(export_uri)  # the exported model must be complete before anything is promoted
    decision, reason = decide(cfg.metric, scores[cfg.metric], cfg.min_value)
    writer = ctx.writer("gate", inputs={"evaluation": evaluate_uri, "export": export_uri})
    writer.put_json("decision.json", {"decision": decision, "reason": reason})
    writer.commit(summary={"decision": decision, "reason": reason})
    print(f"[gate] {decision}: {reason}", flush=True)
    return decision
