"""The HTTP/1.1 connection layer: uvicorn's h11 protocol with the server's limits and JSON errors.

uvicorn answers requests it cannot parse (a garbage request line, a negative Content-Length, a
broken chunked body) with a plain-text 400, has no deadline for a client to finish its headers,
and parses a request head of any size when it arrives in one piece. This subclass keeps
uvicorn's request handling and adds, below the ASGI app:

- every protocol-level refusal as ``{"error": "..."}`` JSON with the status h11 suggests;
- ``max_header_bytes`` for the request line plus headers (431);
- ``header_timeout_s`` from connecting, or from the first byte of the next request on a
  kept-alive connection, until the request's headers are complete (408, then close; a client
  that connected and never sent a byte is closed silently; idle kept-alive connections are
  uvicorn's ``timeout_keep_alive``).

The body's own timeout and size limit live in the app (``app.read_body``), where the request is.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

from trainpipe.serve.config import ServeConfig

_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    431: ("Request Header Fields Too Large"),
}


def json_error_bytes(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection."""
    body = orjson.dumps({"error": message})
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def protocol_class(config: ServeConfig) -> type[H11Protocol]:
    """uvicorn's ``http`` protocol class, bound to ``config``'s limits."""

    class HardenedH11Protocol(H11Protocol):
        max_header_bytes = config.max_header_bytes
        header_timeout_s = config.header_timeout_s

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._protocol_error: h11.RemoteProtocolError | None = None
            self._header_timer: asyncio.TimerHandle | None = None
            self._h11_next_event = self.conn.next_event
            self.conn.next_event = self._next_event  # type: ignore[method-assign]

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_started = False
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            between_requests = self.cycle is None or self.cycle.response_complete
            if between_requests and self.conn.their_state in (h11.IDLE, h11.DONE):
                self._head_started = True
                if self._header_timer is None:
                    self._arm_header_timer()
            super().data_received(data)

        def _arm_header_timer(self) -> None:
            self._disarm_header_timer()
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a request is being answered; its body has its own timeout
            if not self._head_started:
                self.transport.close()  # connected and never said anything
                return
            self._refuse(
                408,
                f"the request line and headers did not arrive within {self.header_timeout_s:g} "
                "s; send the whole request head at once",
            )

        def _next_event(self) -> Any:
            try:
                event = self._h11_next_event()
            except h11.RemoteProtocolError as exc:
                self._protocol_error = exc
                raise
            if isinstance(event, h11.Request):
                self._disarm_header_timer()
                self._head_started = False
                problem = self._refusal(event)
                if problem is not None:
                    self._protocol_error = problem
                    raise problem
            return event

        def _refusal(self, request: h11.Request) -> h11.RemoteProtocolError | None:
            """What h11 lets through but this server refuses."""
            size = (
                len(request.method)
                + len(request.target)
                + sum(len(name) + len(value) + 4 for name, value in request.headers)
            )
            if size > self.max_header_bytes:
                return h11.RemoteProtocolError(f"they have {size} bytes", error_status_hint=431)
            if request.http_version not in (b"1.0", b"1.1"):
                return h11.RemoteProtocolError(
                    f"HTTP version {request.http_version.decode()} is not spoken here; use HTTP/1.1"
                )
            names = {name for name, _ in request.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                # Two framings for one body is how requests get smuggled past proxies.
                return h11.RemoteProtocolError(
                    "both Content-Length and Transfer-Encoding are set; send one of them"
                )
            return None

        def send_400_response(self, msg: str) -> None:
            error = self._protocol_error
            hint = error.error_status_hint if error is not None else 400
            # h11 suggests 501 for transfer codings it does not know; to a client that is a
            # malformed request like any other, so every refusal here is a 4xx.
            status = hint if 400 <= hint < 500 else 400
            detail = str(error) if error is not None and str(error) else msg
            if status == 431:
                message = (
                    f"the request line and headers are over max_header_bytes "
                    f"{self.max_header_bytes} ({detail}); send smaller headers"
                )
            else:
                message = (
                    f"malformed HTTP request ({detail}); send a valid HTTP/1.1 request such as "
                    "POST /v2/models/NAME/infer with a JSON body"
                )
            self._refuse(status, message)

        def _refuse(self, status: int, message: str) -> None:
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                # The app is reading this request's body: let it see a disconnect, not hang.
                cycle.disconnected = True
                cycle.message_event.set()
                if cycle.response_started:
                    self.transport.close()
                    return
            if not self.transport.is_closing():
                self.transport.write(json_error_bytes(status, message))
                self.transport.close()

    return HardenedH11Protocol
