"""One Trainer for pretraining and fine-tuning.

    trainer = Trainer(cfg.finetune, model, Classification(), stage="finetune")
    result = trainer.fit(train_split, validation_split)
    result.history[-1].val_loss

What it does, in the order a step happens: a seeded permutation of the training split per epoch
(every rank derives the same one and takes its share of each global batch), gradient
accumulation over micro-batches, autocast (bf16, or fp16 with dynamic loss scaling on CUDA), a
non-finite loss guard, gradient clipping, the learning rate from a pure schedule function,
DDP/FSDP gradient averaging, checkpoints every N steps that resume bit for bit, per-epoch
validation, early stopping that restores the best weights. Only rank 0 writes and prints.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from trainpipe.data.datasets import Split
from trainpipe.data.streaming import StreamSplit, stream_loader
from trainpipe.errors import ConfigError, TrainingError
from trainpipe.train.checkpoint import CheckpointStore, restore_rng, rng_state
from trainpipe.train.config import OptimConfig
from trainpipe.train.distributed import World, all_reduce_sum
from trainpipe.train.objectives import Objective
from trainpipe.train.optim import build_optimizer
from trainpipe.train.schedule import get_lr

EVAL_BATCH_SIZE = 1024
SPIKE_WINDOW_STEPS = 20


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_metric: float
    lr: float
    wall_s: float


@dataclass
class TrainResult:
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    steps: int = 0
    samples_per_s: float = 0.0
    wall_s: float = 0.0
    metric_name: str = ""
    batch_size: int = 0
    steps_per_epoch: int = 0
    warmup_steps: int = 0
    max_epochs: int = 0
    patience_epochs: int | None = None
    skipped_steps: list[int] = field(default_factory=list)
    loss_spikes: list[int] = field(default_factory=list)
    resumed_from_step: int | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["history"] = [asdict(r) for r in self.history]
        return data


@dataclass
class _FitState:
    """What one ``fit`` carries from step to step (and what a checkpoint restores)."""

    x: torch.Tensor | None
    y: torch.Tensor | None
    examples: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    result: TrainResult
    progress: dict = field(
        default_factory=lambda: {"epoch": 1, "batch": 0, "step": 0, "loss_sum": 0.0, "count": 0.0}
    )
    best: dict = field(default_factory=lambda: {"loss": math.inf, "state": None, "stale": 0})
    recent_losses: deque[float] = field(default_factory=lambda: deque(maxlen=SPIKE_WINDOW_STEPS))
    started: float = field(default_factory=time.monotonic)
    lr: float = 0.0
    bar: Any = None
    stream: StreamSplit | None = None
    """A sharded training split, read batch by batch instead of held in ``x``/``y``."""
    pending: list = field(default_factory=list)
    """Steps taken but not yet booked (their losses may still be on the device)."""


def resolve_device(name: str, world: World | None = None) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("device 'cuda' was requested but no CUDA GPU is visible")
        return torch.device("cuda", world.local_rank if world else 0)
    return torch.device("cpu")


def _fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The sub-modules that get their own FSDP unit (the root holds the rest): the model's own
    choice (``fsdp_units()``: transformer blocks, so a tied embedding stays in the root with the
    output projection that reuses it), else every leaf module with trainable parameters."""
    units = getattr(model, "fsdp_units", None)
    if units is not None:
        return list(units())
    return [
        child
        for child in model.modules()
        if child is not model
        and len(list(child.children())) == 0
        and any(p.requires_grad for p in child.parameters(recurse=False))
    ]


def _step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """Randomness of one step (masks, augmentations) from (seed, step, rank) alone, so a resumed
    run draws exactly what the uninterrupted run drew."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 1009 + rank) % (2**63))


def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


class Trainer:
    def __init__(
        self,
        cfg: OptimConfig,
        model: nn.Module,
        objective: Objective,
        *,
        stage: str,
        world: World | None = None,
        checkpoints: CheckpointStore | None = None,
        param_groups: list[dict] | None = None,
        lr_factor: Callable[[dict[str, Any], int], float] | None = None,
        on_epoch_end: Callable[[EpochRecord], None] | None = None,
        on_step_end: Callable[[int, float | None], None] | None = None,
    ):
        """``param_groups`` replaces the default decay/no-decay groups; ``lr_factor(group,
        epoch)`` scales a group's learning rate (layer-wise decay; 0 keeps a block frozen);
        ``on_epoch_end`` receives each epoch's record on rank 0; ``on_step_end`` receives each
        optimizer step's index and this rank's mean loss (None: a skipped step) on rank 0
        (throughput meters, learning curves in tokens)."""
        self.cfg = cfg
        self.stage = stage
        self.objective = objective
        self.world = world or World()
        self.device = resolve_device(cfg.device, self.world)
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError(
                f"config error: {stage}.precision='fp16' needs a CUDA device; use bf16 on CPU"
            )
        self.checkpoints = checkpoints if self.world.is_main or checkpoints is None else None
        self._resume_source = checkpoints
        self.lr_factor = lr_factor or (lambda group, epoch: group.get("lr_scale", 1.0))
        self.on_epoch_end = on_epoch_end
        self.on_step_end = on_step_end if self.world.is_main else None
        self._template: nn.Module | None = None
        if self.world.distributed and cfg.parallelism == "fsdp":
            # fully_shard turns the parameters into shards in place: a weightless copy of the
            # structure lets plain_model() rebuild a whole module after training.
            self._template = copy.deepcopy(model).to("meta")
        names = {id(p): name for name, p in model.named_parameters()}
        self.model = model.to(self.device)
        self.train_model = self._wrap(self.model)
        if param_groups is not None and self._template is not None:
            # fully_shard replaced every parameter with a sharded one: groups built before
            # wrapping would update the discarded tensors, so they are rebuilt by name.
            current = dict(self.model.named_parameters())
            param_groups = [
                {**group, "params": [current[names[id(p)]] for p in group["params"]]}
                for group in param_groups
            ]
        self.optimizer = build_optimizer(self.model, cfg, param_groups)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)

    def _wrap(self, model: nn.Module) -> nn.Module:
        if not self.world.distributed:
            return model
        if self.cfg.parallelism == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            # An explicit mesh of this run's device type: the default would pick CUDA whenever
            # one is visible, also for a run on CPU.
            mesh = init_device_mesh(self.device.type, (self.world.size,))
            for unit in _fsdp_units(model):
                fully_shard(unit, mesh=mesh)
            return fully_shard(model, mesh=mesh)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    # -- state --------------------------------------------------------------------------------

    def _fsdp(self) -> bool:
        """True under FSDP; the root unit is then resharded first, since FSDP2 keeps the root's
        parameters whole after a forward pass, and state dicts must see every unit sharded."""
        if not (self.world.distributed and self.cfg.parallelism == "fsdp"):
            return False
        self.model.reshard()
        return True

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model's weights on CPU; a collective under FSDP, so every rank calls it."""
        if self._fsdp():
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_model_state_dict(self.model, options=options)
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def plain_model(self) -> nn.Module:
        """The trained model with whole weights, for evaluation, merging and export: the model
        itself, or under FSDP a plain copy on CPU built on every rank (a collective: every rank
        calls it)."""
        if self._template is None or not self._fsdp():
            return self.model
        from torch.distributed.tensor import DTensor

        state = {
            name: (value.full_tensor() if isinstance(value, DTensor) else value).detach().cpu()
            for name, value in self.model.state_dict().items()
        }
        plain = copy.deepcopy(self._template).to_empty(device="cpu")
        plain.load_state_dict(state)
        # Buffers left out of state dicts (rotary tables) are whole on every rank already.
        for name, buffer in self.model.named_buffers():
            plain.get_buffer(name).copy_(buffer)
        return plain

    def _load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        if self._fsdp():
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
            )

            # full_state_dict() gathers onto rank 0 only (cpu_offload), so the other ranks hold
            # an empty dict: rank 0's copy is broadcast and every rank keeps its own shard.
            options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
            set_model_state_dict(self.model, state, options=options)
        else:
            self.model.load_state_dict(state)

    def _optimizer_state(self) -> dict:
        if self._fsdp():
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_optimizer_state_dict,
            )

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_optimizer_state_dict(self.model, self.optimizer, options=options)
        return copy.deepcopy(self.optimizer.state_dict())

    def _load_optimizer_state(self, state: dict) -> None:
        if self._fsdp():
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_optimizer_state_dict,
            )

            set_optimizer_state_dict(
                self.model,
                self.optimizer,
                state,
                options=StateDictOptions(full_state_dict=True),
            )
        else:
            self.optimizer.load_state_dict(state)

    # -- training -----------------------------------------------------------------------------

    def fit(self, train: Split | StreamSplit, validation: Split | StreamSplit) -> TrainResult:
        """Restore (from the latest checkpoint, if any), then per epoch: train, validate and
        decide whether to stop; restore the best weights and write the final checkpoint."""
        run = self._restore(train)
        for epoch in range(run.progress["epoch"], self.cfg.epochs + 1):
            epoch_started = time.monotonic()
            self._train_epoch(run, epoch)
            if self._end_epoch(run, epoch, validation, time.monotonic() - epoch_started):
                break
        if run.bar is not None:
            run.bar.close()
        if run.best["state"] is not None:
            self._load_model_state(run.best["state"])
        result = run.result
        result.steps = run.progress["step"]
        result.wall_s = time.monotonic() - run.started
        trained_examples = run.examples * len(result.history)
        result.samples_per_s = trained_examples / max(result.wall_s, 1e-9)
        self._checkpoint(run.progress, run.best, result)
        return result

    def _restore(self, train: Split | StreamSplit) -> _FitState:
        """The state a fit starts from: fresh, or the latest checkpoint's (weights, optimizer,
        loss scaler, RNG, progress within the epoch, best-so-far and history)."""
        cfg, world = self.cfg, self.world
        streamed = isinstance(train, StreamSplit)
        if cfg.batch_size is None:
            raise ConfigError(
                f"config error: {self.stage} has no batch_size; resolve the automatic batch size "
                "(trainpipe.train.finetuning.resolve_schedule) or set one"
            )
        steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        run = _FitState(
            x=None if streamed else torch.as_tensor(train.x, device=self.device),
            y=None if streamed else torch.as_tensor(train.y, device=self.device),
            examples=len(train),
            # The stream's order follows this stage's seed, as the in-memory order does.
            stream=dataclasses.replace(train, seed=cfg.seed) if streamed else None,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            warmup_steps=int(cfg.warmup_fraction * total_steps),
            result=TrainResult(metric_name=self.objective.metric_name),
        )
        resumed = self._resume_source.latest() if self._resume_source else None
        if resumed is not None:
            self._load_model_state(resumed["model"])
            self._load_optimizer_state(resumed["optimizer"])
            self.scaler.load_state_dict(resumed["scaler"])
            restore_rng(resumed["rng"][world.rank] if world.distributed else resumed["rng"][0])
            run.progress = resumed["progress"]
            run.best = resumed["best"]
            run.result = TrainResult(**{**resumed["result"], "history": []})
            run.result.history = [EpochRecord(**r) for r in resumed["result"]["history"]]
            run.result.resumed_from_step = run.progress["step"]
            self._say(f"resumed from step {run.progress['step']} (epoch {run.progress['epoch']})")
        else:
            torch.manual_seed(cfg.seed + 7919 * world.rank)  # dropout differs across ranks
        run.result.batch_size = cfg.batch_size
        run.result.steps_per_epoch = steps_per_epoch
        run.result.warmup_steps = run.warmup_steps
        run.result.max_epochs = cfg.epochs
        run.result.patience_epochs = cfg.early_stopping_patience
        run.bar = self._progress_bar(total_steps, run.progress["step"])
        return run

    def _train_epoch(self, run: _FitState, epoch: int) -> None:
        """The optimizer steps of ``epoch`` from where ``run.progress`` stands."""
        cfg, progress = self.cfg, run.progress
        self.train_model.train()
        batches = self._epoch_batches(run, epoch)
        for batch in range(progress["batch"], run.steps_per_epoch):
            step = progress["step"]
            run.lr = get_lr(
                step,
                peak_lr=cfg.lr,
                total_steps=run.total_steps,
                warmup_steps=run.warmup_steps,
                schedule=cfg.schedule,
                steps_per_epoch=run.steps_per_epoch,
                step_every_epochs=cfg.step_every_epochs,
                step_gamma=cfg.step_gamma,
            )
            for group in self.optimizer.param_groups:
                group["lr"] = run.lr * self.lr_factor(group, epoch)
            x, y, local_index = next(batches)
            run.pending.append((step, self._optimizer_step(x, y, local_index, step, epoch)))
            progress["step"] = step + 1
            progress["batch"] = batch + 1
            checkpoint_due = bool(
                cfg.checkpoint_every_steps and progress["step"] % cfg.checkpoint_every_steps == 0
            )
            if (
                len(run.pending) >= cfg.loss_readback_every_steps
                or checkpoint_due
                or batch + 1 == run.steps_per_epoch
            ):
                self._settle(run, epoch)
            if checkpoint_due:
                self._checkpoint(progress, run.best, run.result)

    def _settle(self, run: _FitState, epoch: int) -> None:
        """Book the steps taken since the last call: read their losses back from the device
        (one sync for all of them), stop on a non-finite one (read-back every N steps), record
        spikes, the epoch's loss sum, progress hooks and the progress bar."""
        cfg, progress, recent_losses = self.cfg, run.progress, run.recent_losses
        pending, run.pending = run.pending, []
        on_device = [v for _, parts in pending for v, _ in parts or [] if torch.is_tensor(v)]
        if on_device:
            host = iter(torch.stack(on_device).tolist())
            pending = [
                (step, None if parts is None else [(next(host), n) for _, n in parts])
                for step, parts in pending
            ]
            bad = [s for s, parts in pending if any(not math.isfinite(v) for v, _ in parts)]
            # Every rank stops together (another rank's NaN reaches this one via gradients).
            (bad_ranks,) = all_reduce_sum([float(bool(bad))], self.device)
            if bad_ranks:
                raise self._nonfinite_error(bad[0] if bad else None, epoch)
        for step, parts in pending:
            step_loss = None
            if parts is None:
                run.result.skipped_steps.append(step)
            else:
                loss_sum = sum(value * n for value, n in parts)
                count = sum(n for _, n in parts)
                step_loss = loss_sum / max(count, 1)
                if recent_losses and step_loss > cfg.loss_spike_factor * (
                    sum(recent_losses) / len(recent_losses)
                ):
                    run.result.loss_spikes.append(step)
                    self._say(
                        f"loss spike at step {step}: {step_loss:.4f} vs recent mean "
                        f"{sum(recent_losses) / len(recent_losses):.4f}"
                    )
                recent_losses.append(step_loss)
                progress["loss_sum"] += loss_sum
                progress["count"] += count
            if self.on_step_end is not None:
                self.on_step_end(step, step_loss)
            if run.bar is not None:
                run.bar.update(1)
                run.bar.set_postfix(
                    epoch=epoch, loss=f"{recent_losses[-1]:.4f}" if recent_losses else "-"
                )

    def _nonfinite_error(self, step: int | None, epoch: int) -> TrainingError:
        where = f"step {step}" if step is not None else "a step (seen on another rank)"
        cfg = self.cfg
        return TrainingError(
            f"{self.stage}: the loss became non-finite at {where} (epoch {epoch}); "
            f"likely causes: learning rate {cfg.lr} too high, a bad initialization, "
            "fp16 overflow, or NaN/inf in the inputs. Lower the learning rate, enable "
            "grad_clip_norm, use bf16, or set on_nonfinite_loss=skip"
        )

    def _epoch_batches(self, run: _FitState, epoch: int):
        """(x, y, this rank's rows of x/y) per step of ``epoch`` from ``run.progress["batch"]``:
        indices into the in-memory split, or a streamed batch moved to the device."""
        cfg, world = self.cfg, self.world
        if run.stream is None:
            order = _epoch_order(cfg.seed, epoch, len(run.y)).to(self.device)
            for batch in range(run.progress["batch"], run.steps_per_epoch):
                global_index = order[batch * cfg.batch_size : (batch + 1) * cfg.batch_size]
                yield run.x, run.y, global_index[world.rank :: world.size]
            return
        loader = stream_loader(
            run.stream,
            epoch=epoch,
            batch_size=cfg.batch_size,
            start_batch=run.progress["batch"],
            rank=world.rank,
            world=world.size,
            pin_memory=self.device.type == "cuda",
        )
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            yield x, y, torch.arange(len(y), device=self.device)

    def _end_epoch(
        self, run: _FitState, epoch: int, validation: Split | StreamSplit, wall_s: float
    ) -> bool:
        """Validate, record and report the epoch, keep the best weights; True: stop early."""
        cfg, result = self.cfg, run.result
        loss_sum, count = all_reduce_sum(
            [run.progress["loss_sum"], run.progress["count"]], self.device
        )
        val_loss, val_metric = self.evaluate(validation)
        record = EpochRecord(
            epoch=epoch,
            train_loss=loss_sum / max(count, 1),
            val_loss=val_loss,
            val_metric=val_metric,
            lr=run.lr,
            wall_s=wall_s,
        )
        result.history.append(record)
        if self.on_epoch_end is not None and self.world.is_main:
            self.on_epoch_end(record)
        self._report(record, time.monotonic() - run.started, run.bar)
        stop = False
        if val_loss < run.best["loss"]:
            run.best = {"loss": val_loss, "state": None, "stale": 0}
            result.best_epoch = epoch
            if cfg.early_stopping_patience is not None:
                run.best["state"] = self.full_state_dict()
        else:
            run.best["stale"] += 1
            # Never during warmup: a loss judged before the learning rate has peaked says
            # nothing about the schedule's later steps.
            if (
                cfg.early_stopping_patience
                and run.best["stale"] >= cfg.early_stopping_patience
                and run.progress["step"] >= run.warmup_steps
            ):
                self._say(f"early stop at epoch {epoch}; restoring epoch {result.best_epoch}")
                stop = True
        run.progress.update(epoch=epoch + 1, batch=0, loss_sum=0.0, count=0.0)
        return stop

    def _optimizer_step(
        self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, step: int, epoch: int
    ) -> list[tuple[float | torch.Tensor, int]] | None:
        """One optimizer step over ``index`` (this rank's share); returns each micro-batch's
        mean loss and size (the loss still on the device when losses are read back every N
        steps), or None when a non-finite loss was skipped."""
        cfg = self.cfg
        generator = _step_generator(cfg.seed, step, self.world.rank)
        if cfg.grad_accumulation_steps == 1:
            micro_batches = [index]  # the common case, without the split's per-step cost
        else:
            micro_batches = [m for m in index.tensor_split(cfg.grad_accumulation_steps) if len(m)]
        every_step = cfg.loss_readback_every_steps == 1
        parts: list[tuple[float | torch.Tensor, int]] = []
        nonfinite = False
        for i, micro in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext()
            if not last and isinstance(self.train_model, nn.parallel.DistributedDataParallel):
                sync = self.train_model.no_sync()  # all-reduce gradients once per step
            with sync, self._autocast():
                loss, _ = self.objective.loss(self.train_model, x[micro], y[micro], generator)
                weighted = (
                    loss if len(micro_batches) == 1 else loss * (len(micro) / max(len(index), 1))
                )
            self.scaler.scale(weighted).backward()
            if every_step:
                # One host sync per micro-batch: the logged value also answers "finite?".
                value = loss.item()
                nonfinite = nonfinite or not math.isfinite(value)
                parts.append((value, len(micro)))
            else:
                parts.append((loss.detach(), len(micro)))  # read back (and checked) later
        if every_step:
            # Every rank must take the same decision, or DDP's next all-reduce would hang.
            (bad_ranks,) = all_reduce_sum([float(nonfinite)], self.device)
            if bad_ranks:
                self.optimizer.zero_grad(set_to_none=True)
                if cfg.on_nonfinite_loss == "stop":
                    raise self._nonfinite_error(step, epoch)
                self._say(f"skipped step {step}: non-finite loss")
                return None
        if cfg.grad_clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return parts

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _checkpoint(self, progress: dict, best: dict, result: TrainResult) -> None:
        """Every rank takes part (RNG states and sharded weights are gathered); rank 0 writes."""
        if self._resume_source is None:
            return
        state_rng = [rng_state()]
        if self.world.distributed:
            import torch.distributed as dist

            gathered: list = [None] * self.world.size
            dist.all_gather_object(gathered, state_rng[0])
            state_rng = gathered
        model_state = self.full_state_dict()
        optimizer_state = self._optimizer_state()
        if self.checkpoints is None:
            return
        state = {
            "model": model_state,
            "optimizer": optimizer_state,
            "scaler": self.scaler.state_dict(),
            "rng": state_rng,
            "progress": dict(progress),
            "best": best,
            "result": result.to_dict(),
        }
        self.checkpoints.save(progress["step"], state)

    @torch.no_grad()
    def evaluate(self, split: Split | StreamSplit) -> tuple[float, float]:
        """Mean loss and metric over a whole split, in eval mode. Every rank evaluates all of it
        (validation splits are small) so ranks never wait on each other here; a streamed split
        is read batch by batch."""
        model = self.train_model
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        model.eval()
        # A fixed generator makes validation masks and augmentations identical every epoch.
        generator = torch.Generator().manual_seed(self.cfg.seed + 1)
        loss_sum, metric_sum = 0.0, 0.0
        for batch_x, batch_y in self._eval_batches(split):
            with self._autocast():
                loss, metric = self.objective.loss(model, batch_x, batch_y, generator)
            loss_sum += loss.item() * len(batch_y)
            metric_sum += float(metric)
        return loss_sum / len(split), metric_sum / len(split)

    def _eval_batches(self, split: Split | StreamSplit):
        if isinstance(split, StreamSplit):
            loader = stream_loader(
                split,
                epoch=0,
                batch_size=EVAL_BATCH_SIZE,
                shuffle=False,
                pin_memory=self.device.type == "cuda",
            )
            for x, y in loader:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        x = torch.as_tensor(split.x, device=self.device)
        y = torch.as_tensor(split.y, device=self.device)
        for start in range(0, len(y), EVAL_BATCH_SIZE):
            yield x[start : start + EVAL_BATCH_SIZE], y[start : start + EVAL_BATCH_SIZE]

    # -- progress -----------------------------------------------------------------------------

    def _say(self, message: str) -> None:
        if self.world.is_main:
            print(f"[{self.stage}] {message}", file=sys.stderr, flush=True)

    def _progress_bar(self, total_steps: int, done_steps: int):
        if not (self.world.is_main and sys.stderr.isatty()):
            return None
        from tqdm import tqdm

        return tqdm(
            total=total_steps, initial=done_steps, desc=self.stage, unit="step", leave=False
        )

    def _report(self, record: EpochRecord, elapsed_s: float, bar) -> None:
        epochs = self.cfg.epochs
        # About ten lines per stage: enough to follow, few enough to read.
        if record.epoch % max(1, epochs // 10) and record.epoch != epochs:
            return
        eta_s = elapsed_s / max(record.epoch, 1) * (epochs - record.epoch)
        line = (
            f"epoch {record.epoch:>3}/{epochs} train_loss {record.train_loss:.4f} "
            f"val_loss {record.val_loss:.4f} {self.objective.metric_name} "
            f"{record.val_metric:.4f} lr {record.lr:.2e} eta {eta_s:.0f}s"
        )
        if bar is not None:
            bar.write(f"[{self.stage}] {line}", file=sys.stderr)
        else:
            self._say(line)
