"""torch.distributed for the training stages: one process per GPU (or N CPU processes).

A stage that wants more than one process re-launches itself under torchrun:

    torchrun --nproc_per_node=2 -m trainpipe.stages.pod <stage> --run-id ID --input ...

Inside a worker, ``init_from_env()`` joins the process group (NCCL on CUDA, gloo on CPU) from
torchrun's RANK / WORLD_SIZE / LOCAL_RANK variables; a plain process is world size 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from trainpipe.errors import TrainingError


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes artifacts, checkpoints and progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_from_env(device: torch.device) -> World:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return World(rank=rank, local_rank=local_rank, size=world_size)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum per-rank numbers (loss sums, counts) over all ranks; identity in one process."""
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def broadcast_object(obj, world: World):
    """Rank 0's value on every rank (e.g. the artifact URI rank 0 committed)."""
    if not world.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def resolve_nproc(nproc_per_node: int | str) -> int:
    if nproc_per_node == "auto":
        return max(1, torch.cuda.device_count())
    return int(nproc_per_node)


def launch_torchrun(
    nproc: int, module: str, args: list[str], *, env: dict[str, str], stage: str
) -> None:
    """Run ``python -m module args`` under torchrun in this pod (``env`` added) and wait."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        module,
        *args,
    ]
    done = subprocess.run(command, check=False, env={**os.environ, **env})
    if done.returncode != 0:
        raise TrainingError(
            f"{stage}: torchrun with {nproc} processes failed (exit {done.returncode}); "
            "the failing rank's error is in the log above"
        )
