"""deploy: serve the new champion, send a real inference request, check the answer.

Locally the ONNX Runtime server starts on a loopback port (port 0: the OS picks a free one),
answers the smoke request and is stopped again. With deploy.target kubernetes or kserve the
cluster's server is rolled out instead (trainpipe.deploy.kubernetes), with rollback on failure.
"""

from __future__ import annotations

import time

import numpy as np

from trainpipe.errors import DeployError
from trainpipe.export.onnx_export import INPUT_NAME, OUTPUT_NAME, ort_session
from trainpipe.stages.context import make_context
from trainpipe.stages.data_access import load_validated
from trainpipe.stages.entry import stage_entry


@stage_entry
def run_deploy(config_json: str, run_id: str, model_uri: str, data_uri: str) -> str:
    ctx = make_context(config_json, run_id)
    if ctx.cfg.deploy.target != "local":
        from trainpipe.deploy.kubernetes import run_cluster_deploy

        return run_cluster_deploy(ctx, model_uri, data_uri)
    from trainpipe.serve.client import infer
    from trainpipe.serve.config import ServeConfig
    from trainpipe.serve.server import start_in_background

    cfg = ctx.cfg.deploy
    package = ctx.open(model_uri)
    metadata = package.get_json("model.json")
    examples = load_validated(ctx.open(data_uri)).test.x[: cfg.smoke_examples]
    expected = ort_session(package.get_bytes("model.onnx")).run(
        [OUTPUT_NAME], {INPUT_NAME: examples}
    )[0]

    started = time.monotonic()
    serve_config = ServeConfig(host="127.0.0.1", port=0, endpoint_url=ctx.cfg.storage.endpoint_url)
    try:
        server = start_in_background(model_uri, serve_config)
    except Exception as exc:  # the server names what failed: verification, loading, warm-up
        raise DeployError(f"deploy error: the server refused {model_uri}: {exc}") from exc
    try:
        ready_s = time.monotonic() - started
        sent = time.monotonic()
        answer = infer(server.url, metadata["name"], examples)
        latency_ms = (time.monotonic() - sent) * 1000
    finally:
        server.stop()
    if answer.shape != expected.shape or not np.allclose(answer, expected, atol=1e-5, rtol=1e-4):
        raise DeployError(
            f"deploy error: the server's answer for {len(examples)} test examples differs from "
            f"the exported model's (shape {answer.shape} vs {expected.shape}); not rolled out"
        )
    result = {
        "target": cfg.target,
        "model_uri": model_uri,
        "version": metadata["version"],
        "ready_s": round(ready_s, 3),
        "smoke_examples": len(examples),
        "smoke_latency_ms": round(latency_ms, 2),
        "predictions": answer.argmax(axis=1).tolist(),
    }
    writer = ctx.writer("deploy", inputs={"model": model_uri})
    writer.put_json("deploy.json", result)
    print(
        f"[deploy] version {metadata['version']} served at {server.url}: smoke inference of "
        f"{len(examples)} examples matched in {latency_ms:.1f} ms",
        flush=True,
    )
    return writer.commit(summary={k: v for k, v in result.items() if k != "predictions"})
