"""The ``tune`` config section: search space, metric, budget, sampler, pruner, strategy.

    tune:
      enabled: true
      trials: 20
      sampler: tpe
      pruner: asha
      space:
        finetune.lr: {type: log_uniform, low: 3.0e-4, high: 3.0e-2}
        finetune.batch_size: {type: categorical, choices: [null, 32, 64, 128]}  # null: automatic

Keys of ``space`` are the dotted keys ``--set`` accepts (``finetune.*``; ``model.*`` too when
pretraining is off, since a pretrained encoder fixes the architecture). ``trainpipe.config``
checks that every key exists and every bound is a valid value for it.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, model_validator

from trainpipe.configbase import Section

Scalar = int | float | str | bool | None


class ParamSpec(Section):
    """One searched parameter."""

    type: Literal["uniform", "log_uniform", "int", "categorical"]
    """Distribution: uniform or log-uniform floats, integers in [low, high], or a list."""

    low: float | None = None
    """Lower bound (uniform, log_uniform, int)."""

    high: float | None = None
    """Upper bound, inclusive (uniform, log_uniform, int)."""

    step: float | None = Field(None, gt=0)
    """Optional grid step of an int or uniform parameter."""

    choices: list[Scalar] | None = None
    """The values of a categorical parameter."""

    grid_points: int = Field(3, ge=2, le=100)
    """Grid sampler only: points taken from a float range (log-spaced for log_uniform)."""

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs 'low' and 'high'")
        if self.low >= self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        if self.type == "log_uniform" and self.low <= 0:
            raise ValueError(f"log_uniform needs low > 0, got {self.low}; use uniform for 0")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError(f"int bounds must be whole numbers, got {self.low}..{self.high}")
        return self


def default_space() -> dict[str, ParamSpec]:
    return {
        "finetune.lr": ParamSpec(type="log_uniform", low=3e-4, high=3e-2),
        "finetune.weight_decay": ParamSpec(type="log_uniform", low=1e-5, high=0.1),
        "finetune.batch_size": ParamSpec(type="categorical", choices=[None, 32, 64, 128]),
        "finetune.label_smoothing": ParamSpec(type="uniform", low=0.0, high=0.2),
    }


class PBTConfig(Section):
    """Population-based training (``strategy: pbt``)."""

    population: int = Field(8, ge=2, le=1024)
    """Members trained side by side."""

    interval_epochs: int = Field(2, ge=1)
    """Epochs between exploit/explore decisions."""

    quantile: float = Field(0.25, gt=0.0, le=0.5)
    """The bottom share of members copy the weights and parameters of a random member of the
    top share."""

    perturb_factors: tuple[float, float] = (0.8, 1.25)
    """Explore: each float/int parameter is multiplied by one of these (clipped to its
    range)."""

    resample_probability: float = Field(0.25, ge=0.0, le=1.0)
    """Explore: chance that a parameter is drawn afresh from its distribution instead."""


class TuneConfig(Section):
    enabled: bool = False
    """Run the tune stage before fine-tuning; its best parameters then train the model."""

    space: dict[str, ParamSpec] = Field(default_factory=default_space)
    """Searched keys (as ``--set`` spells them) and their distributions."""

    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    """What a trial is scored on, measured on the validation split each epoch."""

    direction: Literal["maximize", "minimize"] | None = None
    """None: maximize accuracy, minimize loss."""

    trials: int = Field(20, ge=1, le=100_000)
    """Trials that finish (complete or pruned), the default trial included; strategy pbt
    trains ``pbt.population`` members instead."""

    timeout_s: float | None = Field(None, gt=0)
    """Stop starting new trials after this many seconds of search (None: no limit)."""

    epochs: int | None = Field(None, ge=1)
    """Epochs per trial (the pruners' maximum resource); None uses ``finetune.epochs``."""

    min_epochs: int = Field(1, ge=1)
    """Epochs every trial runs before a pruner may stop it (ASHA/Hyperband minimum
    resource)."""

    reduction_factor: int = Field(3, ge=2)
    """ASHA/Hyperband: keep the top 1/reduction_factor at each rung."""

    seed: int = 0
    """Seed of the sampler (each worker offsets it so workers do not draw the same points)."""

    sampler: Literal["random", "grid", "tpe"] = "tpe"
    """Random search, the full grid (categorical/int values, ``grid_points`` per float
    range), or Bayesian optimization with a tree-structured Parzen estimator."""

    pruner: Literal["asha", "hyperband", "median", "none"] = "asha"
    """Early stopping of bad trials from their per-epoch validation metric."""

    strategy: Literal["search", "pbt"] = "search"
    """``search``: independent trials; ``pbt``: population-based training."""

    pbt: PBTConfig = PBTConfig()

    parallelism: int | Literal["auto"] = "auto"
    """Trial processes per worker (pod); ``auto`` is the number of CPU cores, or of GPUs when
    CUDA is visible."""

    pods: int = Field(1, ge=1, le=256)
    """Trial-worker pods on a cluster (a KFP ParallelFor sharing one study in the artifact
    store); locally the same DAG runs them one after another."""

    include_default: bool = True
    """Run the untuned config as the first trial (never pruned): the baseline the gain is
    measured against."""

    @model_validator(mode="after")
    def _check(self) -> TuneConfig:
        if self.parallelism != "auto" and self.parallelism < 1:
            raise ValueError(f"parallelism {self.parallelism} must be >= 1 or 'auto'")
        if self.enabled and not self.space:
            raise ValueError("tune.space is empty; name at least one key to search")
        if self.strategy == "pbt" and self.pods > 1:
            raise ValueError(
                f"strategy pbt steps its population in one pod, got pods {self.pods}; set "
                "tune.pods=1 and raise tune.parallelism for more processes"
            )
        if self.epochs is not None and self.min_epochs > self.epochs:
            raise ValueError(
                f"min_epochs {self.min_epochs} exceeds epochs {self.epochs}; lower min_epochs"
            )
        return self

    @property
    def resolved_direction(self) -> str:
        if self.direction is not None:
            return self.direction
        return "minimize" if self.metric == "val_loss" else "maximize"


def resolve_parallelism(setting: int | Literal["auto"]) -> int:
    if setting != "auto":
        return int(setting)
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, len(os.sched_getaffinity(0)))
