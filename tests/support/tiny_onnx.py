"""Small real ONNX models for tests that need one fast (registry promotion, server memory).

data = tiny_onnx("a")      # x [N, 2] -> y [N, 2], a linear layer; each tag its own weights
data = onnx_bytes(model, torch.zeros(1, 1, 8, 8), "input", "logits")   # any small module
"""

from __future__ import annotations

import functools
import io
import warnings
import zlib


def onnx_bytes(model, example, input_name: str = "x", output_name: str = "y") -> bytes:
    """``model`` as one ONNX file with a dynamic batch axis."""
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but needs no onnxscript and takes
        # milliseconds; the pipeline's own export path is tested elsewhere.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        )
    return buffer.getvalue()


@functools.cache
def tiny_onnx(tag: str) -> bytes:
    import torch

    torch.manual_seed(zlib.crc32(tag.encode()))
    return onnx_bytes(torch.nn.Linear(2, 2).eval(), torch.zeros(1, 2))
