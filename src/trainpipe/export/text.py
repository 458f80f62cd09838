"""A fine-tuned text classifier as a servable model package: ONNX with dynamic batch and
sequence length (parity checked at several lengths), its tokenizer, and a ``text`` section in
``model.json`` so the server takes text and returns labels (``trainpipe.serve.text``).

    uri = export_text_package(model, tokenizer, store, "registry/reviews/versions/1",
                              name="reviews", version="1", labels=names,
                              max_seq_len=128, check_ids=test_split.x)
"""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
from torch import nn

from trainpipe.data.text import CLS, PAD, special_id
from trainpipe.export.onnx_export import check_parity, export_token_onnx
from trainpipe.serve.model import text_signature, write_model_package
from trainpipe.serve.text import TextSpec
from trainpipe.storage import Store


def export_text_package(
    model: nn.Module,
    tokenizer,
    store: Store,
    prefix: str,
    *,
    name: str,
    version: str,
    labels: list[str],
    max_seq_len: int,
    check_ids: np.ndarray,
    pad_id: int | None = None,
    cls_id: int | None = None,
    opset: int = 18,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    run_id: str = "serve",
    started: tuple[datetime, float] | None = None,
) -> tuple[str, list[dict]]:
    """Export, check parity on ``check_ids`` at its full width and at a third of it (the
    sequence axis must really be dynamic), write the package (the reports in it as
    ``parity.json``); returns its URI and the parity
    reports. Raises ExportError when ONNX Runtime and torch disagree. ``pad_id``/``cls_id``
    default to the tokenizer's ``<pad>``/``<cls>``; pass them for a tokenizer with other
    names (a Hugging Face one, whose post-processor adds its own [CLS]: ``cls_id`` None)."""
    onnx_bytes = export_token_onnx(model, max_seq_len, opset)
    width = check_ids.shape[1]
    reports = [
        check_parity(onnx_bytes, model, check_ids[:, :seq], atol=atol, rtol=rtol)
        for seq in sorted({width, max(2, width // 3)})
    ]
    inputs, outputs = text_signature(len(labels))
    if pad_id is None:
        pad_id, cls_id = special_id(tokenizer, PAD), tokenizer.token_to_id(CLS)
    spec = TextSpec(pad_id=pad_id, max_seq_len=max_seq_len, cls_id=cls_id)
    uri = write_model_package(
        store,
        prefix,
        onnx_bytes,
        name=name,
        version=version,
        inputs=inputs,
        outputs=outputs,
        labels=labels,
        opset=opset,
        text=spec,
        tokenizer_json=tokenizer.to_str().encode("utf-8"),
        run_id=run_id,
        started=started,
        extra_files={"parity.json": json.dumps({"lengths": reports}, indent=2).encode()},
    )
    return uri, reports
