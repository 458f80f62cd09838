"""Typed configuration of the model server (``trainpipe serve``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ServeConfig(BaseModel):
    """Everything the OIP v2 server can be told; defaults suit a small model on a small CPU pod."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    """Interface to bind. Loopback by default; containers pass ``0.0.0.0``."""

    port: int = Field(default=8080, ge=0, le=65535)
    """TCP port to listen on; 0 picks a free port (tests, infra-validation in the deploy stage)."""

    max_batch_size: int = Field(default=64, ge=1)
    """Most rows one ONNX Runtime call sees. Dynamic batching merges concurrent requests up to this
    many rows, and a single request with a larger batch dimension is refused with 400."""

    max_batch_delay_ms: float = Field(default=2.0, ge=0.0)
    """How long the first request of a batch may wait for others to join it, when batches run in
    the worker thread (see ``inline_run_max_ms``). The wait is skipped when no other inference
    request is in flight, so a lone client never pays it."""

    inline_run_max_ms: float = Field(default=1.0, ge=0.0)
    """Model calls that lately took at most this long run on the event loop thread instead of the
    batcher's worker thread: a lone request runs at once in its handler, concurrent ones as one
    batch as soon as the loop has read them, with no thread switch and no wait. Slower calls run
    in the worker, so the server keeps reading requests while the model computes. 0 always uses
    the worker."""

    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest accepted request body; larger bodies get 413 before they are parsed."""

    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    """Largest accepted request line plus headers; larger heads get 431."""

    header_timeout_s: float = Field(default=10.0, gt=0.0)
    """Time a client has to send a request's line and headers, from connecting (or from the
    previous response on a kept-alive connection); slower clients get 408 and are closed."""

    body_timeout_s: float = Field(default=10.0, gt=0.0)
    """Longest pause between two pieces of a request body; a stalled upload gets 408."""

    poll_interval_s: float = Field(default=10.0, gt=0.0)
    """How often a server following a registry model re-reads ``champion.json``."""

    allow_non_finite: bool = False
    """Accept NaN and +/-inf in input tensors. Off by default: they usually mean broken
    preprocessing, and the model's answer for them is meaningless."""

    intra_op_threads: int = Field(default=1, ge=0)
    """ONNX Runtime threads per call; 0 lets ORT use every core. One is fastest for small models
    at batch sizes up to a few hundred rows, and leaves a core for the HTTP event loop."""

    graph_optimization_level: Literal["disable", "basic", "extended", "all"] | None = None
    """ONNX Runtime graph optimizations applied when the session is created. None applies the
    level the model package recommends (``graph_optimization_level`` in model.json, chosen by
    timing at export), or ``all`` for a package that records none."""

    warmup_iterations: int = Field(default=3, ge=1)
    """Inference calls at batch 1 and at ``max_batch_size`` run on zeros before a model is
    reported ready, so the first real request does not pay one-time allocation costs."""

    endpoint_url: str | None = None
    """S3 endpoint for ``s3://`` model URIs; None uses AWS_ENDPOINT_URL or AWS itself."""

    access_log: bool = False
    """Log one line per HTTP request (uvicorn's access log). Off: /metrics counts requests, and
    the log line costs about a tenth of a small model's request time."""

    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    """Level of the server's and uvicorn's loggers."""

    @field_validator("host")
    @classmethod
    def _host_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("host is empty; use 127.0.0.1 (local) or 0.0.0.0 (all interfaces)")
        return value
