"""Scoring the registry's champion on the challenger's test data, and the comparison the gate
reads.

    champion = load_champion(registry, dataset.label_names, dataset.feature_shape)
    champion_probs = softmax(champion.logits(dataset.test.x)) if champion.comparable else None
    comparison = compare(cfg.gate, y, probs, champion, champion_probs, slices)

The champion is its registered ``model.onnx`` run by ONNX Runtime, exactly what is being served;
its bytes are checked against the version's manifest (sha256) and against ``model.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainpipe.artifacts import ArtifactSet
from trainpipe.data.preprocess import PreprocessSpec
from trainpipe.evaluate.bootstrap import bootstrap_ci, paired_bootstrap
from trainpipe.evaluate.config import GateConfig
from trainpipe.evaluate.metrics import HIGHER_IS_BETTER, Outputs, scalar_metric_fn
from trainpipe.evaluate.slices import Slice, slice_scores
from trainpipe.registry import Registry, RegistryError
from trainpipe.storage import sha256_bytes

ORT_BATCH_SIZE = 4096
INPUT_NAME = "input"  # trainpipe.export.onnx_export.INPUT_NAME; evaluate sits below export


@dataclass(frozen=True)
class ChampionModel:
    version: str
    etag: str
    uri: str
    model_sha256: str
    why_not: str
    """Why it cannot be scored on this data (other labels or input shape); empty when it can."""
    onnx_bytes: bytes
    input_names: tuple[str, ...]

    @property
    def comparable(self) -> bool:
        return not self.why_not

    def info(self) -> dict:
        return {
            "version": self.version,
            "etag": self.etag,
            "uri": self.uri,
            "model_sha256": self.model_sha256,
            "comparable": self.comparable,
            "why_not": self.why_not,
        }

    def logits(self, x: np.ndarray, spec: PreprocessSpec | None = None) -> np.ndarray:
        """Logits for encoded rows ``x``; a champion with named column inputs gets them as
        raw values decoded with the challenger's ``spec`` (its own categories may differ)."""
        from trainpipe.export.onnx_export import OUTPUT_NAME, ort_session
        from trainpipe.export.serving_graph import served_feeds

        session = ort_session(self.onnx_bytes)
        x = np.ascontiguousarray(x, dtype=np.float32)
        named = self.input_names != (INPUT_NAME,)
        return np.concatenate(
            [
                session.run(
                    [OUTPUT_NAME],
                    served_feeds(spec, x[i : i + ORT_BATCH_SIZE])
                    if named
                    else {INPUT_NAME: x[i : i + ORT_BATCH_SIZE]},
                )[0]
                for i in range(0, len(x), ORT_BATCH_SIZE)
            ]
        )


def verified_onnx(version: ArtifactSet, metadata: dict) -> tuple[bytes, str]:
    """A registry version's ``model.onnx`` (checked against the version's manifest) and its
    sha256, which must be the one ``model.json`` records."""
    onnx_bytes = version.get_bytes("model.onnx")
    digest = sha256_bytes(onnx_bytes)
    if metadata.get("sha256") and metadata["sha256"] != digest:
        raise RegistryError(
            f"registry error: {version.uri}/model.onnx has sha256 {digest[:12]}… but model.json "
            f"records {metadata['sha256'][:12]}…; the version is inconsistent, promote another "
            "version or re-register this one"
        )
    return onnx_bytes, digest


def load_champion(
    registry: Registry,
    label_names: list[str],
    feature_shape: list[int],
    spec: PreprocessSpec | None = None,
) -> ChampionModel | None:
    """The current champion's ONNX model, or None when there is none yet.

    A corrupt pointer or model file raises (RegistryError, ChecksumMismatch): evaluating
    against a champion we cannot trust must stop the run, not wave the challenger through.
    """
    champion = registry.champion()
    if champion is None:
        return None
    version = registry.open_version(champion.version)
    metadata = version.get_json("model.json")
    onnx_bytes, digest = verified_onnx(version, metadata)
    why_not = ""
    input_names = tuple(t["name"] for t in metadata["inputs"])
    named = input_names != (INPUT_NAME,)
    if metadata.get("labels") != list(label_names):
        why_not = f"it predicts labels {metadata.get('labels')}, the test data has {label_names}"
    elif named:
        wanted = spec.names if spec is not None and spec.has_categorical else [INPUT_NAME]
        if sorted(input_names) != sorted(wanted):
            why_not = f"it takes inputs {list(input_names)}, the test data has {wanted}"
    elif list(metadata["inputs"][0]["shape"][1:]) != list(feature_shape):
        why_not = (
            f"it takes inputs of shape {metadata['inputs'][0]['shape'][1:]}, the test data has "
            f"{feature_shape}"
        )
    elif spec is not None and spec.has_categorical:
        why_not = "it takes one FP32 block, the test data has categorical columns"
    return ChampionModel(
        champion.version,
        champion.etag,
        champion.uri,
        digest,
        why_not,
        onnx_bytes,
        input_names,
    )


def interval_metrics(cfg: GateConfig) -> list[str]:
    """Metrics that get bootstrap intervals: the primary one first, then the headline ones."""
    names = [cfg.metric, "accuracy", "macro_f1", "log_loss", "ece"]
    return [n for i, n in enumerate(names) if n not in names[:i]]


def compare(
    cfg: GateConfig,
    y_true: np.ndarray,
    probs: Outputs,
    champion: ChampionModel | None,
    champion_probs: Outputs | None,
    slices: list[Slice],
) -> dict:
    """The comparison the gate decides on (JSON-ready; stored as ``comparison.json``); each
    model's outputs are its probabilities or its ``RowScores`` holding ``cfg.top_k``."""
    comparison: dict = {
        "metric": cfg.metric,
        "champion": None,
        "intervals": {},
        "bootstrap_resamples": cfg.bootstrap_resamples,
        "confidence": cfg.confidence,
        "seed": cfg.seed,
    }
    if champion is not None:
        comparison["champion"] = champion.info()
    if champion_probs is not None:
        comparison["champion"]["metrics"] = {
            name: scalar_metric_fn(name, top_k=cfg.top_k)(y_true, champion_probs)
            for name in HIGHER_IS_BETTER
        }
        comparison["champion"]["slices"] = slice_scores(slices, y_true, champion_probs)
    if cfg.bootstrap_resamples:
        options = {
            "num_resamples": cfg.bootstrap_resamples,
            "confidence": cfg.confidence,
            "seed": cfg.seed,
        }
        for name in interval_metrics(cfg):
            fn = scalar_metric_fn(name, top_k=cfg.top_k)
            if champion_probs is not None:
                pair = paired_bootstrap(y_true, probs, champion_probs, fn, **options)
                comparison["intervals"][name] = {k: v.to_dict() for k, v in pair.items()}
            else:
                ci = bootstrap_ci(y_true, probs, fn, **options)
                comparison["intervals"][name] = {"challenger": ci.to_dict()}
    return comparison
