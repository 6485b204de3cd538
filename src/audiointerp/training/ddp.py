"""Multi-process data parallelism from ``torchrun``'s environment variables.

``torchrun --nproc_per_node=N script.py ...`` sets RANK, WORLD_SIZE and LOCAL_RANK (and
MASTER_ADDR/PORT); without them the run is a single process and nothing here does any
communication. Backend: gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints progress."""
        return self.rank == 0


def resolve_device(name: str, env: DistEnv) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` -> a device; never assumes CUDA is present."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
        return torch.device("cuda", env.local_rank)
    assert name == "cpu", f"unknown device {name!r}"
    return torch.device("cpu")


def init_distributed(device_name: str) -> tuple[DistEnv, torch.device]:
    """Join the process group described by torchrun's variables (idempotent).

    Returns this process's place in the job and its device (``cuda:LOCAL_RANK`` on GPU).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv(), resolve_device(device_name, DistEnv())
    env = DistEnv(
        rank=int(os.environ["RANK"]),
        world_size=world_size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    device = resolve_device(device_name, env)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=env.rank, world_size=env.world_size)
    return env, device


def launched_as_main() -> bool:
    """True unless torchrun started this process with a rank other than 0."""
    return int(os.environ.get("RANK", "0")) == 0


def shutdown() -> None:
    """Leave the process group (after training; evaluation then runs per process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: Tensor) -> Tensor:
    """Sum a tensor over all processes (identity when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running stats) to every rank, so all agree."""
    if dist.is_available() and dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)
