"""register: store the model as a new immutable registry version and make it the champion.

Only a run whose gate said ``promote`` gets here. The version holds everything needed to serve,
audit and reproduce the model: ``model.onnx`` + ``model.json`` (served), ``model.pt`` (the torch
checkpoint), ``metrics.json`` + ``comparison.json`` + ``report.html`` (evaluation),
``decision.json`` (the gate's rules), ``config.json``, ``dataset.json`` and, when validation
stored one, ``schema.yaml``, and ``lineage.json`` (data, pretraining checkpoint, every stage's
artifacts, code version and git commit).

The champion pointer moves with compare-and-swap against the champion the gate compared with
(its version and etag are in ``decision.json``). If another pipeline or a person changed the
champion since, this stage fails with PromotionConflict: checked before registering, nothing
changes; lost in the final write, the new version stays registered but is not the champion.
"""

from __future__ import annotations

import json
import os

from trainpipe import __version__
from trainpipe.evaluate.gate import PROMOTE
from trainpipe.registry import Champion, PromotionConflict, Registry, RegistryError
from trainpipe.stages.context import make_context

EXPORT_FILES = ("model.onnx", "model.json", "parity.json")
EVALUATION_FILES = ("metrics.json", "comparison.json", "report.html")
DATA_FILES = ("dataset.json", "schema.yaml")  # schema.yaml only when validation stored one
SUMMARY_KEYS = ("accuracy", "macro_f1", "log_loss", "ece", "num_examples")
GIT_SHA_ENV = "TRAINPIPE_GIT_SHA"


def _describe(champion: Champion | dict | None) -> str:
    if champion is None:
        return "no champion"
    version = champion.version if isinstance(champion, Champion) else champion["version"]
    return f"version {version}"


def run_register(
    config_json: str, run_id: str, export_uri: str, evaluate_uri: str, gate_uri: str
) -> str:
    ctx = make_context(config_json, run_id)
    decided = ctx.open(gate_uri)
    gate = decided.get_json("decision.json")
    if gate["decision"] != PROMOTE:
        raise RegistryError(f"registry error: the gate rejected run {run_id}: {gate['reason']}")
    registry = Registry(ctx.store, ctx.cfg.registry.model_name)
    seen = gate["champion"]
    current = registry.champion()
    now = (current.version, current.etag) if current else None
    if now != ((seen["version"], seen["etag"]) if seen else None):
        raise PromotionConflict(
            f"registry error: the champion of {registry.model_name} changed since the gate "
            f"decided (the gate compared against {_describe(seen)}, now it is "
            f"{_describe(current)}); nothing was registered or promoted, rerun the pipeline"
        )

    exported = ctx.open(export_uri)
    evaluation = ctx.open(evaluate_uri)
    finetune_uri = evaluation.manifest["lineage"]["inputs"]["model"]
    data_uri = evaluation.manifest["lineage"]["inputs"]["data"]
    finetuned = ctx.open(finetune_uri)
    data = ctx.open(data_uri)
    files = {name: exported.get_bytes(name) for name in EXPORT_FILES}
    text = json.loads(files["model.json"]).get("text")
    if text:  # a text classifier is served with the tokenizer it was trained with
        files[text["tokenizer"]] = exported.get_bytes(text["tokenizer"])
    files |= {name: evaluation.get_bytes(name) for name in EVALUATION_FILES}
    files |= {name: data.get_bytes(name) for name in DATA_FILES if name in data.names()}
    files["model.pt"] = finetuned.get_bytes("model.pt")
    files["decision.json"] = decided.get_bytes("decision.json")
    files["config.json"] = ctx.cfg.to_json().encode()
    lineage = {
        "run_id": run_id,
        "data_source": data.get_json("dataset.json")["source"],
        "data": data_uri,
        "pretrain": finetuned.manifest["lineage"]["inputs"].get("pretrain", ""),
        "finetune": finetune_uri,
        "evaluation": evaluate_uri,
        "export": export_uri,
        "gate": gate_uri,
        "code_version": __version__,
        "git_sha": os.environ.get(GIT_SHA_ENV, ""),
    }
    files["lineage.json"] = json.dumps(lineage, indent=2, sort_keys=True).encode()
    summary = {k: evaluation.summary[k] for k in SUMMARY_KEYS if k in evaluation.summary}
    summary |= {"run_id": run_id, "metric": ctx.cfg.gate.metric, "gate_reason": gate["reason"]}
    version = registry.register(files, run_id=run_id, lineage=lineage, summary=summary)

    expected = Champion(seen["version"], seen["uri"], None, seen["etag"], {}) if seen else None
    try:
        champion = registry.promote(version, reason=gate["reason"], expected=expected)
    except PromotionConflict as exc:
        raise PromotionConflict(
            f"{exc}; version {version} is registered but is not the champion"
        ) from None
    writer = ctx.writer(
        "register", inputs={"export": export_uri, "evaluation": evaluate_uri, "gate": gate_uri}
    )
    writer.put_json("champion.json", champion.record)
    writer.commit(
        summary={"version": version, "uri": champion.uri, "previous": champion.previous_version}
    )
    print(
        f"[register] {registry.model_name} version {version} is the champion "
        f"(was {_describe(seen)})",
        flush=True,
    )
    return champion.uri
