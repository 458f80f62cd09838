"""deploy: an infrastructure check of the new champion in the real server, then the rollout.

The check (TFX InfraValidator's idea) runs the OIP v2 server on the new version on a loopback
port (port 0: the OS picks a free one) and requires, in order:

1. the model loads, verifies and warms up, and /v2/health/ready answers 200;
2. a smoke request of ``deploy.smoke_examples`` test examples, and then the whole test split,
   come back equal to the package's model.onnx run in-process (same graph optimization level);
   the split is read batch by batch (a sharded one streams), keeping only the answers;
3. the served accuracy on the test split is the evaluate stage's accuracy on the same examples
   (``metrics.json`` of the registry version) within ``deploy.accuracy_tolerance``;
4. latency of ``deploy.latency_requests`` single-example requests (p50, p99) is measured.

Any failure ends the stage with one line and nothing is rolled out. Locally the rollout is the
champion pointer register already set: the server is stopped and deploy.json is the report.

With deploy.target kubernetes or kserve, the cluster's server is then rolled out to the new
version (``trainpipe.deploy.kubernetes.rollout``), smoke-tested there, and rolled back on failure.
"""

from __future__ import annotations

import numpy as np

from trainpipe.data.batches import split_batches
from trainpipe.data.streaming import materialize
from trainpipe.deploy.served import serve_and_ask
from trainpipe.errors import DeployError
from trainpipe.evaluate.metrics import regression_metrics
from trainpipe.export.onnx_export import INPUT_NAME, OUTPUT_NAME, ort_session
from trainpipe.export.serving_graph import served_feeds
from trainpipe.stages.context import StageContext, make_context


def _evaluation(package, model_uri: str, examples: int) -> dict:
    if "metrics.json" not in package.names():
        raise DeployError(
            f"deploy error: {model_uri} has no metrics.json, so the served answers cannot be "
            "compared with evaluation; deploy a registry version (register copies the metrics)"
        )
    metrics = package.get_json("metrics.json")
    if metrics.get("num_examples") != examples:
        raise DeployError(
            f"deploy error: evaluation scored {metrics.get('num_examples')} test examples but "
            f"the data has {examples}; deploy with the data_uri the evaluated run used"
        )
    return metrics


def infra_check(ctx: StageContext, model_uri: str, data_uri: str) -> dict:
    """Serve ``model_uri`` on loopback and check it; raises DeployError naming what failed."""
    from trainpipe.serve.client import infer_outputs
    from trainpipe.serve.config import ServeConfig

    cfg = ctx.cfg.deploy
    package = ctx.open(model_uri)
    metadata = package.get_json("model.json")
    dataset = ctx.load_data(data_uri)
    test = dataset.test
    evaluation = _evaluation(package, model_uri, len(test))
    first = materialize(test, cfg.smoke_examples).x[: cfg.smoke_examples]
    version = metadata["version"]
    local = ort_session(
        package.get_bytes("model.onnx"), metadata.get("graph_optimization_level") or "all"
    )
    serve_config = ServeConfig(
        host="127.0.0.1", port=0, endpoint_url=ctx.cfg.storage.endpoint_url, log_level="warning"
    )
    rows = serve_config.max_batch_size
    labels: list[np.ndarray] = []

    def requests():
        """The smoke request, then the whole test split batch by batch (a sharded one
        streams): only the answers and the labels are kept."""
        yield first
        for x, y in split_batches(test, rows):
            labels.append(y)
            yield x

    def feeds(rows: np.ndarray) -> dict[str, np.ndarray]:
        return served_feeds(dataset.preprocess, rows)

    max_error = 0.0

    def ask(url: str, rows: np.ndarray) -> np.ndarray:
        outputs = infer_outputs(url, metadata["name"], feeds(rows), output_names=[OUTPUT_NAME])
        return outputs[OUTPUT_NAME]

    def checked(url: str, batch: np.ndarray) -> np.ndarray:
        """The server's answer for ``batch``, compared with the package run in-process.
        Requests go one at a time, so the server runs each exactly as sent: the in-process
        answer for the same rows is bit-comparable, even for int8 graphs whose activation
        scale is per call."""
        nonlocal max_error
        answer = ask(url, batch)
        expected = local.run([OUTPUT_NAME], feeds(batch))[0]
        if answer.shape != expected.shape or not np.allclose(
            answer, expected, atol=1e-5, rtol=1e-4
        ):
            raise fail(
                f"the server's answer for {len(batch)} test examples differs from the package's "
                f"model.onnx run in-process (shape {answer.shape} vs {expected.shape})"
            )
        max_error = max(max_error, float(np.abs(answer - expected).max()))
        return answer

    def fail(problem: str) -> DeployError:
        return DeployError(
            f"deploy error: infrastructure check of {metadata['name']} version {version} "
            f"failed: {problem}; not rolled out"
        )

    served_answers = serve_and_ask(
        model_uri,
        serve_config,
        requests(),
        checked,
        lambda i: first[i % len(first)][None],
        cfg.latency_requests,
        fail,
    )
    answers = served_answers.answers
    served, y = np.concatenate(answers[1:]), np.concatenate(labels)
    # "accuracy" is the headline score: R^2 for a regression model.
    score = "r2" if dataset.regression else "accuracy"
    if dataset.regression:
        served_accuracy = regression_metrics(y, served[:, 0])["r2"]
    else:
        served_accuracy = float((served.argmax(1) == y).mean())
    allowed = cfg.accuracy_tolerance
    if metadata.get("quantized"):
        allowed += metadata["quantization"]["max_accuracy_drop"]
    gap = abs(served_accuracy - evaluation[score])
    if gap > allowed:
        raise fail(
            f"served {score} on the {len(test)} test examples is {served_accuracy:.4f} but "
            f"evaluation measured {evaluation[score]:.4f} on them (gap {gap:.4f} > allowed "
            f"{allowed:.4f}); the package does not serve the evaluated model"
        )
    return served_answers.record(
        version=version,
        smoke_examples=len(first),
        predictions=answers[0].argmax(axis=1).tolist(),
        test_examples=len(test),
        max_abs_error_vs_package=max_error,
        served_accuracy=served_accuracy,
        evaluation_accuracy=evaluation[score],
        score=score,
        accuracy_gap=gap,
        allowed_accuracy_gap=allowed,
    )


def run_cluster_deploy(
    ctx: StageContext,
    model_uri: str,
    data_uri: str,
    *,
    infra_check: dict | None = None,
    client=None,
    poll_s=2.0,
) -> str:
    """The deploy stage for targets kubernetes and kserve; returns the committed result's URI.

    ``infra_check`` is the local infrastructure check's report, stored beside the rollout's."""
    from trainpipe.deploy.kubernetes import rollout
    from trainpipe.registry import Registry

    cfg = ctx.cfg
    package = ctx.open(model_uri)
    metadata = package.get_json("model.json")
    smoke = cfg.deploy.smoke_examples
    examples = materialize(ctx.load_data(data_uri).test, smoke).x[:smoke]
    expected = ort_session(package.get_bytes("model.onnx")).run(
        [OUTPUT_NAME], {INPUT_NAME: examples}
    )[0]
    result = rollout(
        cfg.deploy,
        model_uri=model_uri,
        model_name=metadata["name"],
        version=str(metadata["version"]),
        examples=examples,
        expected=expected,
        registry=Registry(ctx.store, cfg.registry.model_name),
        # The served model may run on other hardware; the export's parity tolerance applies.
        tolerance=(cfg.export.parity_atol, cfg.export.parity_rtol),
        client=client,
        poll_s=poll_s,
    )
    record = {**result.__dict__, "version": metadata["version"], "smoke_examples": len(examples)}
    if infra_check is not None:
        record["infra_check"] = {k: v for k, v in infra_check.items() if k != "predictions"}
    writer = ctx.writer("deploy", inputs={"model": model_uri})
    writer.put_json("deploy.json", record)
    print(
        f"[deploy] version {metadata['version']} rolled out on {result.name} in "
        f"{result.rollout_s:.1f} s; smoke inference of {len(examples)} examples matched in "
        f"{result.smoke_latency_ms:.1f} ms",
        flush=True,
    )
    return writer.commit(summary={k: v for k, v in record.items() if k != "predictions"})


def text_check(ctx: StageContext, model_uri: str, data_uri: str) -> dict:
    """The infrastructure check of a text classifier on the test texts lm_data stored."""
    from trainpipe.deploy.text_check import text_infra_check
    from trainpipe.stages.lm_context import labelled_text

    stored = labelled_text(ctx.open(data_uri))
    texts = stored.texts["test"]
    evaluation = _evaluation(ctx.open(model_uri), model_uri, len(texts))
    return text_infra_check(
        model_uri,
        texts,
        stored.labels["test"],
        evaluation["accuracy"],
        ctx.cfg.deploy,
        endpoint_url=ctx.cfg.storage.endpoint_url,
    )


def run_deploy(config_json: str, run_id: str, model_uri: str, data_uri: str) -> str:
    ctx = make_context(config_json, run_id)
    if "text" in ctx.open(model_uri).get_json("model.json"):
        check = text_check(ctx, model_uri, data_uri)
    else:
        check = infra_check(ctx, model_uri, data_uri)
    if ctx.cfg.deploy.target != "local":
        # The new version passed the check; now roll the cluster's server out to it.
        return run_cluster_deploy(ctx, model_uri, data_uri, infra_check=check)
    result = {"target": ctx.cfg.deploy.target, "model_uri": model_uri, **check}
    writer = ctx.writer("deploy", inputs={"model": model_uri})
    writer.put_json("deploy.json", result)
    latency = check["latency"]
    print(
        f"[deploy] infrastructure check passed for version {check['version']} at "
        f"{check['server_url']}: ready in {check['ready_s']} s, smoke inference of "
        f"{check['smoke_examples']} examples matched in {check['smoke_latency_ms']:.1f} ms, "
        f"accuracy {check['served_accuracy']:.4f} on {check['test_examples']} test examples "
        f"(evaluation {check['evaluation_accuracy']:.4f}), latency p50 {latency['p50_ms']} ms "
        f"p99 {latency['p99_ms']} ms over {latency['requests']} requests; the champion pointer "
        "is live (set by register) and the check server is stopped",
        flush=True,
    )
    summary = {k: v for k, v in result.items() if k not in ("predictions", "latency")}
    summary.update(latency_p50_ms=latency["p50_ms"], latency_p99_ms=latency["p99_ms"])
    return writer.commit(summary=summary)
