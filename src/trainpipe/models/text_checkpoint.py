"""A fine-tuned text classifier as ``model.pt`` (``torch.load(weights_only=True)``-safe) and
back, for the pipeline steps after fine-tuning (evaluate, export).

    payload = text_classifier_payload(clf.model, label_names)   # after LoRA is merged
    model = load_text_classifier(from_bytes(data))              # eval mode, on the CPU

Two kinds: ``text_native`` (trainpipe's :class:`TextClassifier` over a :class:`TransformerLM`:
the LM config, vocabulary size and weights) and ``text_hf`` (a Hugging Face sequence
classifier: its config as a dict and weights; rebuilt with ``from_config``, so nothing is
downloaded and no code from the checkpoint runs).
"""

from __future__ import annotations

import json

from torch import nn

from trainpipe.models.lm import LMConfig, TextClassifier, TransformerLM

NATIVE = "text_native"
HF = "text_hf"


def text_classifier_payload(model: nn.Module, label_names: list[str]) -> dict:
    """The checkpoint of a fine-tuned (LoRA merged) native or Hugging Face classifier."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if isinstance(model, TextClassifier):
        backbone = model.encoder
        return {
            "kind": NATIVE,
            "lm_config": backbone.cfg.model_dump(),
            "vocab_size": backbone.vocab_size,
            "num_classes": len(label_names),
            "pad_id": model.pad_id,
            "labels": list(label_names),
            "state": state,
        }
    return {
        "kind": HF,
        # JSON text: weights_only loading accepts plain values only.
        "hf_config": model.model.config.to_json_string(),
        "pad_id": model.pad_id,
        "labels": list(label_names),
        "state": state,
    }


def load_text_classifier(payload: dict) -> nn.Module:
    """The classifier a :func:`text_classifier_payload` describes, in eval mode on the CPU."""
    if payload["kind"] == NATIVE:
        backbone = TransformerLM(LMConfig(**payload["lm_config"]), payload["vocab_size"])
        model = TextClassifier(backbone, payload["num_classes"], payload["pad_id"])
    else:
        from trainpipe.models.hf import HFTextClassifier, _require_hf

        transformers = _require_hf()
        hf_config = json.loads(payload["hf_config"])
        config = transformers.AutoConfig.for_model(hf_config.pop("model_type"), **hf_config)
        inner = transformers.AutoModelForSequenceClassification.from_config(config)
        model = HFTextClassifier(inner, payload["pad_id"])
    model.load_state_dict(payload["state"])
    return model.eval()
