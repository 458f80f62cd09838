"""What pretrain and finetune share: process layout, checkpoints, the committed result."""

from __future__ import annotations

import os

import torch

from trainpipe.artifacts import ArtifactSet
from trainpipe.stages.context import StageContext, run_prefix
from trainpipe.train.checkpoint import CheckpointStore
from trainpipe.train.config import OptimConfig
from trainpipe.train.distributed import World, init_from_env, launch_torchrun, resolve_nproc
from trainpipe.train.trainer import resolve_device
from trainpipe.train.trainjob import CONFIG_ENV, TrainJobRunner, build_trainjob


def inside_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def run_training(ctx: StageContext, stage: str, cfg: OptimConfig, train_fn, **args) -> ArtifactSet:
    """Train in this process, or under torchrun with one process per GPU (N on CPU).

    ``train_fn(world=..., **args)`` trains and, on rank 0, commits the stage's artifacts.
    """
    nproc = resolve_nproc(cfg.nproc_per_node)
    if nproc > 1 and not inside_torchrun():
        from trainpipe.stages import pod

        launch_torchrun(
            nproc,
            pod.MODULE,
            pod.command(stage, ctx.run_id, args),
            env={CONFIG_ENV: ctx.cfg.to_json()},
            stage=stage,
        )
    else:
        train_fn(config_json=ctx.cfg.to_json(), run_id=ctx.run_id, **args)
    return ctx.open(ctx.store.uri_for(f"{run_prefix(ctx.run_id)}/{stage}"))


def launch_stage(ctx: StageContext, stage: str, inputs: dict[str, str], *, runner=None) -> str:
    """Run ``stage`` of ``ctx.run_id`` as a TrainJob; return the URI of what it committed."""
    from trainpipe.stages import pod

    entry = ["--module", pod.MODULE, *pod.command(stage, ctx.run_id, inputs)]
    manifest = build_trainjob(ctx.cfg, stage=stage, run_id=ctx.run_id, entry=entry)
    (runner or TrainJobRunner()).run(manifest)
    uri = ctx.store.uri_for(f"{run_prefix(ctx.run_id)}/{stage}")
    ctx.open(uri)  # the job must have committed its artifacts (manifest present, sha256 checked)
    return uri


def setup_world(cfg: OptimConfig) -> tuple[World, torch.device]:
    world = init_from_env(resolve_device(cfg.device))
    return world, resolve_device(cfg.device, world)


def checkpoint_store(ctx: StageContext, stage: str, cfg: OptimConfig) -> CheckpointStore:
    return CheckpointStore(ctx.store, ctx.run_id, stage, keep=cfg.keep_checkpoints)


def put_all(writer, files: dict[str, bytes | dict]) -> None:
    """Dicts are written as JSON, bytes as they are."""
    for name, data in files.items():
        if isinstance(data, dict):
            writer.put_json(name, data)
        else:
            writer.put_bytes(name, data)
