"""Run the OIP v2 server: blocking (``serve``) or in a background thread (``start_in_background``).

    serve("s3://bucket/ml/registry/digits-classifier", ServeConfig(host="0.0.0.0"))

    with start_in_background(model_uri, ServeConfig(port=0)) as server:   # tests, deploy stage
        logits = client.infer(server.url, "digits-classifier", images)

The HTTP listener comes up first (live, not ready), then the model is loaded, verified and warmed
up, and only then does /v2/health/ready answer 200. A model that cannot be loaded at startup
stops the server with ModelLoadError; later champion versions that fail are refused instead.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import uvicorn

from trainpipe.serve.app import create_app
from trainpipe.serve.config import ServeConfig
from trainpipe.serve.errors import ModelLoadError
from trainpipe.serve.http import protocol_class
from trainpipe.serve.metrics import ServeMetrics
from trainpipe.serve.repository import ModelRepository, freeze_heap

log = logging.getLogger("trainpipe.serve")


class ModelServer:
    """The pieces of one server: metrics, model repository and ASGI app (no socket yet)."""

    def __init__(self, model_uri: str, config: ServeConfig):
        self.model_uri = model_uri
        self.config = config
        self.metrics = ServeMetrics()
        self.repository = ModelRepository(model_uri, config, self.metrics)
        self.app = create_app(self.repository, config, self.metrics)

    def load(self) -> None:
        """Load the initial model (blocking) and start following the champion if there is one."""
        self.repository.load_initial()
        self.repository.start_following()

    def close(self) -> None:
        self.repository.close()


class RunningServer:
    """A server listening in a background thread; ``stop()`` (or ``with``) shuts it down."""

    def __init__(
        self, model_server: ModelServer, http: uvicorn.Server, thread: threading.Thread, url: str
    ):
        self.model_server = model_server
        self.url = url
        """Base URL, e.g. ``http://127.0.0.1:41234`` (no trailing slash)."""
        self._http = http
        self._thread = thread

    def stop(self, timeout_s: float = 10.0) -> None:
        self._http.should_exit = True
        self._thread.join(timeout_s)
        self.model_server.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _bind(config: ServeConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        sock.close()
        raise ModelLoadError(
            f"cannot listen on {config.host}:{config.port} ({exc.strerror}); pick another "
            "--port or stop whatever holds it"
        ) from exc
    sock.set_inheritable(True)
    return sock


def _url(config: ServeConfig, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"http://{host}:{port}"


def _uvicorn(app: object, config: ServeConfig) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(
            app,
            # JSON errors, header size limit and header timeout below the app (serve/http.py).
            http=protocol_class(config),
            h11_max_incomplete_event_size=config.max_header_bytes,
            access_log=config.access_log,
            log_level=config.log_level,
            # The body limit is enforced by the app with a JSON 413; keep-alive matters for
            # clients that send many small requests.
            timeout_keep_alive=30,
            lifespan="off",
            # X-Forwarded-* only changes the client address in logs; skipping it saves a
            # middleware layer per request.
            proxy_headers=False,
            server_header=False,
        )
    )


def display_uri(uri: str) -> str:
    """``uri`` without any user:password part, for log lines."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _announce(model_server: ModelServer, url: str) -> None:
    what = model_server.repository.describe()
    print(
        f"trainpipe serve: {what} {display_uri(model_server.model_uri)} on {url} (Open "
        f"Inference Protocol v2; ready when {url}/v2/health/ready answers 200)",
        flush=True,
    )


def start_http_in_background(model_server: ModelServer) -> RunningServer:
    """Listen for ``model_server.app`` in a daemon thread without loading a model."""
    config = model_server.config
    sock = _bind(config)
    http = _uvicorn(model_server.app, config)
    thread = threading.Thread(
        target=http.run, kwargs={"sockets": [sock]}, name="trainpipe-serve-http", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30.0
    while not http.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise ModelLoadError(f"the HTTP server on {config.host}:{config.port} did not start")
        time.sleep(0.01)
    return RunningServer(model_server, http, thread, _url(config, sock))


def start_in_background(model_uri: str, config: ServeConfig) -> RunningServer:
    """Serve ``model_uri`` from a daemon thread; returns once the model is ready.

    Raises ModelLoadError (after shutting the listener down) when the model cannot be loaded.
    """
    model_server = ModelServer(model_uri, config)
    running = start_http_in_background(model_server)
    try:
        _announce(model_server, running.url)
        model_server.load()
    except BaseException:
        running.stop()
        raise
    return running


def serve(model_uri: str, config: ServeConfig) -> None:
    """Serve ``model_uri`` until SIGINT/SIGTERM. Raises ModelLoadError if the model cannot load."""
    _configure_logging(config)
    model_server = ModelServer(model_uri, config)
    sock = _bind(config)
    http = _uvicorn(model_server.app, config)
    failure: list[BaseException] = []

    def load() -> None:
        try:
            model_server.load()
            freeze_heap()  # this process is the server's: no full collections of its startup heap
        except BaseException as exc:
            failure.append(exc)
            http.should_exit = True

    try:
        _announce(model_server, _url(config, sock))
    except ModelLoadError:
        sock.close()
        raise
    loader = threading.Thread(target=load, name="trainpipe-serve-load", daemon=True)
    loader.start()
    try:
        http.run(sockets=[sock])
    finally:
        loader.join(timeout=60)
        model_server.close()
        with contextlib.suppress(OSError):
            sock.close()
    if failure:
        raise failure[0]


def _configure_logging(config: ServeConfig) -> None:
    logger = logging.getLogger("trainpipe")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(config.log_level.upper())
