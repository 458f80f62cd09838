"""An HTTP proxy in front of the S3 test server that injects S3's real failure modes.

    with FaultProxy(upstream="http://127.0.0.1:5000", rate=0.05, seed=1) as proxy:
        store = open_store("s3://bucket", endpoint_url=proxy.url)

Each request independently meets a fault with probability ``rate`` (seeded, so a run can be
replayed); the fault is one of:

- ``slowdown``: 503 SlowDown (S3's throttling answer); the request never reaches the server.
- ``reset_before``: the connection is reset before the request reaches the server.
- ``reset_after``: the server applies the request, then the client's connection is reset
  before it sees the answer (a write that landed but whose answer was lost).
- ``truncate``: the server answers, the client gets the headers and half the body, then the
  connection closes (an ``IncompleteRead``).
- ``ignore_range``: the Range header is dropped on the way to the server, which then answers
  with the whole object, as an S3 service without ranged reads would (not in ``FAULTS``: only
  where asked for).

It is a real socket server on loopback, so kfp.local's component subprocesses reach it too.
``counts`` says how many of each fault were injected; ``body_bytes`` how many response body
bytes reached the client (with ``rate=0`` it is a byte counter in front of the server).
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

FAULTS = ("slowdown", "reset_before", "reset_after", "truncate")

_SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        *,
        rate: float,
        seed: int,
        faults: tuple[str, ...] = FAULTS,
        limit: int | None = None,
    ):
        """``limit``: inject at most this many faults, then pass everything through."""
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rate = rate
        self.faults = faults
        self.limit = limit
        self.counts: Counter[str] = Counter()
        self.body_bytes = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def draw(self) -> str | None:
        with self._lock:
            self.counts["requests"] += 1
            if self._random.random() >= self.rate:
                return None
            if (
                self.limit is not None
                and self.counts.total() - self.counts["requests"] >= self.limit
            ):
                return None
            fault = self._random.choice(self.faults)
            self.counts[fault] += 1
            return fault

    def count_body(self, size_bytes: int) -> None:
        with self._lock:
            self.body_bytes += size_bytes

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # the test reads proxy.counts, not a log

            def _reset(self) -> None:
                # SO_LINGER 0 makes close() send RST, as a dropped connection does.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()

            def _read_body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline().strip():
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._read_body()
                fault = proxy.draw()
                if fault == "slowdown":
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_SLOWDOWN_BODY)))
                    self.end_headers()
                    self.wfile.write(_SLOWDOWN_BODY)
                    return
                if fault == "reset_before":
                    self._reset()
                    return
                dropped = _HOP_BY_HOP | ({"range"} if fault == "ignore_range" else set())
                headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                    status, reason, answer_headers = (
                        answer.status,
                        answer.reason,
                        answer.getheaders(),
                    )
                finally:
                    upstream.close()
                if fault == "reset_after" or (fault == "truncate" and len(payload) < 2):
                    self._reset()
                    return
                self.send_response(status, reason)
                for name, value in answer_headers:
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                    elif name.lower() == "content-length" and self.command == "HEAD":
                        self.send_header(name, value)  # HEAD's length is the object's
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if fault == "truncate":
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    proxy.count_body(len(payload) // 2)
                    self._reset()
                    return
                if self.command != "HEAD":
                    self.wfile.write(payload)
                    proxy.count_body(len(payload))

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
