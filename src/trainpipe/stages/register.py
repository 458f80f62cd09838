"""register: store the model as a new registry version and make it the champion."""

from __future__ import annotations

from trainpipe.registry import Registry, RegistryError
from trainpipe.stages.context import make_context, run_prefix
from trainpipe.stages.entry import stage_entry
from trainpipe.stages.gate import PROMOTE

VERSION_FILES = ("model.onnx", "model.json", "parity.json")


@stage_entry
def run_register(config_json: str, run_id: str, export_uri: str, evaluate_uri: str) -> str:
    ctx = make_context(config_json, run_id)
    exported = ctx.open(export_uri)
    evaluation = ctx.open(evaluate_uri)
    files = {name: exported.get_bytes(name) for name in VERSION_FILES}
    files["metrics.json"] = evaluation.get_bytes("metrics.json")
    registry = Registry(ctx.store, ctx.cfg.registry.model_name)
    version = registry.register(
        files,
        run_id=run_id,
        lineage={"export": export_uri, "evaluation": evaluate_uri, "run_id": run_id},
        summary=evaluation.summary,
    )
    gate = ctx.open(ctx.store.uri_for(f"{run_prefix(run_id)}/gate")).get_json("decision.json")
    if gate["decision"] != PROMOTE:
        raise RegistryError(f"registry error: the gate rejected run {run_id}: {gate['reason']}")
    champion = registry.promote(version, reason=gate["reason"])
    writer = ctx.writer("register", inputs={"export": export_uri, "evaluation": evaluate_uri})
    writer.put_json("champion.json", champion.record)
    writer.commit(
        summary={"version": version, "uri": champion.uri, "previous": champion.previous_version}
    )
    print(f"[register] {registry.model_name} version {version} is the champion", flush=True)
    return champion.uri
