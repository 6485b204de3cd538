"""The training loop on a toy task: learning, determinism, resume, kill, selection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from audiointerp.checkpoints import load_checkpoint
from audiointerp.config import ConfigError
from audiointerp.training.loop import (
    CyclicSchedule,
    NoSchedule,
    PlateauSchedule,
    TrainConfig,
    Trainer,
)


class ToyTask:
    """Linear classifier with BatchNorm and dropout (buffers and RNG both matter)."""

    def __init__(self, crash_at_step: int = 0):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.BatchNorm1d(4), nn.Dropout(0.2), nn.Linear(4, 3))
        self.crash_at_step = crash_at_step  # training_step call that raises (0: never)
        self.steps = 0

    def to(self, device: torch.device) -> None:
        self.model.to(device)

    def training_step(self, batch: Any) -> dict[str, Tensor]:
        self.steps += 1
        if self.steps == self.crash_at_step:
            raise KeyboardInterrupt("simulated kill")
        inputs, labels = batch
        logits = self.model(inputs)
        return {
            "loss": nn.functional.cross_entropy(logits, labels),
            "metric/accuracy": (logits.argmax(-1) == labels).float().mean(),
        }

    def validation_step(self, batch: Any) -> dict[str, Tensor]:
        inputs, labels = batch
        logits = self.model(inputs)
        return {
            "loss": nn.functional.cross_entropy(logits, labels, reduction="none"),
            "accuracy": (logits.argmax(-1) == labels).float(),
        }

    def end_epoch(self) -> dict[str, float]:
        return {"metric/weight_norm": float(self.model[2].weight.detach().norm())}

    def checkpoint(self) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]]:
        state = {f"toy.{k}": v for k, v in self.model.state_dict().items()}
        return state, {"name": "toy"}, {"class_names": ["a", "b", "c"]}


def toy_data(n: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=generator)
    centres = torch.tensor([[2.0, 0, 0, 1], [0, 2.0, 0, -1], [0, 0, 2.0, 0]])
    inputs = centres[labels] + 0.8 * torch.randn(n, 4, generator=generator)
    return TensorDataset(inputs, labels)


TRAIN, VALID = toy_data(60, 1), toy_data(24, 2)


def config(**overrides: Any) -> TrainConfig:
    base = dict(epochs=4, batch_size=8, lr=0.05, scheduler=NoSchedule(), device="cpu", seed=7)
    return TrainConfig(**{**base, **overrides})


CYCLIC = CyclicSchedule(base_lr=0.01, max_lr=0.1, step_size=3)


def weights(folder: Path) -> dict[str, Tensor]:
    return torch.load(folder / "train_state" / "state.pt", weights_only=True)["model"]


def read_log(folder: Path) -> list[dict[str, dict[str, float]]]:
    """train_log.txt -> per epoch {"train": {...}, "valid": {...}}."""
    epochs = []
    for line in (folder / "train_log.txt").read_text().splitlines():
        _, train, valid = line.split(" - ")
        parts = {"train": train.removeprefix("train "), "valid": valid.removeprefix("valid ")}
        epochs.append(
            {
                name: {k: float(v) for k, v in (item.split(": ") for item in text.split(", "))}
                for name, text in parts.items()
            }
        )
    return epochs


def assert_same(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_loss_decreases_and_log_has_one_line_per_epoch(tmp_path: Path) -> None:
    Trainer(ToyTask(), config(epochs=6), tmp_path).fit(TRAIN, VALID)
    lines = (tmp_path / "train_log.txt").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == [f"epoch: {e}" for e in range(1, 7)]
    log = read_log(tmp_path)
    assert log[-1]["train"]["loss"] < 0.6 * log[0]["train"]["loss"]
    assert log[-1]["valid"]["loss"] < 0.5 * log[0]["valid"]["loss"]
    assert log[-1]["valid"]["accuracy"] > 0.8
    # the task's end-of-epoch statistics reach the train log (PIQ logs codebook usage so)
    norms = [entry["train"]["metric/weight_norm"] for entry in log]
    assert len(set(norms)) == 6 and norms[-1] == pytest.approx(
        float(
            torch.load(tmp_path / "train_state" / "state.pt", weights_only=True)["model"][
                "2.weight"
            ].norm()
        ),
        rel=1e-3,
    )


def test_same_seed_gives_bit_identical_weights(tmp_path: Path) -> None:
    for run in ("a", "b"):
        Trainer(
            ToyTask(),
            config(scheduler=CyclicSchedule(base_lr=0.01, max_lr=0.1, step_size=5), lr=None),
            tmp_path / run,
        ).fit(TRAIN, VALID)
    assert_same(weights(tmp_path / "a"), weights(tmp_path / "b"))
    Trainer(ToyTask(), config(seed=8), tmp_path / "c").fit(TRAIN, VALID)
    assert not torch.equal(weights(tmp_path / "a")["2.weight"], weights(tmp_path / "c")["2.weight"])


@pytest.mark.parametrize(
    "cfg", [{"scheduler": CYCLIC, "lr": None}, {"scheduler": PlateauSchedule(patience=0)}]
)
def test_resume_matches_uninterrupted_run(tmp_path: Path, cfg: dict[str, Any]) -> None:
    Trainer(ToyTask(), config(**cfg), tmp_path / "straight").fit(TRAIN, VALID)
    Trainer(ToyTask(), config(**cfg, epochs=2), tmp_path / "resumed").fit(TRAIN, VALID)
    assert torch.load(tmp_path / "resumed/train_state/state.pt", weights_only=True)["epoch"] == 2
    Trainer(ToyTask(), config(**cfg), tmp_path / "resumed").fit(TRAIN, VALID)
    assert_same(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))
    straight = (tmp_path / "straight/train_log.txt").read_text()
    assert (tmp_path / "resumed/train_log.txt").read_text() == straight
    assert_same(
        load_file(tmp_path / "straight/model/model.safetensors"),
        load_file(tmp_path / "resumed/model/model.safetensors"),
    )


def test_kill_mid_epoch_keeps_last_completed_epoch(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    Trainer(ToyTask(), config(), tmp_path / "straight").fit(TRAIN, VALID)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):  # mid epoch 3 (8 batches per epoch)
        Trainer(ToyTask(crash_at_step=2 * 8 + 4), config(), killed).fit(TRAIN, VALID)
    state = torch.load(killed / "train_state/state.pt", weights_only=True)
    assert state["epoch"] == 2
    assert len((killed / "train_log.txt").read_text().splitlines()) == 2
    assert sorted(p.name for p in killed.rglob("*")) == sorted(
        [
            "model",
            "train_state",
            "train_log.txt",
            "state.pt",
            "model.safetensors",
            "config.yaml",
            "meta.json",
        ]
    )  # no temporary or half-written files
    capsys.readouterr()
    Trainer(ToyTask(), config(), killed).fit(TRAIN, VALID)
    assert "continuing from epoch 3" in capsys.readouterr().out
    assert_same(weights(tmp_path / "straight"), weights(killed))


def test_best_epoch_is_the_max_of_the_select_metric(tmp_path: Path) -> None:
    result = Trainer(ToyTask(), config(epochs=5, lr=0.02), tmp_path).fit(TRAIN, VALID)
    accuracy = [epoch["valid"]["accuracy"] for epoch in read_log(tmp_path)]
    assert result.best_epoch == 1 + accuracy.index(max(accuracy))
    assert result.best_value == pytest.approx(max(accuracy), abs=1e-4)
    meta = load_checkpoint(tmp_path / "model").meta
    assert meta["epoch"] == result.best_epoch and meta["class_names"] == ["a", "b", "c"]
    assert meta["valid"]["accuracy"] == result.best_value


def test_min_mode_selects_lowest_loss(tmp_path: Path) -> None:
    result = Trainer(ToyTask(), config(select_metric="loss", select_mode="min"), tmp_path).fit(
        TRAIN, VALID
    )
    losses = [epoch["valid"]["loss"] for epoch in read_log(tmp_path)]
    assert result.best_epoch == 1 + losses.index(min(losses))


def test_missing_select_metric_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'fid_in' is not a validation statistic.*accuracy"):
        Trainer(ToyTask(), config(select_metric="fid_in"), tmp_path).fit(TRAIN, VALID)
