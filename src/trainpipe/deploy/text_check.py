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

import numpy as np

from trainpipe.artifacts import ArtifactSet
from trainpipe.deploy.config import DeployConfig
from trainpipe.deploy.served import serve_and_ask
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
    from trainpipe.serve.client import infer_outputs
    from trainpipe.serve.config import ServeConfig
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

    def ask(url: str, batch: np.ndarray) -> dict[str, np.ndarray]:
        # Text travels as OIP BYTES (JSON strings), as a client sends it.
        return infer_outputs(
            url, name, {"text": batch.astype(str)}, output_names=["label", "logits"]
        )

    served_answers = serve_and_ask(
        model_uri,
        serve_config,
        requests,
        ask,
        lambda i: texts[i % len(texts) : i % len(texts) + 1],
        cfg.latency_requests,
        fail,
    )
    answers = served_answers.answers

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
    return served_answers.record(
        version=version,
        smoke_examples=len(requests[0]),
        predictions=answers[0]["label"].astype(str).tolist(),
        test_examples=len(texts),
        max_abs_error_vs_package=max_error,
        served_accuracy=served_accuracy,
        evaluation_accuracy=evaluation_accuracy,
        score="accuracy",
        accuracy_gap=gap,
        allowed_accuracy_gap=cfg.accuracy_tolerance,
    )
