"""ONNX Runtime model server speaking the Open Inference Protocol v2 (REST), with dynamic batching.

    python -m trainpipe.serve --model s3://bucket/ml/registry/digits-classifier --port 8080

Library entry points: :func:`serve` (blocking), :func:`start_in_background` (tests, the deploy
stage's infrastructure check), :class:`ServeConfig`, and the tiny client in
``trainpipe.serve.client``. See docs/serving.md.

The entry points load on first use: the export stage imports ``trainpipe.serve.model`` for the
server's ONNX Runtime session options, and must not need the HTTP stack (uvicorn, starlette)
to do so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainpipe.serve.config import ServeConfig
    from trainpipe.serve.server import RunningServer, serve, start_in_background

_HOMES = {
    "ServeConfig": "trainpipe.serve.config",
    "RunningServer": "trainpipe.serve.server",
    "serve": "trainpipe.serve.server",
    "start_in_background": "trainpipe.serve.server",
}

__all__ = ["RunningServer", "ServeConfig", "serve", "start_in_background"]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'trainpipe.serve' has no attribute {name!r}")
