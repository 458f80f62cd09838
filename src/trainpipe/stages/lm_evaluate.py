"""lm_evaluate: score the fine-tuned text classifier (challenger) and the registry's champion on
the same held-out test texts; write the metrics, the comparison and the report in the format
the gate reads, so the shared gate, register and deploy steps take them unchanged.

The challenger is scored on the test split as fine-tuning tokenized it (``test_ids.npy``); the
champion, whatever tokenizer it was trained with, is its registered ``model.onnx`` run on the
same test texts through its own ``tokenizer.json`` (as the server would), so a retrained
tokenizer does not make the comparison impossible. The pretrained LM's validation and test
perplexity go into ``metrics.json`` (``language_model``) for the gate's ``max_perplexity`` rule.

Writes ``runs/<run_id>/evaluate/`` (the folder name the table DAG uses: the run summary and
the gate find it there): ``metrics.json``, ``comparison.json``, ``report.html``.
"""

from __future__ import annotations

import numpy as np
import torch

from trainpipe.evaluate.champion import ChampionModel, compare, verified_onnx
from trainpipe.evaluate.gate import decide
from trainpipe.evaluate.metrics import classification_metrics, missing_classes, softmax
from trainpipe.evaluate.report import shown_headline
from trainpipe.evaluate.slices import class_slices, slice_scores
from trainpipe.models.checkpoint import from_bytes
from trainpipe.models.text_checkpoint import load_text_classifier
from trainpipe.registry import Registry
from trainpipe.stages.context import make_context
from trainpipe.stages.evaluation_output import report_page, write_evaluation
from trainpipe.stages.lm_context import TEST_IDS, array_from, labelled_text

BATCH_SIZE = 256


def _logits(model: torch.nn.Module, ids: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate(
            [
                model(torch.as_tensor(ids[i : i + BATCH_SIZE])).float().numpy()
                for i in range(0, len(ids), BATCH_SIZE)
            ]
        )


def text_champion(
    registry: Registry, label_names: list[str], texts: list[str]
) -> tuple[ChampionModel | None, np.ndarray | None]:
    """The champion and its probabilities on ``texts`` (None when it cannot score them: not a
    text classifier, or other labels). A corrupt version raises, as for table models."""
    from trainpipe.export.onnx_export import ort_session
    from trainpipe.serve.text import GRAPH_INPUT, GRAPH_OUTPUT, TextFrontend, TextSpec

    champion = registry.champion()
    if champion is None:
        return None, None
    version = registry.open_version(champion.version)
    metadata = version.get_json("model.json")
    onnx_bytes, digest = verified_onnx(version, metadata)
    why_not = ""
    if "text" not in metadata:
        why_not = "it is not a text classifier (it takes no text input)"
    elif metadata.get("labels") != list(label_names):
        why_not = f"it predicts labels {metadata.get('labels')}, the test data has {label_names}"
    inputs = tuple(t["name"] for t in metadata["inputs"])
    model = ChampionModel(
        champion.version, champion.etag, champion.uri, digest, why_not, onnx_bytes, inputs
    )
    if why_not:
        return model, None
    spec = TextSpec.from_json(metadata["text"], version.uri)
    frontend = TextFrontend(
        spec, version.get_bytes(spec.tokenizer), tuple(metadata["labels"]), version.uri
    )
    session = ort_session(onnx_bytes, metadata.get("graph_optimization_level") or "all")
    logits = [
        session.run(
            [GRAPH_OUTPUT], {GRAPH_INPUT: frontend.encode(np.array(texts[i : i + BATCH_SIZE]))}
        )[0]
        for i in range(0, len(texts), BATCH_SIZE)
    ]
    return model, softmax(np.concatenate(logits).astype(np.float64))


def run_lm_evaluate(
    config_json: str,
    run_id: str,
    data_uri: str,
    finetune_uri: str,
    metrics=None,
    classification_metrics_artifact=None,
    report=None,
) -> str:
    ctx = make_context(config_json, run_id)
    cfg = ctx.cfg.gate
    stored = labelled_text(ctx.open(data_uri))
    names, y = stored.label_names, stored.labels["test"]
    finetuned = ctx.open(finetune_uri)
    model = load_text_classifier(from_bytes(finetuned.get_bytes("model.pt")))
    ids = array_from(finetuned.get_bytes(TEST_IDS), f"{finetune_uri}/{TEST_IDS}")
    logits = _logits(model, ids)
    scores = classification_metrics(y, logits, names, top_k=cfg.top_k)
    probs = softmax(logits.astype(np.float64))
    slices = class_slices(y, names)
    scores["slices"] = slice_scores(slices, y, probs)
    scores["classes_missing_from_test"] = missing_classes(stored.labels["train"], y, names)
    pretrain_uri = finetuned.manifest["lineage"]["inputs"].get("pretrain")
    if pretrain_uri:
        lm = ctx.open(pretrain_uri).summary
        scores["language_model"] = {
            k: lm[k] for k in ("kind", "num_params", "val_perplexity", "test_perplexity")
        }
    registry = Registry(ctx.store, ctx.cfg.registry.model_name)
    champion, champion_probs = text_champion(registry, names, stored.texts["test"])
    comparison = compare(cfg, y, probs, champion, champion_probs, slices)
    verdict = decide(cfg, scores, comparison).to_dict()
    html = report_page(ctx, cfg, scores, comparison, verdict, finetuned)
    headline = shown_headline(scores)
    lm_metrics = {}
    if "language_model" in scores:
        lm_metrics["lm_test_perplexity"] = round(scores["language_model"]["test_perplexity"], 4)
    writer = write_evaluation(
        ctx,
        {"data": data_uri, "model": finetune_uri},
        scores,
        comparison,
        html,
        headline=headline,
        metric=cfg.metric,
        metrics=metrics,
        classification_metrics_artifact=classification_metrics_artifact,
        report=report,
        extra_metrics=lm_metrics,
    )
    summary = {k: scores[k] for k in (*headline, "num_examples") if k in scores}
    summary["task"] = "classification"
    summary["champion_version"] = champion.version if champion else None
    summary["expected_decision"] = verdict["decision"]
    if "language_model" in scores:
        summary["lm_test_perplexity"] = scores["language_model"]["test_perplexity"]
    print(
        f"[lm_evaluate] {cfg.metric} {scores[cfg.metric]:.4f} on {len(y)} test texts; "
        f"champion: {'v' + champion.version if champion else 'none'}; "
        f"gate would {verdict['decision']}",
        flush=True,
    )
    return writer.commit(summary=summary)
