"""The one training loop every recipe uses (classifiers and interpreters alike).

Read top to bottom: seed, build optimiser and schedule, resume, then per epoch train,
validate, select the best epoch, write checkpoints atomically. What is trained and how its
loss/metrics are computed lives in a :class:`Task` (see ``tasks.py``).

Files in ``output_folder`` (only the main process writes):

    model/        best epoch so far (our checkpoint format, ``save_checkpoint``)
    train_state/  state.pt: last completed epoch (weights, optimiser, schedule, RNG, best
                  value, log lines); plain tensors/numbers, loadable with weights_only
    train_log.txt one line per completed epoch (rewritten atomically from train_state)

A killed run restarted with the same command continues after the last completed epoch and
ends with the same weights as an uninterrupted run (CPU, ``num_workers`` 0 or seeded).
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from audiointerp.checkpoints import save_checkpoint
from audiointerp.config import ConfigError
from audiointerp.io import atomic_write, write_text_atomic
from audiointerp.training import ddp

STATE_FILE = "state.pt"


@dataclass
class CyclicSchedule:
    """Triangular cycle between ``base_lr`` and ``max_lr``, ``step_size`` train batches per
    half cycle, stepped per train batch; it sets Adam's rate, so ``train.lr`` is unused."""

    name: Literal["cyclic"] = "cyclic"
    base_lr: float = 2e-6
    max_lr: float = 2e-5
    step_size: int = 65000


@dataclass
class PlateauSchedule:
    """``train.lr`` times ``factor`` when ``select_metric`` has not improved for ``patience``
    epochs, not before epoch ``start_epoch``, down to ``min_lr``."""

    name: Literal["plateau"] = "plateau"
    factor: float = 0.5
    patience: int = 3
    start_epoch: int = 0
    min_lr: float = 1e-8


@dataclass
class NoSchedule:
    """A constant ``train.lr``."""

    name: Literal["none"] = "none"


Schedule = CyclicSchedule | PlateauSchedule | NoSchedule


@dataclass
class TrainConfig:
    """Optimisation settings shared by every recipe.

    ``scheduler`` is a tagged section (``{name: cyclic|plateau|none, ...}``). ``lr`` is Adam's
    rate for ``plateau``/``none`` (required there) and must be absent with ``cyclic``, whose
    range sets the rate. ``select_metric`` is a validation statistic (a key of the task's
    ``validation_step``).
    """

    epochs: int = 200
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 2e-6
    grad_clip: float = 5.0  # max gradient norm; 0 disables clipping
    scheduler: Schedule = field(default_factory=CyclicSchedule)
    seed: int = 1234
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = 0
    select_metric: str = "accuracy"
    select_mode: Literal["max", "min"] = "max"

    def __post_init__(self) -> None:
        cyclic = isinstance(self.scheduler, CyclicSchedule)
        if cyclic and self.lr is not None:
            raise ValueError("lr is unused with scheduler cyclic (base_lr..max_lr set the rate)")
        if not cyclic and self.lr is None:
            raise ValueError(f"lr is required with scheduler {self.scheduler.name}")

    @property
    def initial_lr(self) -> float:
        """Adam's starting rate: ``lr``, or the cyclic schedule's ``base_lr``."""
        if isinstance(self.scheduler, CyclicSchedule):
            return self.scheduler.base_lr
        assert self.lr is not None
        return self.lr


class Task(Protocol):
    """What the trainer trains: a module plus how to compute its loss and metrics."""

    model: nn.Module  # the trainable module (its parameters with requires_grad go to Adam)

    def to(self, device: torch.device) -> None:
        """Move every module the task uses (trainable or frozen) to ``device``."""

    def training_step(self, batch: Any) -> dict[str, Tensor]:
        """Scalars: ``loss`` (differentiated) and ``loss/<x>``, ``metric/<y>`` (logged)."""

    def validation_step(self, batch: Any) -> dict[str, Tensor]:
        """Per-example (B,) values (or batch scalars), averaged over the epoch by count."""

    def end_epoch(self) -> dict[str, float]:
        """After each training epoch, on every rank: extra statistics for the train log."""

    def checkpoint(self) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]]:
        """(tensors, config, meta) of the ``model/`` checkpoint folder."""


@dataclass
class FitResult:
    """The selected epoch and its validation statistic."""

    best_epoch: int
    best_value: float


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def move_to(batch: Any, device: torch.device) -> Any:
    """Tensors anywhere inside tuples/lists/dicts -> ``device``; other values unchanged."""
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(item, device) for item in batch)
    if isinstance(batch, dict):
        return {key: move_to(value, device) for key, value in batch.items()}
    return batch


def batch_size_of(batch: Any) -> int:
    """Leading dimension of the first tensor in a batch."""
    if isinstance(batch, Tensor):
        return batch.shape[0]
    items = batch.values() if isinstance(batch, dict) else batch
    for item in items:
        if isinstance(item, Tensor):
            return item.shape[0]
    raise AssertionError("batch holds no tensor")


class _TrainingStep(nn.Module):
    """``task.training_step`` as a module forward, so DDP can synchronise its gradients."""

    def __init__(self, task: Task):
        super().__init__()
        self.model = task.model
        self.task = task

    def forward(self, batch: Any) -> dict[str, Tensor]:
        return self.task.training_step(batch)


class Trainer:
    """Trains ``task.model`` with Adam + schedule; see the module docstring for the files."""

    def __init__(
        self,
        task: Task,
        config: TrainConfig,
        output_folder: str | os.PathLike,
        meta: dict[str, Any] | None = None,
    ):
        """``meta``: extra entries for the best checkpoint's meta.json (e.g. clip length)."""
        self.task = task
        self.config = config
        self.meta = dict(meta or {})
        self.output_folder = Path(output_folder)
        self.env, self.device = ddp.init_distributed(config.device)
        self.task.to(self.device)
        self.parameters = [p for p in task.model.parameters() if p.requires_grad]
        assert self.parameters, "the task's model has no trainable parameters"
        self.optimizer = torch.optim.Adam(
            self.parameters, lr=config.initial_lr, weight_decay=config.weight_decay
        )
        self.scheduler = self._build_scheduler()

    def _build_scheduler(self) -> Any:
        schedule = self.config.scheduler
        if isinstance(schedule, CyclicSchedule):
            return torch.optim.lr_scheduler.CyclicLR(
                self.optimizer,
                base_lr=schedule.base_lr,
                max_lr=schedule.max_lr,
                step_size_up=schedule.step_size,
                mode="triangular",
                cycle_momentum=False,
            )
        if isinstance(schedule, PlateauSchedule):
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer,
                mode=self.config.select_mode,
                factor=schedule.factor,
                patience=schedule.patience,
                min_lr=schedule.min_lr,
            )
        return None

    def log(self, message: str) -> None:
        if self.env.is_main:
            tqdm.write(message)

    # ---------------------------------------------------------------- fit
    def fit(self, train_set: Dataset, valid_set: Dataset) -> FitResult:
        """Train from the last completed epoch (or from scratch) to ``config.epochs``."""
        cfg = self.config
        seed_everything(cfg.seed + self.env.rank)
        state = self._load_state()
        start_epoch = state["epoch"] if state else 0
        best_epoch = state["best_epoch"] if state else 0
        best_value = state["best_value"] if state else math.nan
        log_lines: list[str] = list(state["log"]) if state else []
        if state:
            self.log(
                f"resuming {self.output_folder}: epoch {start_epoch} of {cfg.epochs} "
                f"completed, continuing from epoch {start_epoch + 1}"
            )

        sampler = DistributedSampler(
            train_set,  # type: ignore[arg-type]
            num_replicas=self.env.world_size,
            rank=self.env.rank,
            shuffle=True,
            seed=cfg.seed,
        )
        loader = DataLoader(
            train_set,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.num_workers,
            drop_last=len(sampler) % cfg.batch_size == 1,  # BatchNorm cannot train on 1 example
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        step: nn.Module = _TrainingStep(self.task)
        if self.env.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            step = DistributedDataParallel(step, device_ids=device_ids)

        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            sampler.set_epoch(epoch)  # the shuffle is a function of seed + epoch
            train_stats = self._train_epoch(step, loader, epoch) | self.task.end_epoch()
            ddp.broadcast_buffers(self.task.model)  # all ranks validate one model
            valid_stats = self.evaluate(valid_set)
            if cfg.select_metric not in valid_stats:
                raise ConfigError(
                    f"train.select_metric: {cfg.select_metric!r} is not a validation "
                    f"statistic (available: {', '.join(sorted(valid_stats))})"
                )
            value = valid_stats[cfg.select_metric]
            schedule = cfg.scheduler
            if isinstance(schedule, PlateauSchedule) and epoch >= schedule.start_epoch:
                self.scheduler.step(value)
            if best_epoch == 0 or self._better(value, best_value):
                best_epoch, best_value = epoch, value
                self._save_best(epoch, valid_stats)
            log_lines.append(self._format_line(epoch, train_stats, valid_stats))
            self.log(log_lines[-1] + (" (best)" if best_epoch == epoch else ""))
            self._save_state(epoch, best_epoch, best_value, log_lines)
        return FitResult(best_epoch=best_epoch, best_value=best_value)

    def _better(self, value: float, best: float) -> bool:
        return value > best if self.config.select_mode == "max" else value < best

    def _train_epoch(self, step: nn.Module, loader: DataLoader, epoch: int) -> dict[str, float]:
        """One pass over the training set; returns the example-weighted means of the step."""
        cfg = self.config
        self.task.model.train()
        sums: dict[str, float] = {}
        count = 0
        bar = tqdm(
            loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=not self.env.is_main
        )
        for batch in bar:
            batch = move_to(batch, self.device)
            outputs = step(batch)
            loss = outputs["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch}: loss is {loss.item()}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.parameters, cfg.grad_clip)
            self.optimizer.step()
            if isinstance(cfg.scheduler, CyclicSchedule):
                self.scheduler.step()  # per train batch (the reference also stepped on valid)
            size = batch_size_of(batch)
            count += size
            for key, value in outputs.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach()) * size
            bar.set_postfix(
                {k.removeprefix("metric/"): f"{v / count:.3f}" for k, v in sums.items()}
                | {"lr": f"{self.optimizer.param_groups[0]['lr']:.2e}"}
            )
        return _reduce_means(sums, {key: count for key in sums}, self.device)

    def evaluate(self, dataset: Dataset) -> dict[str, float]:
        """Means of ``task.validation_step`` over ``dataset`` (sharded over ranks, reduced)."""
        return evaluate(self.task, dataset, self.config.batch_size, self.device, self.env)

    # ------------------------------------------------------- checkpoints
    def _save_best(self, epoch: int, valid_stats: dict[str, float]) -> None:
        if not self.env.is_main:
            return
        tensors, config, meta = self.task.checkpoint()
        meta = {**meta, **self.meta, "epoch": epoch, "valid": valid_stats}
        save_checkpoint(self.output_folder / "model", tensors, config, meta)

    def _save_state(
        self, epoch: int, best_epoch: int, best_value: float, log_lines: list[str]
    ) -> None:
        """Write train_state/state.pt (temp + rename), then the log derived from it."""
        if not self.env.is_main:
            return
        state = {
            "epoch": epoch,
            "best_epoch": best_epoch,
            "best_value": best_value,
            "log": log_lines,
            "model": self.task.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else {},
            "rng": _rng_state(),
        }
        path = self.output_folder / "train_state" / STATE_FILE
        with atomic_write(path) as temporary:
            torch.save(state, temporary)
        write_text_atomic(self.output_folder / "train_log.txt", "\n".join(log_lines) + "\n")

    def _load_state(self) -> dict[str, Any] | None:
        path = self.output_folder / "train_state" / STATE_FILE
        if not path.is_file():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.task.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler:
            self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        return state

    def _format_line(
        self, epoch: int, train_stats: dict[str, float], valid_stats: dict[str, float]
    ) -> str:
        def fmt(stats: dict[str, float]) -> str:
            return ", ".join(f"{key}: {value:.4g}" for key, value in stats.items())

        lr = self.optimizer.param_groups[0]["lr"]
        return f"epoch: {epoch}, lr: {lr:.3e} - train {fmt(train_stats)} - valid {fmt(valid_stats)}"


@torch.no_grad()
def evaluate(
    task: Task,
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    env: ddp.DistEnv | None = None,
) -> dict[str, float]:
    """Example-weighted means of ``task.validation_step`` over ``dataset``, in eval mode.

    Under DDP each rank takes every ``world_size``-th example and the sums are reduced,
    so every example counts exactly once.
    """
    env = env or ddp.DistEnv()
    task.model.eval()
    shard = Subset(dataset, range(env.rank, len(dataset), env.world_size))  # type: ignore[arg-type]
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc="evaluate", leave=False, disable=not env.is_main):
        batch = move_to(batch, device)
        size = batch_size_of(batch)
        for key, value in task.validation_step(batch).items():
            value = value.detach().double()
            assert value.dim() == 0 or value.shape == (size,), (
                f"validation_step[{key!r}] has shape {tuple(value.shape)}; want () or ({size},)"
            )
            sums[key] = sums.get(key, 0.0) + float(value.sum() if value.dim() else value * size)
            counts[key] = counts.get(key, 0) + size
    return _reduce_means(sums, counts, device)


def _reduce_means(
    sums: dict[str, float], counts: dict[str, int], device: torch.device
) -> dict[str, float]:
    """Example-weighted means, summed over every rank first."""
    keys = list(sums)  # the step's own order, the same on every rank
    totals = torch.tensor(
        [sums[k] for k in keys] + [counts[k] for k in keys], dtype=torch.float64, device=device
    )
    totals = ddp.all_reduce_sum(totals).tolist()
    return {k: totals[i] / max(totals[len(keys) + i], 1) for i, k in enumerate(keys)}


def _rng_state() -> dict[str, Any]:
    """Every RNG the loop draws from, as tensors and numbers (weights_only-loadable)."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
