"""Serving benchmark: our OIP v2 server vs a plain per-request FastAPI + torch eager server.

    python -m benchmarks.serving            # 8 s per measurement
    python -m benchmarks.serving --quick    # 2 s per measurement, under a minute in all

The same small model (a CNN on 8x8 digit images, or ``--model mlp``) is served

  (a) by ``python -m trainpipe.serve`` with its default ServeConfig (ONNX Runtime, dynamic
      batching, one intra-op thread), from a model package written like the export stage does;
  (b) by a FastAPI app that the obvious way runs torch eager per request: a pydantic request
      model, a sync endpoint (FastAPI's thread pool), ``torch.inference_mode()``, one torch thread
      (the same CPU budget as ONNX Runtime gets in (a)), uvicorn without the access log as in (a).

Each server runs in its own process and is driven by the same load generator (asyncio with raw
HTTP/1.1 keep-alive connections, so the client costs as little CPU as possible on this shared
machine) sending the identical OIP v2 JSON request, at 1 and at 32 concurrent connections, each
run bounded by time and by request count. The upper bound is in-process ONNX Runtime throughput
(rows/s) at batch 32 with the server's session options: what the model costs without HTTP.

The last line is one JSON object: requests_per_s, p50_ms and p99_ms per server and concurrency,
the bound, ``ratio_vs_baseline`` and ``fraction_of_bound`` (both at 32 connections).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydantic import BaseModel

MODEL_NAME = "digits-classifier"
CONCURRENCY = (1, 32)
BOUND_BATCH = 32
GOAL_RATIO = 3.0
GOAL_FRACTION = 0.5


# -- the model -----------------------------------------------------------------------------------


def build_model(kind: str):
    import torch
    from torch import nn

    torch.manual_seed(0)
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    ).eval()


def export_package(kind: str, workdir: Path) -> tuple[str, Path]:
    """Write the model as a model package and as a torch state dict; returns (package URI, .pt)."""
    import torch

    from trainpipe.serve.model import TensorSpec, write_model_package
    from trainpipe.storage import open_store

    model = build_model(kind)
    program = torch.onnx.export(
        model,
        (torch.zeros(2, 1, 8, 8),),
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
        dynamo=True,
        opset_version=18,
        verbose=False,
    )
    onnx_path = workdir / "model.onnx"
    program.save(str(onnx_path), external_data=False)
    uri = write_model_package(
        open_store(f"file://{workdir}/store"),
        "package",
        onnx_path.read_bytes(),
        name=MODEL_NAME,
        version="1",
        inputs=[TensorSpec("input", "FP32", (-1, 1, 8, 8))],
        outputs=[TensorSpec("logits", "FP32", (-1, 10))],
        labels=[str(i) for i in range(10)],
        opset=18,
    )
    state_path = workdir / "model.pt"
    torch.save(model.state_dict(), state_path)
    return uri, state_path


# -- baseline server: FastAPI + torch eager, one request at a time ----------------------------


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class InferRequest(BaseModel):
    inputs: list[Tensor]


def run_baseline_server(kind: str, state_path: str) -> None:
    import torch
    import uvicorn
    from fastapi import FastAPI

    torch.set_num_threads(1)
    model = build_model(kind)
    model.load_state_dict(torch.load(state_path))

    app = FastAPI()

    @app.post("/v2/models/{name}/infer")
    def infer(name: str, request: InferRequest) -> dict:
        tensor = request.inputs[0]
        x = torch.tensor(tensor.data, dtype=torch.float32).reshape(tensor.shape)
        with torch.inference_mode():
            y = model(x)
        return {
            "model_name": name,
            "outputs": [
                {
                    "name": "logits",
                    "datatype": "FP32",
                    "shape": list(y.shape),
                    "data": y.ravel().tolist(),
                }
            ],
        }

    @app.get("/v2/health/ready")
    def ready() -> dict:
        return {"ready": True}

    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"baseline on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, access_log=False, log_level="warning"))
    server.run(sockets=[sock])


# -- load generator ------------------------------------------------------------------------------


async def _connection(
    host: str, port: int, request: bytes, deadline: float, budget: list[int], latencies: list
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


def http_request(url: str, body: bytes | None) -> bytes:
    """The raw HTTP/1.1 request: POST of ``body`` to the infer endpoint, or GET of live."""
    host = url.removeprefix("http://")
    if body is None:
        return f"GET /v2/health/live HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    return (
        f"POST /v2/models/{MODEL_NAME}/infer HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _load(
    url: str, body: bytes | None, connections: int, duration_s: float, max_requests: int
):
    host, port = url.removeprefix("http://").split(":")
    request = http_request(url, body)
    latencies: list[float] = []
    budget = [max_requests]
    started = time.perf_counter()
    deadline = started + duration_s
    await asyncio.gather(
        *(
            _connection(host, int(port), request, deadline, budget, latencies)
            for _ in range(connections)
        )
    )
    return latencies, time.perf_counter() - started


def drive(
    url: str, body: bytes | None, connections: int, duration_s: float, max_requests: int
) -> dict:
    """Closed-loop load: ``connections`` keep-alive clients, each sending the next request when
    the previous answer arrives, for ``duration_s`` or ``max_requests`` in all."""
    runner = _event_loop_runner()
    runner(_load(url, body, connections, min(0.5, duration_s / 4), 10**9))  # warm-up
    latencies, wall_s = runner(_load(url, body, connections, duration_s, max_requests))
    ms = np.asarray(latencies) * 1000.0
    return {
        "requests_per_s": round(len(latencies) / wall_s, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "requests": len(latencies),
    }


def _event_loop_runner():
    try:
        import uvloop

        return lambda coroutine: uvloop.run(coroutine)
    except ImportError:
        return asyncio.run


# -- processes -----------------------------------------------------------------------------------


@contextlib.contextmanager
def server_process(argv: list[str], marker: str) -> Iterator[str]:
    """Start a server process, read its URL from the line that contains ``marker``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        line = process.stdout.readline()
        if marker not in line:
            raise RuntimeError(f"server did not start: {argv} printed {line!r}")
        url = "http://" + line.split("http://", 1)[1].split()[0]
        from trainpipe.serve.client import wait_ready

        wait_ready(url, timeout_s=60)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def bound_rows_per_s(package_uri: str, duration_s: float) -> float:
    """In-process ONNX Runtime at batch 32 with the server's session options (rows/s)."""
    from trainpipe.serve.config import ServeConfig
    from trainpipe.serve.model import load_model_package

    model = load_model_package(package_uri, ServeConfig())
    try:
        x = {"input": np.random.default_rng(0).random((BOUND_BATCH, 1, 8, 8), dtype=np.float32)}
        for _ in range(50):
            model.run(x)
        calls = 0
        started = time.perf_counter()
        while time.perf_counter() - started < duration_s:
            for _ in range(50):
                model.run(x)
            calls += 50
        return calls * BOUND_BATCH / (time.perf_counter() - started)
    finally:
        model.close()


def mean_batch_rows(url: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        for key in ("trainpipe_serve_batch_size_sum", "trainpipe_serve_batch_size_count"):
            if line.startswith(key + "{"):
                values[key] = float(line.rsplit(" ", 1)[1])
    return round(
        values["trainpipe_serve_batch_size_sum"] / values["trainpipe_serve_batch_size_count"], 2
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 s per measurement")
    parser.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    parser.add_argument("--duration-s", type=float, default=None)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--baseline-server", metavar="STATE_DICT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_server:
        run_baseline_server(args.model, args.baseline_server)
        return 0
    duration_s = args.duration_s or (2.0 if args.quick else 8.0)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        package_uri, state_path = export_package(args.model, Path(tmp))
        x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, 1, 8, 8],
                        "datatype": "FP32",
                        "data": x.ravel().tolist(),
                    }
                ]
            }
        ).encode()
        results: dict = {}
        ours_argv = [sys.executable, "-m", "trainpipe.serve", "--model", package_uri, "--port", "0"]
        with server_process(ours_argv, "trainpipe serve:") as url:
            results["ours"] = {
                f"c{c}": drive(url, body, c, duration_s, args.max_requests) for c in CONCURRENCY
            }
            results["ours"]["mean_batch_rows"] = mean_batch_rows(url)
            # The same server answering GET /v2/health/live: what its HTTP stack alone sustains.
            http_only = drive(url, None, 32, duration_s, args.max_requests)
        baseline_argv = [
            sys.executable,
            "-m",
            "benchmarks.serving",
            "--model",
            args.model,
            "--baseline-server",
            str(state_path),
        ]
        with server_process(baseline_argv, "baseline on") as url:
            results["baseline"] = {
                f"c{c}": drive(url, body, c, duration_s, args.max_requests) for c in CONCURRENCY
            }
        bound = bound_rows_per_s(package_uri, duration_s)

    ours_32 = results["ours"]["c32"]["requests_per_s"]
    summary = {
        "benchmark": "serving",
        "model": args.model,
        "quick": args.quick,
        "duration_s_per_run": duration_s,
        "ours": results["ours"],
        "baseline_fastapi_torch_eager": results["baseline"],
        "bound_inprocess_ort": {"requests_per_s": round(bound, 1), "batch_size": BOUND_BATCH},
        "ratio_vs_baseline": round(ours_32 / results["baseline"]["c32"]["requests_per_s"], 2),
        "fraction_of_bound": round(ours_32 / bound, 4),
        "ours_http_only_c32": http_only,
        "fraction_of_http_only": round(ours_32 / http_only["requests_per_s"], 2),
        "goals": {"ratio_vs_baseline": GOAL_RATIO, "fraction_of_bound": GOAL_FRACTION},
        "wall_s": round(time.monotonic() - started, 1),
    }
    summary["goals_met"] = {
        "ratio_vs_baseline": summary["ratio_vs_baseline"] >= GOAL_RATIO,
        "fraction_of_bound": summary["fraction_of_bound"] >= GOAL_FRACTION,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
