"""The language-model workflow's settings: corpus, tokenizer, model, pretraining, the labelled
text and fine-tuning. One definition serves both entry points:

- the ``language_model`` section of the pipeline config (``enabled: true`` makes ``trainpipe
  run``/``compile``/``submit`` build the language-model DAG, ``pipelines/language_model.py``);
- the one-process command ``python -m trainpipe.stages.language_model``.

Defaults are the CPU demo: a small causal LM on the standard library's pydoc help texts, LoRA
fine-tuning on generated product reviews.
"""

from __future__ import annotations

from pydantic import model_validator

from trainpipe.configbase import Section
from trainpipe.data.text import BUILTIN_PYDOC, BUILTIN_REVIEWS, TextDataConfig
from trainpipe.models.lm import LMConfig
from trainpipe.train.lm import LMPretrainConfig, TextFinetuneConfig


def _merged(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if nested else value
    return out


class LanguageModelSettings(Section):
    """The demo's sizes are this section's defaults; a file or ``--set`` that names some keys
    of a sub-section keeps that sub-section's other demo defaults (not the class defaults of,
    say, ``LMConfig``, which describe a GPT-2-sized model)."""

    @model_validator(mode="before")
    @classmethod
    def _keep_demo_defaults(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            default, given = field.default, data.get(name)
            if isinstance(default, Section) and isinstance(given, dict):
                merged[name] = _merged(default.model_dump(mode="json"), given)
        return merged

    text: TextDataConfig = TextDataConfig(source=BUILTIN_PYDOC, vocab_size=2000, seq_len=64)
    """Pretraining corpus and tokenizer."""

    model: LMConfig = LMConfig(kind="causal", dim=128, depth=2, heads=4, max_seq_len=128)
    """The language model."""

    pretrain: LMPretrainConfig = LMPretrainConfig(
        epochs=2, batch_size=32, lr=3e-3, device="cpu", log_every_steps=20
    )
    """Pretraining optimization (the Trainer's settings) and LM options."""

    classifier_text: TextDataConfig = TextDataConfig(
        source=BUILTIN_REVIEWS, label_column="label", seq_len=48
    )
    """Labelled corpus of the downstream task (the pretraining tokenizer is reused)."""

    hf_checkpoint_uri: str | None = None
    """A Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer files; file://
    or s3://) to fine-tune instead of pretraining a model here (needs ``trainpipe[hf]``)."""

    finetune: TextFinetuneConfig = TextFinetuneConfig(
        epochs=6, batch_size=32, lr=1e-2, device="cpu", strategy="lora"
    )
    """Fine-tuning strategy and optimization."""

    def classifier_seq_len(self) -> int:
        """The classifier's sequence length: ``classifier_text.seq_len``, at most what the
        pretrained model's rotary tables cover."""
        if self.hf_checkpoint_uri:
            return self.classifier_text.seq_len
        return min(self.classifier_text.seq_len, self.model.max_seq_len)


def _on_any_device(name: str):
    """The demo default of ``name`` with ``device: auto``: the DAG's training steps use the GPU
    their pod was given (CPU when there is none), where the one-process demo stays on CPU."""
    return LanguageModelSettings.model_fields[name].default.model_copy(update={"device": "auto"})


class LanguageModelConfig(LanguageModelSettings):
    pretrain: LMPretrainConfig = _on_any_device("pretrain")
    """Pretraining optimization (the Trainer's settings) and LM options; ``device: auto``."""

    finetune: TextFinetuneConfig = _on_any_device("finetune")
    """Fine-tuning strategy and optimization; ``device: auto``."""

    enabled: bool = False
    """Build the language-model DAG (text data and tokenizer, LM pretraining, text-classifier
    fine-tuning, evaluation, ONNX export, gate, register, deploy) instead of the table/image
    one; ``data``, ``model``, ``pretrain`` and ``finetune`` of the pipeline config are then
    unused (the sections here replace them)."""

    def inputs(self) -> list[tuple[str, str]]:
        """(config key, URI) of every input the DAG reads, builtin corpora left out: what the
        run's preflight checks exists and what ``compile`` warns about when it is local."""
        places = [
            ("classifier_text.source", self.classifier_text.source),
            ("classifier_text.tokenizer_uri", self.classifier_text.tokenizer_uri),
            ("hf_checkpoint_uri", self.hf_checkpoint_uri),
        ]
        if not self.hf_checkpoint_uri:
            places += [
                ("text.source", self.text.source),
                ("text.tokenizer_uri", self.text.tokenizer_uri),
            ]
        return [
            (f"language_model.{key}", uri)
            for key, uri in places
            if uri and not uri.startswith("builtin:")
        ]

    @model_validator(mode="after")
    def _fits(self) -> LanguageModelConfig:
        if self.enabled and not self.classifier_text.label_column:
            raise ValueError(
                "classifier_text.label_column is not set: the DAG fine-tunes a classifier; name "
                "the column of classifier_text.source that holds the labels"
            )
        pretrains = self.enabled and not self.hf_checkpoint_uri
        if pretrains and self.text.seq_len > self.model.max_seq_len:
            raise ValueError(
                f"text.seq_len {self.text.seq_len} exceeds model.max_seq_len "
                f"{self.model.max_seq_len}; raise max_seq_len or lower seq_len"
            )
        return self
