"""Domain errors of the model server and the one table that maps them to HTTP status codes.

Handlers raise these; ``app.py`` turns any of them into ``{"error": "<message>"}`` with the
status from :data:`HTTP_STATUS`. Every message says what is wrong and how to fix it.
"""

from __future__ import annotations

from trainpipe.errors import TrainpipeError


class ServeError(TrainpipeError):
    """Base of every error the server answers with a JSON body instead of a traceback."""


class InvalidInput(ServeError):
    """The request is well-formed HTTP but its inference payload is wrong."""


class ModelNotFound(ServeError):
    """No model (or no version of it) by that name is served here."""


class ModelNotReady(ServeError):
    """The model exists but is not loaded and warmed up yet."""


class PayloadTooLarge(ServeError):
    """The request body is over ``max_body_bytes``."""


class UnsupportedMediaType(ServeError):
    """The body is in an encoding (Content-Encoding) this server does not read."""


class RequestTimeout(ServeError):
    """The client stopped sending its request (headers or body) for too long."""


class ClientClosed(ServeError):
    """The client went away before its request was answered (not a server error)."""


class InferenceFailed(ServeError):
    """ONNX Runtime failed on inputs that passed validation: a server-side problem."""


class ModelLoadError(ServeError):
    """A model package could not be read, verified, loaded or warmed up (never a request error)."""


HTTP_STATUS: dict[type[ServeError], int] = {
    InvalidInput: 400,
    ModelNotFound: 404,
    RequestTimeout: 408,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    ClientClosed: 499,
    InferenceFailed: 500,
    ModelLoadError: 500,
    ModelNotReady: 503,
}


def http_status(exc: ServeError) -> int:
    """The status for ``exc``: its own class's entry, else the nearest base class's, else 500."""
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500
