"""Small real ONNX models for registry tests: promote loads model.onnx in ONNX Runtime.

data = tiny_onnx("a")      # a 2->2 linear layer; a different tag gives different weights
"""

from __future__ import annotations

import functools
import io
import warnings
import zlib


@functools.cache
def tiny_onnx(tag: str) -> bytes:
    import torch

    torch.manual_seed(zlib.crc32(tag.encode()))
    model = torch.nn.Linear(2, 2).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but needs no onnxscript and takes
        # milliseconds; the pipeline's own export path is tested elsewhere.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 2),),
            buffer,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
    return buffer.getvalue()
