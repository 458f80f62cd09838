"""Serving benchmark: trainpipe's OIP v2 server against the servers Kubeflow users would pick.

    python -m benchmarks.serving            # 2 interleaved rounds, 8 s per measurement
    python -m benchmarks.serving --quick    # 2 rounds, 1.5 s per measurement (development only)

The same small model (a CNN on 8x8 digit images, or ``--model mlp``), exported once to one ONNX
file, is served by

  (a) ``python -m trainpipe.serve`` with its default ServeConfig (dynamic batching, one intra-op
      thread), from a model package written like the export stage does;
  (b) a FastAPI + ONNX Runtime app (an async endpoint, JSON parsed by FastAPI);
  (c) KServe's Python ModelServer with a custom ``kserve.Model``;
  (d) MLServer with a custom ``MLModel`` (``parallel_workers: 0``);

(b)-(d) wrap the same ONNX Runtime session with the same options as (a) (one intra-op thread, no
spinning, all graph optimizations); see benchmarks/serving_competitors.py. KServe and MLServer
pin their own versions of FastAPI, uvicorn and pydantic, so they run from their own virtualenvs,
created on first use under ``--venv-dir`` (pip installs ``COMPETITOR_VENVS``); the project's
environment is never touched.

All servers run at once, each in its own process, and are measured in interleaved rounds (every
round visits every server, in a rotated order), so a change in machine load hits all of them
alike. Each measurement is the same closed-loop load generator (asyncio, raw HTTP/1.1 keep-alive
connections, the identical OIP v2 JSON request with an ``id`` and a JSON Content-Type) at 1 and
at 32 connections, bounded by time and by request count. No server writes a line per request
(trainpipe's and MLServer's access logs are off by default, FastAPI's app turns uvicorn's off,
and KServe's uvicorn access logger is disabled in its wrapper), so none pays for logging.

The last line is one JSON object: per server and concurrency the median over rounds of
requests/s, p50 and p99 latency, their spread (min and max over rounds) and every round;
``ratios`` of trainpipe's requests/s to each other server's; ``goals`` and ``goal_met``: at 32
connections at least 1.5x the requests/s of each of KServe and MLServer, at 1 connection more
than each of them, and a p99 at or below KServe's at both (FastAPI + ONNX Runtime is reported as
the floor a hand-written server reaches, not part of the goal).
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
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

MODEL_NAME = "digits-classifier"
CONCURRENCY = (1, 32)
BOUND_BATCH = 32
GOAL_RATIO_C32 = 1.5
GOAL_RIVALS = ("kserve", "mlserver")
"""The servers the goal is set against (the ones Kubeflow users would pick instead)."""
COMPETITORS_SCRIPT = Path(__file__).with_name("serving_competitors.py")
COMPETITOR_VENVS = {
    # venv name: (packages, module that proves the install works)
    "bench-kserve": (["kserve==0.21.0", "onnxruntime", "numpy"], "kserve"),
    "bench-mlserver": (["mlserver==1.7.1", "onnxruntime", "numpy"], "mlserver"),
}
COMPETITORS = {
    # server: (venv, marker in its first line)
    "fastapi_ort": ("bench-kserve", "competitor on"),
    "kserve": ("bench-kserve", "competitor on"),
    "mlserver": ("bench-mlserver", "competitor on"),
}


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
    """Write the model as a model package and as one .onnx file; returns (package URI, .onnx)."""
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
    return uri, onnx_path


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
        # Keep reading what the server prints (KServe logs every request): a full pipe would
        # block its writes and stall the server mid-benchmark.
        threading.Thread(target=process.stdout.read, daemon=True).start()
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


def ensure_venv(root: Path, name: str) -> Path:
    """The python of competitor virtualenv ``name`` under ``root``, created on first use."""
    packages, module = COMPETITOR_VENVS[name]
    python = root / name / "bin" / "python"
    check = [str(python), "-c", f"import {module}, onnxruntime"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"creating {root / name} with {' '.join(packages)} (once)", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(root / name)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *packages],
        check=True,
        stdout=sys.stderr,
    )
    return python


def _median(values: list[float]) -> float:
    return round(float(np.median(values)), 3)


def summarize(rounds: list[dict]) -> dict:
    """Per server and concurrency: the median over rounds of each figure, its spread (min, max)
    over rounds, and every round."""
    summary: dict = {}
    for server in rounds[0]:
        summary[server] = {}
        for c in CONCURRENCY:
            runs = [r[server][f"c{c}"] for r in rounds]
            figures = ("requests_per_s", "p50_ms", "p99_ms")
            summary[server][f"c{c}"] = {
                **{key: _median([run[key] for run in runs]) for key in figures},
                "spread": {
                    key: [min(run[key] for run in runs), max(run[key] for run in runs)]
                    for key in figures
                },
                "rounds": runs,
            }
    return summary


def verdict(summary: dict) -> tuple[dict, dict, bool | None]:
    """trainpipe's requests/s over each other server's, each goal, and whether all are met
    (None when KServe or MLServer was not measured)."""
    ours = summary["trainpipe"]
    ratios = {
        f"{server}_c{c}": round(
            ours[f"c{c}"]["requests_per_s"] / summary[server][f"c{c}"]["requests_per_s"], 2
        )
        for server in summary
        if server != "trainpipe"
        for c in CONCURRENCY
    }
    rivals = [server for server in GOAL_RIVALS if server in summary]
    goals = {
        f"c32_at_least_{GOAL_RATIO_C32}x_" + "_and_".join(rivals): all(
            ratios[f"{s}_c32"] >= GOAL_RATIO_C32 for s in rivals
        ),
        "c1_ahead_of_" + "_and_".join(rivals): all(ratios[f"{s}_c1"] > 1.0 for s in rivals),
    }
    if "kserve" in summary:
        for c in CONCURRENCY:
            goals[f"c{c}_p99_at_or_below_kserve"] = (
                ours[f"c{c}"]["p99_ms"] <= summary["kserve"][f"c{c}"]["p99_ms"]
            )
    complete = set(GOAL_RIVALS) <= set(summary)
    return ratios, goals, all(goals.values()) if complete else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1.5 s per measurement")
    parser.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    parser.add_argument("--duration-s", type=float, default=None, help="per measurement")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument(
        "--venv-dir",
        type=Path,
        default=Path.home() / ".cache" / "trainpipe-bench",
        help="where the KServe and MLServer virtualenvs live (created on first use)",
    )
    parser.add_argument(
        "--servers",
        default=",".join(["trainpipe", *COMPETITORS]),
        help="comma-separated subset of trainpipe," + ",".join(COMPETITORS),
    )
    args = parser.parse_args(argv)
    duration_s = args.duration_s or (1.5 if args.quick else 8.0)
    rounds = args.rounds or 2
    servers = [s for s in args.servers.split(",") if s]

    started = time.monotonic()
    pythons = {
        name: ensure_venv(args.venv_dir, name)
        for name in {COMPETITORS[s][0] for s in servers if s in COMPETITORS}
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        package_uri, onnx_path = export_package(args.model, Path(tmp))
        x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
        body = json.dumps(
            {
                "id": "bench",
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, 1, 8, 8],
                        "datatype": "FP32",
                        "data": x.ravel().tolist(),
                    }
                ],
            }
        ).encode()
        urls: dict[str, str] = {}
        for server in servers:
            if server == "trainpipe":
                argv_ = [
                    sys.executable,
                    "-m",
                    "trainpipe.serve",
                    "--model",
                    package_uri,
                    "--port",
                    "0",
                ]
                urls[server] = stack.enter_context(server_process(argv_, "trainpipe serve:"))
                continue
            venv, marker = COMPETITORS[server]
            kind = "fastapi" if server == "fastapi_ort" else server
            argv_ = [
                str(pythons[venv]),
                str(COMPETITORS_SCRIPT),
                kind,
                "--model",
                str(onnx_path),
                "--workdir",
                tmp,
            ]
            urls[server] = stack.enter_context(server_process(argv_, marker))
        measured: list[dict] = []
        for index in range(rounds):
            order = servers[index % len(servers) :] + servers[: index % len(servers)]
            measured.append(
                {
                    server: {
                        f"c{c}": drive(urls[server], body, c, duration_s, args.max_requests)
                        for c in CONCURRENCY
                    }
                    for server in order
                }
            )
        mean_batch = mean_batch_rows(urls["trainpipe"]) if "trainpipe" in urls else None
        # trainpipe's server answering GET /v2/health/live: what its HTTP stack alone sustains.
        http_only = (
            drive(urls["trainpipe"], None, 32, duration_s, args.max_requests)
            if "trainpipe" in urls
            else None
        )
        bound = bound_rows_per_s(package_uri, duration_s)

    summary = summarize(measured)
    result: dict = {
        "benchmark": "serving",
        "model": args.model,
        "quick": args.quick,
        "rounds": rounds,
        "duration_s_per_run": duration_s,
        "servers": summary,
        "trainpipe_mean_batch_rows": mean_batch,
        "trainpipe_http_only_c32": http_only,
        "bound_inprocess_ort": {"rows_per_s": round(bound, 1), "batch_size": BOUND_BATCH},
    }
    if "trainpipe" in summary and len(summary) > 1:
        result["ratios"], result["goals"], result["goal_met"] = verdict(summary)
    result["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
