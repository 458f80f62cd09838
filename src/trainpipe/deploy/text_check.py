"""The deploy step's infrastructure check for a text classifier package: the real server takes
the held-out test texts as OIP BYTES and must answer what the package's own model.onnx answers
in-process for the same texts, at the accuracy evaluation measured.

    check = text_infra_check(model_uri, texts, labels, evaluation_accuracy, cfg.deploy,
                             endpoint_url=cfg.storage.endpoint_url)

In order: the model loads and /v2/health/ready answers; a smoke request of
``deploy.smoke_examples`` texts and then every test text (one request at a time, so the server
pads each batch as sent) match the in-process answer (tokenized by the package's own
tokenizer, :class:`trainpipe.serve.text.TextFrontend`); the served accuracy is evaluation's
within ``deploy.accuracy_tolerance``; ``deploy.latency_requests`` single-text requests are
timed. Raises DeployError naming what failed.
"""

from __future__ import annotations

import time

import numpy as np

from trainpipe.artifacts import ArtifactSet
from trainpipe.deploy.config import DeployConfig
from trainpipe.errors import DeployError


def text_infra_check(
    model_uri: str,
    texts: list[str],
    labels: np.ndarray,
    evaluation_accuracy: float,
    cfg: DeployConfig,
    *,
    endpoint_url: str | None = None,
) -> dict:
    from trainpipe.export.onnx_export import ort_session
    from trainpipe.serve.client import InferenceClientError, infer_outputs, wait_ready
    from trainpipe.serve.config import ServeConfig
    from trainpipe.serve.errors import ModelLoadError
    from trainpipe.serve.server import start_in_background
    from trainpipe.serve.text import GRAPH_INPUT, GRAPH_OUTPUT, TextFrontend, TextSpec

    package = ArtifactSet.open(model_uri, endpoint_url=endpoint_url)
    metadata = package.get_json("model.json")
    name, version = metadata["name"], metadata["version"]
    spec = TextSpec.from_json(metadata["text"], model_uri)
    frontend = TextFrontend(
        spec, package.get_bytes(spec.tokenizer), tuple(metadata["labels"]), model_uri
    )
    local = ort_session(
        package.get_bytes("model.onnx"), metadata.get("graph_optimization_level") or "all"
    )
    serve_config = ServeConfig(
        host="127.0.0.1", port=0, endpoint_url=endpoint_url, log_level="warning"
    )
    rows = serve_config.max_batch_size
    texts = np.array(texts, dtype=object)
    requests = [texts[: cfg.smoke_examples]] + [
        texts[i : i + rows] for i in range(0, len(texts), rows)
    ]

    def fail(problem: str) -> DeployError:
        return DeployError(
            f"deploy error: infrastructure check of {name} version {version} failed: "
            f"{problem}; not rolled out"
        )

    def ask(batch: np.ndarray) -> dict[str, np.ndarray]:
        return infer_outputs(
            server.url, name, {"text": batch.astype(str)}, output_names=["label", "logits"]
        )

    started = time.monotonic()
    try:
        server = start_in_background(model_uri, serve_config)
    except ModelLoadError as exc:
        raise fail(f"the server refused the model ({' '.join(str(exc).split())})") from exc
    try:
        wait_ready(server.url, timeout_s=30)
        ready_s = time.monotonic() - started
        answers, sent_ms = [], []
        for batch in requests:
            sent = time.perf_counter()
            answers.append(ask(batch))
            sent_ms.append((time.perf_counter() - sent) * 1000)
        latency_ms = []
        for i in range(cfg.latency_requests):
            sent = time.perf_counter()
            ask(texts[i % len(texts) : i % len(texts) + 1])
            latency_ms.append((time.perf_counter() - sent) * 1000)
    except (InferenceClientError, TimeoutError) as exc:
        raise fail(f"the server did not answer test texts ({' '.join(str(exc).split())})") from exc
    finally:
        server.stop()

    max_error = 0.0
    for batch, answer in zip(requests, answers, strict=True):
        expected = local.run([GRAPH_OUTPUT], {GRAPH_INPUT: frontend.encode(batch)})[0]
        served = answer["logits"]
        if served.shape != expected.shape or not np.allclose(
            served, expected, atol=1e-5, rtol=1e-4
        ):
            raise fail(
                f"the server's logits for {len(batch)} test texts differ from the package's "
                f"model.onnx run in-process (shape {served.shape} vs {expected.shape})"
            )
        max_error = max(max_error, float(np.abs(served - expected).max()))
    predicted = np.concatenate([a["label"] for a in answers[1:]]).astype(str)
    truth = np.asarray(metadata["labels"], dtype=object)[labels].astype(str)
    served_accuracy = float((predicted == truth).mean())
    gap = abs(served_accuracy - evaluation_accuracy)
    if gap > cfg.accuracy_tolerance:
        raise fail(
            f"served accuracy on the {len(texts)} test texts is {served_accuracy:.4f} but "
            f"evaluation measured {evaluation_accuracy:.4f} on them (gap {gap:.4f} > allowed "
            f"{cfg.accuracy_tolerance:.4f}); the package does not serve the evaluated model"
        )
    return {
        "version": version,
        "ready_s": round(ready_s, 3),
        "smoke_examples": len(requests[0]),
        "smoke_latency_ms": round(sent_ms[0], 2),
        "predictions": answers[0]["label"].astype(str).tolist(),
        "test_examples": len(texts),
        "max_abs_error_vs_package": max_error,
        "served_accuracy": served_accuracy,
        "evaluation_accuracy": evaluation_accuracy,
        "score": "accuracy",
        "accuracy_gap": gap,
        "allowed_accuracy_gap": cfg.accuracy_tolerance,
        "latency": {
            "requests": len(latency_ms),
            "batch_size": 1,
            "p50_ms": round(float(np.percentile(latency_ms, 50)), 3),
            "p99_ms": round(float(np.percentile(latency_ms, 99)), 3),
            "mean_ms": round(float(np.mean(latency_ms)), 3),
        },
        "server_url": server.url,
    }
