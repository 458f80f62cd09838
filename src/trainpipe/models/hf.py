"""A user's Hugging Face Transformers checkpoint as a trainpipe text classifier.

    model, tokenizer = load_hf_classifier("s3://bucket/checkpoints/my-bert", num_labels=2)
    logits = model(ids)            # ids: [batch, seq] int64, padded with tokenizer.pad_token_id

The checkpoint folder (file:// or s3://, read through ``storage.py``) holds ``config.json``,
``model.safetensors`` (pickled ``.bin`` weights are refused: loading them runs code) and the
tokenizer files ``save_pretrained`` writes. Loading uses the ``transformers`` Auto classes, so
any architecture with a sequence-classification head works; LoRA uses ``peft``. Both are the
optional extra ``pip install 'trainpipe[hf]'``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from trainpipe.errors import ConfigError, DataError
from trainpipe.storage import StorageError, open_store

WEIGHTS_FILE = "model.safetensors"


def _require_hf():
    try:
        import transformers
    except ImportError as exc:
        raise ConfigError(
            "config error: Hugging Face checkpoints need transformers; install "
            "'trainpipe[hf]' (pip install 'trainpipe[hf]')"
        ) from exc
    return transformers


class HFTextClassifier(nn.Module):
    """Token ids -> logits, with the attention mask derived from the padding id (so the
    exported graph and the server need only the ids)."""

    def __init__(self, model: nn.Module, pad_id: int):
        super().__init__()
        self.model = model
        self.pad_id = pad_id

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=(ids != self.pad_id).long()).logits


def download_checkpoint(uri: str, folder: Path, *, endpoint_url: str | None = None) -> Path:
    """Copy every file of the checkpoint folder at ``uri`` into ``folder``."""
    try:
        store = open_store(uri, endpoint_url=endpoint_url)
        keys = store.list()
        if "config.json" not in keys or WEIGHTS_FILE not in keys:
            pickled = [k for k in keys if k.endswith(".bin")]
            hint = (
                f" ({pickled[0]} is pickled; re-save with save_pretrained(safe_serialization=True))"
                if pickled
                else ""
            )
            raise DataError(
                f"{uri} is not a Hugging Face checkpoint folder: it needs config.json and "
                f"{WEIGHTS_FILE}{hint}; found {sorted(keys)[:8]}"
            )
        for key in keys:
            if "/" not in key and not key.endswith(".bin"):
                store.get_file(key, folder / key)
    except StorageError as exc:
        raise DataError(f"cannot read Hugging Face checkpoint {uri}: {exc}") from exc
    return folder


def load_hf_classifier(
    uri: str, num_labels: int, *, endpoint_url: str | None = None
) -> tuple[HFTextClassifier, object]:
    """The checkpoint at ``uri`` with a ``num_labels``-way classification head (a new head
    when the checkpoint has none or another size), and its fast tokenizer."""
    transformers = _require_hf()
    with tempfile.TemporaryDirectory() as tmp:
        folder = download_checkpoint(uri, Path(tmp), endpoint_url=endpoint_url)
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
            model = transformers.AutoModelForSequenceClassification.from_pretrained(
                folder, num_labels=num_labels, use_safetensors=True, ignore_mismatched_sizes=True
            )
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{uri}: transformers cannot load this checkpoint ({exc})") from exc
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise DataError(f"{uri}: the tokenizer has neither a pad nor an eos token; add one")
        tokenizer.pad_token = tokenizer.eos_token  # GPT-style tokenizers ship without one
    model.config.pad_token_id = tokenizer.pad_token_id
    return HFTextClassifier(model, tokenizer.pad_token_id), tokenizer


def served_tokenizer(tokenizer):
    """The ``tokenizers.Tokenizer`` to ship with the model: a copy of the checkpoint's fast
    tokenizer without the fixed-length padding and truncation that tokenizing the training
    text left set on it (the server pads each batch to its longest text and cuts at the
    package's ``max_seq_len`` itself); the post-processor, which adds the model's own special
    tokens, stays."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    copy.no_padding()
    copy.no_truncation()
    return copy


def apply_peft_lora(
    classifier: HFTextClassifier, *, rank: int, alpha: float, targets: tuple[str, ...] | None
) -> None:
    """Wrap the inner model with peft LoRA adapters (the classification head stays trainable);
    ``targets`` None lets peft pick the architecture's attention projections."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type="SEQ_CLS",
        r=rank,
        lora_alpha=alpha,
        target_modules=list(targets) if targets else None,
    )
    try:
        classifier.model = get_peft_model(classifier.model, config)
    except ValueError as exc:
        raise ConfigError(f"config error: finetune.lora_targets: {exc}") from exc


def merge_peft_lora(classifier: HFTextClassifier) -> None:
    classifier.model = classifier.model.merge_and_unload()
