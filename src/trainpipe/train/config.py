"""Optimization settings shared by the pretraining and fine-tuning stages."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from trainpipe.configbase import Section

OptimizerName = Literal[
    "sgd", "sgd_momentum", "sgd_nesterov", "adagrad", "rmsprop", "adam", "adamw"
]


class OptimConfig(Section):
    epochs: int = Field(30, ge=1, le=100_000)
    """Passes over the training split."""

    batch_size: int = Field(64, ge=1, le=1_000_000)
    """Global batch size per optimizer step, summed over processes and accumulation steps."""

    grad_accumulation_steps: int = Field(1, ge=1, le=1024)
    """Micro-batches per optimizer step; ``batch_size`` must divide evenly into them."""

    optimizer: OptimizerName = "adamw"
    """Optimizer by name. AdamW decouples weight decay; none is applied to biases and norms."""

    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    """Momentum of sgd_momentum, sgd_nesterov and rmsprop."""

    lr: float = Field(2e-3, gt=0.0, le=10.0)
    """Peak learning rate, reached at the end of warmup."""

    weight_decay: float = Field(0.01, ge=0.0, le=1.0)
    """Weight decay on matrices and kernels only."""

    schedule: Literal["constant", "step", "cosine", "linear", "one_cycle"] = "cosine"
    """Learning-rate schedule after warmup (``one_cycle`` has its own warmup phase)."""

    warmup_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    """Share of all optimizer steps spent warming the learning rate up linearly from zero."""

    step_every_epochs: int = Field(10, ge=1)
    """``step`` schedule: multiply the learning rate by ``step_gamma`` this often."""

    step_gamma: float = Field(0.1, gt=0.0, le=1.0)
    """``step`` schedule: the factor applied at each step."""

    grad_clip_norm: float | None = Field(1.0, gt=0.0)
    """Clip the global gradient norm to this value; None disables clipping."""

    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast precision: bf16 works on CPU and CUDA; fp16 (with dynamic loss scaling) needs
    CUDA."""

    on_nonfinite_loss: Literal["stop", "skip"] = "stop"
    """A NaN/inf loss stops training with an error naming the step, or skips that step."""

    loss_readback_every_steps: int = Field(1, ge=1, le=10_000)
    """Read the training loss back from the device every this many optimizer steps, in one
    host-device sync for all of them. 1 checks every step; more lets a GPU queue steps ahead of
    the host, and a non-finite loss (which then stops the run) or a spike is found up to that
    many steps late. Values above 1 need ``on_nonfinite_loss: stop``."""

    loss_spike_factor: float = Field(3.0, gt=1.0)
    """A step whose loss exceeds this multiple of the recent average is logged as a spike."""

    early_stopping_patience: int | None = Field(None, ge=1)
    """Stop after this many epochs without a better validation loss and restore the best
    weights; None trains for every epoch."""

    augment: bool = False
    """Random image augmentation (small shifts and noise) of training inputs."""

    checkpoint_every_steps: int | None = Field(None, ge=1)
    """Write a resumable checkpoint to the artifact store this often (and at the end);
    None writes only the final one."""

    keep_checkpoints: int = Field(2, ge=1)
    """Newest complete checkpoints kept; older ones are deleted."""

    nproc_per_node: int | Literal["auto"] = "auto"
    """Training processes in this pod (torchrun): ``auto`` is one per GPU, or 1 on CPU."""

    parallelism: Literal["ddp", "fsdp"] = "ddp"
    """Data parallelism: DistributedDataParallel, or FSDP (fully_shard) for models that do not
    fit one device."""

    seed: int = 0
    """Seed for initialization, shuffling, masking and dropout; the same seed reproduces a run."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` uses CUDA when present, else CPU."""

    @model_validator(mode="after")
    def _check(self) -> OptimConfig:
        if self.batch_size is not None and self.batch_size % self.grad_accumulation_steps:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by grad_accumulation_steps "
                f"{self.grad_accumulation_steps}; pick sizes that divide evenly"
            )
        if self.loss_readback_every_steps > 1 and self.on_nonfinite_loss == "skip":
            raise ValueError(
                f"loss_readback_every_steps {self.loss_readback_every_steps} cannot skip "
                "non-finite steps (a skip is decided before the optimizer step); set "
                "loss_readback_every_steps to 1 or on_nonfinite_loss to stop"
            )
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError("precision fp16 needs CUDA (loss scaling); use bf16 on CPU")
        return self


class PretrainConfig(OptimConfig):
    enabled: bool = True
    """Run self-supervised pretraining; when false, fine-tuning starts from a random encoder."""

    objective: Literal["auto", "masked_reconstruction", "rotation", "contrastive"] = "auto"
    """Self-supervised objective on unlabelled inputs: masked feature reconstruction, rotation
    prediction (square images), or a contrastive (SimCLR-style) objective over two
    augmentations of each input. ``auto``: contrastive for images, masked reconstruction of the
    scaled features for tables."""

    mask_ratio: float = Field(0.5, gt=0.0, lt=1.0)
    """Share of input features hidden for masked reconstruction."""

    temperature: float = Field(0.2, gt=0.0, le=10.0)
    """Softmax temperature of the contrastive objective."""

    epochs: int = Field(40, ge=1, le=100_000)
    """Passes over the (unlabelled) training split."""

    batch_size: int | None = Field(None, ge=1, le=1_000_000)
    """Global batch size. None: tables get ``training rows // 16`` clamped to 16..256 (a table of
    a few hundred rows makes 16 optimizer steps per epoch instead of one; tables of 4,096+
    rows train with 256 as before), images 256 (contrastive pairs need a large batch)."""


class FinetuneConfig(OptimConfig):
    batch_size: int | None = Field(None, ge=1, le=1_000_000)
    """Global batch size per optimizer step. None: tables get ``labelled rows // 16`` clamped
    to 16..64, so even a table of a hundred rows makes several optimizer steps per epoch (per-epoch
    validation and ``early_stopping_patience`` then mean something); images get 64."""

    label_fraction: float | None = Field(None, gt=0.0, le=1.0)
    """Share of the training split whose labels fine-tuning may use (stratified, seeded); the
    rest of the split is only seen, unlabelled, by pretraining. None: every label of a user's
    data; 0.2 for the built-in digits demo (its semi-supervised showcase)."""

    regression_loss: Literal["mse", "huber"] = "mse"
    """Regression loss on standardized targets: ``huber`` (delta 1 standard deviation) is
    less swayed by outlying targets."""

    class_weights: Literal["none", "balanced"] = "none"
    """``balanced`` weights each class's loss by n / (classes * count in the labelled training
    examples), so rare classes count as much as common ones."""

    ensemble_size: int | None = Field(None, ge=1, le=32)
    """Networks averaged (in probability) into the shipped model, each trained with its own
    seed from the initialization chosen on validation. None: 5 for tables under
    ``ensemble_max_rows`` labelled rows, where one network's result swings most with its seed
    and training is cheap; 1 otherwise (and for images)."""

    ensemble_max_rows: int = Field(20_000, ge=0)
    """Largest labelled table that gets an automatic ensemble (``ensemble_size`` None)."""

    blend_with_linear: bool = True
    """Tables: ship a blend of the network(s) and the linear model (the linear baseline's fit on
    the same features), mixed with the most linear weight that predicts not significantly worse
    (one-sided 5%) than the best on out-of-fold training rows (ensembles of 3 or more: the
    members after the first are trained on cross-fitting folds) or else on the validation split;
    weight 0 ships the network alone. false: the network alone, members trained on every
    labelled row."""

    blend_with_trees: bool = True
    """Tables with ``blend_with_linear``, in memory: gradient-boosted trees (scikit-learn's
    HistGradientBoosting, as the tree baseline, on the network's preprocessed features) may
    join the blend as a third member, on the same evidence (out-of-fold rows, trees fitted on
    the same folds): they join when the weight rule with them (the lowest-loss (linear, trees)
    pair's trees weight) beats the lowest-loss mix without them by more than 1.645 standard
    errors, both rules cross-validated over the rows; otherwise the blend is as without trees.
    Carried in the model as packed node tensors (no pickled estimator), exported into the ONNX
    graph. Streamed (sharded) tables are not blended. false: network and linear model only."""

    min_steps: int = Field(600, ge=0)
    """Tables: train for more epochs than ``epochs`` when a small table would otherwise get fewer
    optimizer steps than this (early stopping still ends training when validation stalls)."""

    early_stopping_patience: int | None = Field(8, ge=1)
    """Stop after this many epochs without a better validation loss and restore the best
    weights; None trains for every epoch."""

    patience_min_steps: int = Field(100, ge=0)
    """Tables: early stopping waits at least this many optimizer steps without a better
    validation loss (more epochs than ``early_stopping_patience`` when epochs are a few steps
    long), so a small table is not stopped a few steps into training."""

    strategy: Literal["full", "linear_probe", "gradual_unfreeze"] = "full"
    """``full`` trains encoder and head together; ``linear_probe`` freezes the encoder;
    ``gradual_unfreeze`` starts with the head only and unfreezes encoder blocks from the top,
    one more every ``unfreeze_every_epochs``."""

    unfreeze_every_epochs: int = Field(2, ge=1)
    """``gradual_unfreeze``: epochs between unfreezing successive encoder blocks."""

    layer_lr_decay: float = Field(1.0, gt=0.0, le=1.0)
    """Layer-wise learning-rate decay: each encoder block below the head gets this factor
    times the learning rate of the block above (1.0 disables)."""

    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    """Cross-entropy label smoothing."""

    teacher_uri: str | None = None
    """Optional knowledge distillation: URI of a fine-tuned model artifact set (model.pt)
    whose softened predictions the student also matches."""

    distill_weight: float = Field(0.5, ge=0.0, le=1.0)
    """Weight of the distillation loss against the label loss."""

    distill_temperature: float = Field(2.0, gt=0.0)
    """Temperature that softens teacher and student logits for distillation."""

    compare_with_scratch: bool = True
    """Also train the same architecture from a random initialization on the same labels; the
    one with the better validation accuracy (never the test split) ships, and the report says
    which and by how much (test accuracies of both are reported, not used)."""
