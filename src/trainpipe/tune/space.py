"""The search space: drawing parameters, applying them to a config, PBT's perturbations.

A parameter set is a flat ``{dotted key: value}`` dict, the same keys ``--set`` accepts, so a
trial's config is the base config with those keys replaced and validated again.
"""

from __future__ import annotations

import json
import math
import random
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from trainpipe.tune.config import ParamSpec, PBTConfig

if TYPE_CHECKING:
    import optuna

    from trainpipe.config import Config

# Sections a trial may change: fine-tuning always; pretraining (each trial then pretrains its
# own encoder); the architecture when no shared pretrained encoder fixes it.
TUNABLE_SECTIONS = ("finetune", "pretrain", "model")


def searches_pretraining(space: dict[str, ParamSpec]) -> bool:
    """Trials pretrain their own encoder, so the tune stage runs before pretrain."""
    return any(key.startswith("pretrain.") for key in space)


def fresh_encoder(space: dict[str, ParamSpec]) -> bool:
    """Trials build their encoder rather than start from the pretrain stage's."""
    return searches_pretraining(space) or any(key.startswith("model.") for key in space)


def suggest(trial: optuna.Trial, space: dict[str, ParamSpec]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, spec in space.items():
        if spec.type == "categorical":
            params[key] = trial.suggest_categorical(key, spec.choices)
        elif spec.type == "int":
            params[key] = trial.suggest_int(
                key, int(spec.low), int(spec.high), step=int(spec.step or 1)
            )
        else:
            params[key] = trial.suggest_float(
                key, spec.low, spec.high, log=spec.type == "log_uniform", step=spec.step
            )
    return params


def grid(space: dict[str, ParamSpec]) -> dict[str, list[Any]]:
    """Every parameter as a finite list of values, for optuna's GridSampler."""
    values: dict[str, list[Any]] = {}
    for key, spec in space.items():
        if spec.type == "categorical":
            values[key] = list(spec.choices)
        elif spec.type == "int":
            values[key] = list(range(int(spec.low), int(spec.high) + 1, int(spec.step or 1)))
        elif spec.step is not None:
            values[key] = [float(v) for v in np.arange(spec.low, spec.high + 1e-12, spec.step)]
        elif spec.type == "log_uniform":
            values[key] = [float(v) for v in np.geomspace(spec.low, spec.high, spec.grid_points)]
        else:
            values[key] = [float(v) for v in np.linspace(spec.low, spec.high, spec.grid_points)]
    return values


def grid_size(space: dict[str, ParamSpec]) -> int:
    return math.prod(len(v) for v in grid(space).values())


def current_values(cfg: Config, keys: list[str]) -> dict[str, Any]:
    """The values ``cfg`` has for the searched keys: the untuned default trial."""
    values = {}
    for key in keys:
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part)
        values[key] = node
    return values


def _raw_with(raw: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    for key, value in params.items():
        node = raw
        *sections, name = key.split(".")
        for part in sections:
            node = node[part]
        node[name] = value
    return raw


def apply_params(cfg: Config, params: dict[str, Any]) -> Config:
    """``cfg`` with the parameters set, validated again (ConfigError on a bad combination)."""
    from trainpipe.config import Config

    raw = _raw_with(json.loads(cfg.to_json()), params)
    return Config.from_json(json.dumps(raw))


def contains(spec: ParamSpec, value: Any) -> bool:
    if spec.type == "categorical":
        return value in spec.choices
    return isinstance(value, int | float) and spec.low <= value <= spec.high


def check_space(cfg: Config) -> None:
    """Every searched key exists and every bound or choice is a valid value for it; raises
    ValueError naming the key and the fix."""
    for key, spec in cfg.tune.space.items():
        section, _, rest = key.partition(".")
        if section not in TUNABLE_SECTIONS or not rest:
            raise ValueError(
                f"tune.space key {key!r} is not tunable; use finetune.<key> or model.<key>"
            )
        pretrains = searches_pretraining(cfg.tune.space)
        if section == "model" and cfg.pretrain.enabled and not pretrains:
            raise ValueError(
                f"tune.space key {key!r} changes the architecture, which the pretrained "
                "encoder fixes; set pretrain.enabled=false, or search pretrain.* keys too "
                "(each trial then pretrains)"
            )
        if section == "pretrain" and (not cfg.pretrain.enabled or rest == "enabled"):
            raise ValueError(
                f"tune.space key {key!r}: pretraining keys are searched with "
                "pretrain.enabled=true and pretrain.enabled itself is not searchable"
            )
        if pretrains and cfg.tune.strategy == "pbt":
            raise ValueError(
                f"tune.space key {key!r}: strategy pbt adapts fine-tuning only; remove the "
                "pretrain.* keys or use strategy search"
            )
        node: Any = cfg
        for part in key.split("."):
            fields = getattr(type(node), "model_fields", {})
            if part not in fields:
                allowed = f"; allowed here: {', '.join(fields)}" if fields else ""
                raise ValueError(f"tune.space key {key!r}: {part!r} is not a config key{allowed}")
            node = getattr(node, part)
        if cfg.tune.include_default and not contains(spec, node):
            raise ValueError(
                f"tune.space[{key!r}] does not contain the current value {node!r}, which the "
                "default trial runs; widen the range (or add it to choices) or set "
                "tune.include_default=false"
            )
        candidates = spec.choices if spec.type == "categorical" else [spec.low, spec.high]
        for value in candidates:
            if spec.type == "int":
                value = int(value)
            raw = json.loads(cfg.to_json())
            raw["tune"] = {"space": {}}  # check the value alone, without recursing here
            try:
                type(cfg).model_validate(_raw_with(raw, {key: value}))
            except ValidationError as exc:
                reason = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
                raise ValueError(f"tune.space[{key!r}]: {value!r} is not valid: {reason}") from None


def perturb(
    params: dict[str, Any],
    space: dict[str, ParamSpec],
    pbt: PBTConfig,
    rng: random.Random,
) -> dict[str, Any]:
    """PBT's explore step: resample a parameter now and then, else scale it by a factor."""
    new = dict(params)
    for key, spec in space.items():
        if spec.type == "categorical":
            if rng.random() < pbt.resample_probability:
                new[key] = rng.choice(spec.choices)
            continue
        if rng.random() < pbt.resample_probability:
            if spec.type == "log_uniform":
                value: float = math.exp(rng.uniform(math.log(spec.low), math.log(spec.high)))
            else:
                value = rng.uniform(spec.low, spec.high)
        else:
            value = new[key] * rng.choice(pbt.perturb_factors)
        value = min(max(value, spec.low), spec.high)
        new[key] = round(value) if spec.type == "int" else float(value)
    return new


def sample(space: dict[str, ParamSpec], rng: random.Random) -> dict[str, Any]:
    """A random point (PBT's initial population)."""
    params: dict[str, Any] = {}
    for key, spec in space.items():
        if spec.type == "categorical":
            params[key] = rng.choice(spec.choices)
        elif spec.type == "int":
            params[key] = rng.randint(int(spec.low), int(spec.high))
        elif spec.type == "log_uniform":
            params[key] = math.exp(rng.uniform(math.log(spec.low), math.log(spec.high)))
        else:
            params[key] = rng.uniform(spec.low, spec.high)
    return params
