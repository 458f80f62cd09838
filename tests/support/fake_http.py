"""A loopback HTTP server for fakes of cluster APIs: it records every request and lets a
route function answer it. The real clients (kfp.Client, the kubernetes client, urllib) talk
HTTP to it; nothing in them is patched.

    server = FakeHttpServer(route)            # route(request) -> (status, json body | str)
    server.url                                 # http://127.0.0.1:<port>
    server.requests                            # [Request(method, path, query, headers, body)]
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None
    content_type: str = ""

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


@dataclass
class Answer:
    status: int
    body: Any = None
    content_type: str = "application/json"
    chunks: list[str] = field(default_factory=list)
    """When set, the body is sent as these chunks (chunked encoding), e.g. a log stream."""


Route = Callable[[Request], Answer]


class FakeHttpServer:
    def __init__(self, route: Route):
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                content_type = self.headers.get("Content-Type", "")
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode()
                request = Request(
                    self.command,
                    parts.path,
                    {k: v[-1] for k, v in parse_qs(parts.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    content_type,
                )
                with outer._lock:
                    outer.requests.append(request)
                    answer = route(request)
                self._send(answer)

            def _send(self, answer: Answer) -> None:
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                if answer.chunks:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for chunk in answer.chunks:
                        data = chunk.encode()
                        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if isinstance(answer.body, str):
                    data = answer.body.encode()
                else:
                    data = json.dumps(answer.body if answer.body is not None else {}).encode()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean; requests are recorded instead

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def matching(self, method: str, path_prefix: str) -> list[Request]:
        with self._lock:
            return [
                r for r in self.requests if r.method == method and r.path.startswith(path_prefix)
            ]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeApi:
    """Base of the fake APIs: one loopback server whose requests the test can inspect."""

    def _start(self) -> None:
        self.server = FakeHttpServer(self._route)

    def _route(self, request: Request) -> Answer:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def requests(self) -> list[Request]:
        return self.server.requests

    def close(self) -> None:
        self.server.close()
