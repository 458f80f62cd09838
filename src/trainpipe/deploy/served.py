"""What every infrastructure check of the deploy step does with the real server: start it on
the new version on a loopback port, send the test requests one at a time, time single-example
requests, stop it. The table check (``trainpipe.stages.deploy``) and the text check
(``trainpipe.deploy.text_check``) then compare the answers each in its own terms.

    served = serve_and_ask(model_uri, serve_config, requests, ask, single, 200, fail)
    served.answers[0], served.ready_s, served.latency["p99_ms"]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainpipe.errors import DeployError


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


@dataclass(frozen=True)
class ServedAnswers:
    answers: list[Any]
    """The server's answer to each request, in order."""
    ready_s: float
    smoke_latency_ms: float
    """How long the first request (the smoke request) took."""
    latency: dict
    """requests, batch_size (1), p50_ms, p99_ms, mean_ms of the single-example requests."""
    server_url: str

    def record(self, **check: Any) -> dict:
        """The check's report: what every check measures here, plus ``check``."""
        return {
            **check,
            "ready_s": round(self.ready_s, 3),
            "smoke_latency_ms": round(self.smoke_latency_ms, 2),
            "latency": self.latency,
            "server_url": self.server_url,
        }


def serve_and_ask(
    model_uri: str,
    serve_config,
    requests: list[Any],
    ask: Callable[[str, Any], Any],
    single: Callable[[int], Any],
    latency_requests: int,
    fail: Callable[[str], DeployError],
) -> ServedAnswers:
    """Serve ``model_uri`` with ``serve_config``; ``ask(url, request)`` each of ``requests``,
    then ``ask(url, single(i))`` ``latency_requests`` times. A model the server refuses, or a
    request it does not answer, raises ``fail(problem)``."""
    from trainpipe.serve.client import InferenceClientError, wait_ready
    from trainpipe.serve.errors import ModelLoadError
    from trainpipe.serve.server import start_in_background

    started = time.monotonic()
    try:
        server = start_in_background(model_uri, serve_config)
    except ModelLoadError as exc:
        raise fail(f"the server refused the model ({one_line(exc)})") from exc
    try:
        wait_ready(server.url, timeout_s=30)
        ready_s = time.monotonic() - started
        answers, smoke_ms = [], 0.0
        for batch in requests:
            sent = time.perf_counter()
            answers.append(ask(server.url, batch))
            smoke_ms = smoke_ms or (time.perf_counter() - sent) * 1000
        latency_ms = []
        for i in range(latency_requests):
            one = single(i)
            sent = time.perf_counter()
            ask(server.url, one)
            latency_ms.append((time.perf_counter() - sent) * 1000)
    except (InferenceClientError, TimeoutError) as exc:
        raise fail(f"the server did not answer test examples ({one_line(exc)})") from exc
    finally:
        server.stop()
    return ServedAnswers(
        answers=answers,
        ready_s=ready_s,
        smoke_latency_ms=smoke_ms,
        latency={
            "requests": len(latency_ms),
            "batch_size": 1,
            "p50_ms": round(float(np.percentile(latency_ms, 50)), 3),
            "p99_ms": round(float(np.percentile(latency_ms, 99)), 3),
            "mean_ms": round(float(np.mean(latency_ms)), 3),
        },
        server_url=server.url,
    )
