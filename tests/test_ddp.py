"""Data-parallel training: 2 processes (gloo, CPU) launched by torchrun agree exactly."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import torch
from test_training import VALID, ToyTask, config, read_log

from audiointerp.training.loop import Trainer

TESTS = Path(__file__).parent

WORKER = """
import os, sys, torch
sys.path.insert(0, {tests!r})
from test_training import ToyTask, TRAIN, VALID, config
from audiointerp.training.loop import Trainer

trainer = Trainer(ToyTask(), config(epochs=3), {folder!r})
result = trainer.fit(TRAIN, VALID)
rank = os.environ["RANK"]
torch.save(trainer.task.model.state_dict(), os.path.join({folder!r}, f"rank{{rank}}.pt"))
print(f"rank {{rank}} best epoch {{result.best_epoch}}")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_ranks_end_with_identical_weights(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(TESTS), folder=str(tmp_path / "run")))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"run/rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    assert not torch.equal(ranks[0]["2.weight"], ToyTask().model[2].weight.detach())  # trained

    # Only rank 0 wrote the run files; its validation (sharded + all-reduced) equals a
    # single-process evaluation of the same weights.
    lines = (tmp_path / "run/train_log.txt").read_text().splitlines()
    assert len(lines) == 3
    task = ToyTask()
    task.model.load_state_dict(ranks[0])
    single = Trainer(task, config(), tmp_path / "single").evaluate(VALID)
    logged = read_log(tmp_path / "run")[-1]["valid"]
    assert abs(single["accuracy"] - logged["accuracy"]) < 1e-4
    assert abs(single["loss"] - logged["loss"]) < 1e-3 * single["loss"]
