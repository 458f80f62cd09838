"""The ASGI application: Open Inference Protocol v2 REST endpoints plus /metrics.

    GET  /v2/health/live                        200 while the process serves HTTP
    GET  /v2/health/ready                       200 once a model is loaded and warmed up, else 503
    GET  /v2                                    server metadata
    GET  /v2/models/{name}[/versions/{v}]       model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready 200 when that model (version) answers requests
    POST /v2/models/{name}[/versions/{v}]/infer inference (JSON tensors or binary extension)
    GET  /metrics                               Prometheus exposition

Every error leaves through :func:`_error_response`, the one place that turns a domain error into
an HTTP status (from ``errors.HTTP_STATUS``) and ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from trainpipe import __version__
from trainpipe.serve.config import ServeConfig
from trainpipe.serve.errors import (
    ClientClosed,
    PayloadTooLarge,
    RequestTimeout,
    ServeError,
    UnsupportedMediaType,
    http_status,
)
from trainpipe.serve.metrics import CONTENT_TYPE, ServeMetrics
from trainpipe.serve.model import LoadedModel
from trainpipe.serve.protocol import HEADER_LENGTH, encode_infer_response, parse_infer_request
from trainpipe.serve.repository import ModelRepository

log = logging.getLogger("trainpipe.serve")

SERVER_NAME = "trainpipe"
EXTENSIONS = ["binary_tensor_data", "model_repository_follow_champion"]


def _json(obj: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status_code, media_type="application/json")


def create_app(
    repository: ModelRepository, config: ServeConfig, metrics: ServeMetrics
) -> Starlette:
    """The Starlette app answering for ``repository``'s current model."""

    def model_label(request: Request) -> str:
        # Only the served model's name becomes a label value: arbitrary names from clients
        # would grow the metric series without bound.
        current = repository.current
        name = request.path_params.get("name")
        return name if current is not None and name == current.name else "_other"

    def _error_response(request: Request, exc: Exception) -> Response:
        if isinstance(exc, ClientDisconnect):
            # Nobody is left to answer: count it as its own outcome, no traceback, no 500.
            exc = ClientClosed("the client closed the connection before its request was answered")
            log.debug("%s %s: %s", request.method, request.url.path, exc)
        if isinstance(exc, ServeError):
            status = http_status(exc)
            message = str(exc)
        elif isinstance(exc, HTTPException):
            status = exc.status_code
            message = (
                f"no endpoint {request.method} {request.url.path}; the OIP v2 endpoints are "
                "under /v2 (see docs/serving.md)"
                if status in (404, 405)
                else str(exc.detail)
            )
        else:
            status = 500
            message = f"internal error ({type(exc).__name__}: {exc}); see the server log"
            log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        if request.url.path.endswith("/infer"):
            label = model_label(request)
            outcome = "client_closed" if isinstance(exc, ClientClosed) else str(status)
            metrics.requests.labels(model=label, status=outcome).inc()
            metrics.errors.labels(model=label, error=type(exc).__name__).inc()
        response = _json({"error": message}, status)
        if isinstance(exc, RequestTimeout):
            response.headers["connection"] = "close"  # the rest of the body may never come
        return response

    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def ready(request: Request) -> Response:
        is_ready = repository.current is not None
        return _json({"ready": is_ready}, 200 if is_ready else 503)

    async def server_metadata(request: Request) -> Response:
        return _json({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})

    def lookup(request: Request) -> LoadedModel:
        return repository.get(request.path_params["name"], request.path_params.get("version"))

    async def model_metadata(request: Request) -> Response:
        metadata = lookup(request).metadata
        return _json(
            {
                "name": metadata.name,
                "versions": [metadata.version],
                "platform": metadata.platform,
                "inputs": [spec.to_json() for spec in metadata.inputs],
                "outputs": [spec.to_json() for spec in metadata.outputs],
                "parameters": {"labels": list(metadata.labels), "sha256": metadata.sha256},
            }
        )

    async def model_ready(request: Request) -> Response:
        model = lookup(request)
        return _json({"name": model.name, "version": model.version, "ready": True})

    async def read_body(request: Request) -> bytes:
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise UnsupportedMediaType(
                f"Content-Encoding {encoding!r} is not supported; send the body uncompressed "
                "(Content-Encoding identity or none)"
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
            raise PayloadTooLarge(
                f"the request body has {declared} bytes, over max_body_bytes "
                f"{config.max_body_bytes}; send smaller batches"
            )
        chunks = []
        size = 0
        loop = asyncio.get_running_loop()
        try:
            # One timer for the whole read, pushed back after every chunk: an idle timeout
            # without a task per chunk on the hot path.
            async with asyncio.timeout(config.body_timeout_s) as deadline:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > config.max_body_bytes:
                        raise PayloadTooLarge(
                            f"the request body is over max_body_bytes {config.max_body_bytes}; "
                            "send smaller batches"
                        )
                    chunks.append(chunk)
                    deadline.reschedule(loop.time() + config.body_timeout_s)
        except TimeoutError:
            raise RequestTimeout(
                f"the request body stalled for over {config.body_timeout_s:g} s after "
                f"{size} bytes; send the whole body without pausing"
            ) from None
        return b"".join(chunks)

    async def infer(request: Request) -> Response:
        started = time.perf_counter()
        model = lookup(request)
        batcher = model.batcher
        batcher.announce()
        try:
            body = await read_body(request)
            parsed = parse_infer_request(
                body,
                request.headers.get(HEADER_LENGTH),
                model.metadata,
                max_batch_size=config.max_batch_size,
                allow_non_finite=config.allow_non_finite,
            )
        except BaseException:
            batcher.withdraw()
            raise
        outputs = await batcher.infer(parsed.feeds, parsed.rows)
        content, header_length = encode_infer_response(model.metadata, parsed, outputs)
        if header_length is None:
            response = Response(content, media_type="application/json")
        else:
            response = Response(
                content,
                media_type="application/octet-stream",
                headers={"Inference-Header-Content-Length": str(header_length)},
            )
        metrics.requests.labels(model=model.name, status="200").inc()
        metrics.latency.labels(model=model.name).observe(time.perf_counter() - started)
        return response

    async def prometheus(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    get, post = ["GET"], ["POST"]
    # Inference first: routes are matched in order and it is the hot path.
    routes = [
        Route("/v2/models/{name}/infer", infer, methods=post),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=post),
        Route("/v2/health/live", live, methods=get),
        Route("/v2/health/ready", ready, methods=get),
        Route("/v2", server_metadata, methods=get),
        Route("/v2/models/{name}", model_metadata, methods=get),
        Route("/v2/models/{name}/versions/{version}", model_metadata, methods=get),
        Route("/v2/models/{name}/ready", model_ready, methods=get),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=get),
        Route("/metrics", prometheus, methods=get),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            ClientDisconnect: _error_response,
            ServeError: _error_response,
            HTTPException: _error_response,
            Exception: _error_response,
        },
    )
