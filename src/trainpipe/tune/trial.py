"""One trial: fine-tune a configuration and report its validation metric every epoch.

Trials train through the same Trainer as the finetune stage (``classifier_trainer``); its
``on_epoch_end`` hook feeds the pruner, which stops a trial by raising from the hook.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from trainpipe.config import Config
from trainpipe.data.datasets import Dataset
from trainpipe.data.streaming import labelled_subset
from trainpipe.models import Classifier, build_encoder
from trainpipe.models.checkpoint import from_bytes, load_classifier, load_encoder, to_bytes
from trainpipe.train.finetuning import (
    classifier_trainer,
    resolve_batch_size,
    resolve_label_fraction,
)
from trainpipe.train.pretraining import pretraining_setup, resolve_pretrain_batch
from trainpipe.train.trainer import EpochRecord, Trainer


def metric_value(record: EpochRecord, metric: str) -> float:
    return record.val_loss if metric == "val_loss" else record.val_metric


@dataclass
class FinetuneTrial:
    """What every trial shares: the validated splits and the pretrained encoder (bytes, so the
    object pickles into spawned worker processes)."""

    dataset: Dataset
    encoder_bytes: bytes | None
    epochs: int
    teacher_bytes: bytes | None = None
    pretrain: bool = False
    """Pretrain each trial's encoder with the trial's ``pretrain`` config first."""

    def _encoder(self, cfg: Config) -> torch.nn.Module:
        """Seeded as the pretrain and finetune stages seed, so the best trial's start is
        fine-tuning's start."""
        if self.encoder_bytes is not None:
            return load_encoder(from_bytes(self.encoder_bytes))
        if not self.pretrain:
            torch.manual_seed(cfg.finetune.seed)
            return build_encoder(cfg.model, self.dataset.feature_shape)
        pt = resolve_pretrain_batch(
            cfg.pretrain.model_copy(update={"checkpoint_every_steps": None, "nproc_per_node": 1}),
            len(self.dataset.train),
            table=self.dataset.preprocess is not None,
        )
        torch.manual_seed(pt.seed)
        encoder = build_encoder(cfg.model, self.dataset.feature_shape)
        model, objective = pretraining_setup(
            pt, encoder, self.dataset.feature_shape, cfg.model.hidden_dim
        )
        Trainer(pt, model, objective, stage="tune-pretrain").fit(
            self.dataset.train, self.dataset.validation
        )
        return encoder.cpu()

    def _model(self, cfg: Config) -> Classifier:
        encoder = self._encoder(cfg)
        torch.manual_seed(cfg.finetune.seed)
        return Classifier(encoder, self.dataset.num_classes)

    def fit(
        self,
        cfg: Config,
        epochs: int,
        on_epoch: Callable[[EpochRecord], None] | None,
        state: dict | None = None,
        **overrides,
    ) -> tuple[Classifier, list[EpochRecord]]:
        """Train ``cfg`` for ``epochs`` (from ``state`` when given); ``overrides`` replace
        fine-tuning keys."""
        ft = cfg.finetune.model_copy(
            update={
                "epochs": epochs,
                "checkpoint_every_steps": None,
                "nproc_per_node": 1,
                **overrides,
            }
        )
        model = self._model(cfg)
        if state is not None:
            model.load_state_dict(state)
        teacher = load_classifier(from_bytes(self.teacher_bytes)) if self.teacher_bytes else None
        train = labelled_subset(
            self.dataset.train, resolve_label_fraction(ft, self.dataset.source), ft.seed
        )
        ft = resolve_batch_size(ft, len(train), table=self.dataset.preprocess is not None)
        trainer = classifier_trainer(
            ft, model, stage="tune", teacher=teacher, on_epoch_end=on_epoch
        )
        result = trainer.fit(train, self.dataset.validation)
        return model, result.history

    def __call__(self, cfg: Config, report: Callable[[int, float], None]) -> float:
        metric = cfg.tune.metric
        _, history = self.fit(cfg, self.epochs, lambda r: report(r.epoch, metric_value(r, metric)))
        final = history[-1]
        if cfg.finetune.early_stopping_patience is not None:
            # Early stopping restored the weights of the epoch with the best validation loss.
            final = min(history, key=lambda r: r.val_loss)
        return metric_value(final, metric)

    def segment(self, cfg: Config, state: bytes | None, epochs: int) -> tuple[bytes, list[dict]]:
        """PBT: continue a member from its weights for ``epochs`` at a constant learning rate
        (the rate is what PBT adapts between segments); returns the new weights and history."""
        model, history = self.fit(
            cfg,
            epochs,
            None,
            from_bytes(state) if state is not None else None,
            schedule="constant",
            warmup_fraction=0.0,
        )
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return to_bytes(weights), [r.__dict__ for r in history]
