"""gate: decide whether the evaluated, exported model may be registered and deployed.

Every rule of ``trainpipe.evaluate.gate.decide`` runs on the evaluate stage's stored metrics and
comparison, plus: the champion evaluation compared against must still be the champion, and
(continual runs, whose test split starts with the fixed original test set) the forgetting bound
``continual.max_forgetting`` on that fixed set.
The decision, every rule with its numbers, and the champion (version and etag) it was based on
go into ``decision.json``, whose artifact set's URI is the gate's second output: the register
stage receives it as an input and promotes with compare-and-swap against exactly
that champion. ``report.html`` is the evaluation report with this final decision.
"""

from __future__ import annotations

from trainpipe.evaluate.gate import champion_unchanged, decide, forgetting_bound
from trainpipe.registry import Registry
from trainpipe.stages.context import make_context
from trainpipe.stages.evaluation_output import report_page


def run_gate(config_json: str, run_id: str, evaluate_uri: str, export_uri: str) -> tuple[str, str]:
    """Decide; return ``promote`` or ``reject`` and the URI of the set holding decision.json."""
    ctx = make_context(config_json, run_id)
    cfg = ctx.cfg.gate
    evaluation = ctx.open(evaluate_uri)
    scores = evaluation.get_json("metrics.json")
    comparison = evaluation.get_json("comparison.json")
    ctx.open(export_uri)  # the exported model must be complete before anything is promoted
    decision = decide(cfg, scores, comparison)
    current = Registry(ctx.store, ctx.cfg.registry.model_name).champion()
    decision = decision.with_rule(
        champion_unchanged(
            decision.champion,
            current.version if current else None,
            current.etag if current else None,
        )
    )
    forgetting = forgetting_bound(scores, comparison, ctx.cfg.continual.max_forgetting)
    if forgetting is not None:
        decision = decision.with_rule(forgetting)
    record = decision.to_dict()
    finetuned = ctx.open(evaluation.manifest["lineage"]["inputs"]["model"])
    html = report_page(ctx, cfg, scores, comparison, record, finetuned)
    writer = ctx.writer("gate", inputs={"evaluation": evaluate_uri, "export": export_uri})
    writer.put_json("decision.json", record)
    writer.put_text("report.html", html)
    uri = writer.commit(
        summary={
            "decision": record["decision"],
            "reason": record["reason"],
            "failed_rules": [r.rule for r in decision.rules if not r.passed],
            "champion_version": decision.champion["version"] if decision.champion else None,
        }
    )
    print(f"[gate] {record['decision']}: {record['reason']}", flush=True)
    for rule in decision.rules:
        print(
            f"[gate]   {'pass' if rule.passed else 'FAIL'} {rule.rule}: {rule.detail}", flush=True
        )
    return record["decision"], uri
