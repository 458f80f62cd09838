"""ONNX Runtime model server speaking the Open Inference Protocol v2 (REST), with dynamic batching.

    python -m trainpipe.serve --model s3://bucket/ml/registry/digits-classifier --port 8080

Library entry points: :func:`serve` (blocking), :func:`start_in_background` (tests, the deploy
stage's infrastructure check), :class:`ServeConfig`, and the tiny client in
``trainpipe.serve.client``. See docs/serving.md.
"""

from trainpipe.serve.config import ServeConfig
from trainpipe.serve.server import RunningServer, serve, start_in_background

__all__ = ["RunningServer", "ServeConfig", "serve", "start_in_background"]
