"""Prometheus metrics of one server, in its own registry (several servers can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "trainpipe_serve_requests",
            "Inference requests answered, by model and HTTP status code.",
            ["model", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "trainpipe_serve_errors",
            "Requests answered with an error, by model and error class.",
            ["model", "error"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "trainpipe_serve_request_latency_seconds",
            "Time from the start of an inference handler to its response, successful requests.",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "trainpipe_serve_batch_size",
            "Rows per ONNX Runtime call after dynamic batching.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_run = Histogram(
            "trainpipe_serve_batch_run_seconds",
            "Duration of one ONNX Runtime call.",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.model_loaded = Gauge(
            "trainpipe_serve_model_loaded",
            "1 for the model version being served (one series per model).",
            ["model", "version"],
            registry=self.registry,
        )
        self.model_loads = Counter(
            "trainpipe_serve_model_loads",
            "Model versions loaded, verified and warmed up, by outcome (ok or refused).",
            ["model", "outcome"],
            registry=self.registry,
        )

    def batch_observer(self, model: str):
        """``on_batch`` callback for a model's batcher."""
        batch_size = self.batch_size.labels(model=model)
        batch_run = self.batch_run.labels(model=model)

        def observe(rows: int, run_s: float) -> None:
            batch_size.observe(rows)
            batch_run.observe(run_s)

        return observe

    def set_loaded(self, model: str, version: str, previous: tuple[str, str] | None) -> None:
        """Mark (model, version) as served and drop the series of the ``previous`` one."""
        if previous is not None and previous != (model, version):
            self.model_loaded.remove(*previous)
        self.model_loaded.labels(model=model, version=version).set(1)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
