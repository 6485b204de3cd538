"""train_classifier.py end to end through its real entry point on a tiny synthetic set."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiointerp.checkpoints import load_checkpoint
from audiointerp.config import from_dict
from audiointerp.data.synthetic import generate_synthetic
from audiointerp.features import Features, apply_mask
from audiointerp.interpreters.base import Interpreter
from audiointerp.interpreters.registry import register
from audiointerp.io import load_audio
from audiointerp.models.base import Classifier, ClassifierOutput
from audiointerp.training.recipes.entry import train

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "esc50" / "train_classifier.py"
TINY = [
    "--classifier.dim=4", "--classifier.lin_neurons=8", "--classifier.features.n_fft=256",
    "--classifier.features.win_ms=16", "--classifier.features.hop_ms=8",
    "--duration_s=1.0", "--train.epochs=2", "--train.batch_size=4",
    "--train.scheduler=none", "--train.lr=0.01", "--device=cpu", "--seed=3",
]  # fmt: skip


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), "hparams/conv2d.yaml", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_train_then_test_only_gives_the_same_metrics(tmp_path: Path) -> None:
    data = generate_synthetic(tmp_path / "data", n_classes=3, clips_per_class=5, duration_s=1.0)
    out = tmp_path / "run"
    args = [f"--data_folder={data}", f"--output_folder={out}", *TINY]
    trained = run(tmp_path, *args)  # cwd without hparams/: found beside the script
    assert trained.returncode == 0, trained.stderr[-3000:]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] == 3  # fold 5: one clip per class
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    per_class = metrics["per_class_accuracy"]
    assert len(per_class) == 3 and set(per_class.values()) <= {0.0, 1.0}
    assert metrics["test_accuracy"] == pytest.approx(sum(per_class.values()) / 3)
    assert sum(map(sum, metrics["confusion_matrix"])) == 3
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "train_log.txt").read_text().splitlines()) == 2
    config = (out / "config.yaml").read_text()
    assert "dim: 4" in config and "seed: 3" in config
    checkpoint = load_checkpoint(out / "model")
    assert checkpoint.meta["class_names"] == list(per_class)
    # how inputs were prepared travels with the model folder (window length, scaling)
    assert (checkpoint.meta["duration_s"], checkpoint.meta["normalization"]) == (1.0, "peak")
    assert checkpoint.tensors["classifier.encoder.conv1.weight"].shape[0] == 4
    state = torch.load(out / "train_state/state.pt", weights_only=True)
    assert state["epoch"] == 2

    (out / "metrics.json").unlink()
    (out / "confusion_matrix.png").unlink()
    tested = run(tmp_path, *args, "--test_only")
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert (out / "confusion_matrix.png").is_file()
    assert f"test accuracy {100 * metrics['test_accuracy']:.2f}%" in tested.stdout

    again = run(tmp_path, *args)  # same command after completion: resumes, trains nothing
    assert again.returncode == 0, again.stderr[-3000:]
    assert "epoch 2 of 2 completed" in again.stdout
    assert json.loads((out / "metrics.json").read_text()) == metrics


def test_test_only_without_a_model_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = generate_synthetic(tmp_path / "data", n_classes=2, clips_per_class=5, duration_s=0.5)
    argv = ["hparams/conv2d.yaml", f"--data_folder={data}", f"--output_folder={tmp_path / 'none'}",
            "--test_only", "--device=cpu"]  # fmt: skip
    assert train(argv, SCRIPT.parent, expect="classifier") == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {tmp_path / 'none' / 'model'}: no trained model here; "
        "run without --test_only first"
    ]


def test_bad_command_lines_name_the_problem(capsys: pytest.CaptureFixture) -> None:
    cases = {
        (
            "hparams/conv2d.yaml",
            "--train.learning_rate=1",
        ): "unknown config key: train.learning_rate",
        ("hparams/conv2d.yaml", "--train.scheduler=step"): "train.scheduler: 'step' is not one of",
        ("hparams/conv2d.yaml", "--train.lr=1e-3"): "lr is unused with scheduler cyclic",
        ("hparams/conv2d.yaml", "--train.scheduler=plateau"): "lr is required with scheduler",
        ("hparams/conv2d.yaml", "--train.scheduler.patience=2"): "'patience' is not a field of",
        ("hparams/piq.yaml",): "hparams/piq.yaml configures the piq recipe, not classifier",
        ("--test_only",): "usage: SCRIPT HPARAMS.yaml",
        ("hparams/nope.yaml",): "config file not found: hparams/nope.yaml",
    }
    for argv, message in cases.items():
        assert train(list(argv), SCRIPT.parent, expect="classifier") == 2
        assert message in capsys.readouterr().err


# --- the interpreter runner, with a toy interpreter (a learned gain per frequency bin) ---


@dataclass
class BandGainConfig:
    init: float = 2.0  # initial logit of every bin's gain
    l1: float = 0.5


@register("test_band_gain")
class BandGain(Interpreter):
    """mask[b, t, f] = sigmoid(logit[f]): trained to keep the class with few bins."""

    config_class = BandGainConfig

    def __init__(self, config: BandGainConfig, n_freqs: int):
        super().__init__()
        self.config = config
        self.logit = nn.Parameter(torch.full((n_freqs,), config.init))

    @classmethod
    def from_config(cls, config: dict[str, Any], classifier: Classifier) -> BandGain:
        return cls(from_dict(BandGainConfig, config), classifier.feature_config.n_freqs)

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    def forward(self, features: Features, classifier_out: ClassifierOutput, target=None) -> Tensor:
        return torch.sigmoid(self.logit).expand_as(features.magnitude)

    def loss(self, features: Features, classifier_out: ClassifierOutput, classifier: Classifier):
        mask = self(features, classifier_out)
        logits = classifier(apply_mask(mask, features.magnitude)).logits
        return {
            "loss/ce": F.cross_entropy(logits, classifier_out.prediction),
            "loss/l1": self.config.l1 * mask.mean(),
        }


@pytest.mark.slow
def test_interpreter_runner_trains_classifier_first_then_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    data = generate_synthetic(tmp_path / "data", n_classes=3, clips_per_class=5, duration_s=1.0)
    hparams = tmp_path / "hparams"
    hparams.mkdir()
    (hparams / "tiny.yaml").write_text(
        "experiment: tiny\n"
        "classifier: {dim: 4, lin_neurons: 8, features: {n_fft: 256, win_ms: 16, hop_ms: 8}}\n"
        "train: {epochs: 2, batch_size: 4, lr: 0.01, scheduler: none}\n"
    )
    (hparams / "band.yaml").write_text(
        "experiment: band\nclassifier_hparams: tiny.yaml\ninterpreter: {name: test_band_gain}\n"
        "train: {epochs: 2, batch_size: 4, lr: 0.1, scheduler: none, select_metric: FF}\n"
    )
    monkeypatch.chdir(tmp_path)  # default run folders are results/<experiment>/<seed>
    argv = [str(hparams / "band.yaml"), f"--data_folder={data}", "--duration_s=1.0",
            "--device=cpu", "--seed=3"]  # fmt: skip
    assert train(argv) == 0
    out = capsys.readouterr().out
    classifier_model = Path("results/tiny/3/model")
    assert f"no trained classifier at {classifier_model}: training one with" in out

    run = Path("results/band/3")
    metrics = json.loads((run / "metrics.json").read_text())
    stats = metrics["methods"]["test_band_gain_conv2d"]
    assert {"AI", "AD", "AG", "FF", "fid_in", "SPS", "COMP", "loss", "loss/ce"} <= set(stats)
    assert metrics["n_test"] == 3 and 0.0 <= stats["fid_in"] <= 1.0
    log = (run / "train_log.txt").read_text().splitlines()
    assert len(log) == 2 and "valid AI: " in log[0] and "FF: " in log[0]

    # the classifier was frozen: the interpreter folder embeds it unchanged
    saved = load_checkpoint(run / "model")
    original = load_checkpoint(classifier_model)
    for key, tensor in original.tensors.items():
        assert torch.equal(saved.tensors[key], tensor), key
    assert saved.config["interpreter"] == {"name": "test_band_gain", "init": 2.0, "l1": 0.5}
    assert not torch.equal(saved.tensors["interpreter.logit"], torch.full((129,), 2.0))

    test_argv = [*argv, "--test_only", "--save_interpretations=true", "--n_interpretations=2"]
    assert train(test_argv) == 0
    assert json.loads((run / "metrics.json").read_text()) == metrics
    folders = sorted((run / "interpretations").iterdir())
    assert len(folders) == 2
    for folder in folders:
        assert sorted(p.name for p in folder.iterdir()) == [
            "interpretation.wav", "original.wav", "spectra.png"
        ]  # fmt: skip
        original_audio = load_audio(folder / "original.wav", None)
        assert load_audio(folder / "interpretation.wav", None).shape == original_audio.shape


@pytest.mark.parametrize("script", ["train_classifier", "train_piq", "train_l2i", "train_nmf"])
def test_recipe_scripts_have_help(script: str) -> None:
    path = SCRIPT.parent / f"{script}.py"
    shown = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stdout.startswith(f"usage: python {script}.py")
    assert "--data_folder" in shown.stdout and "--output_folder" in shown.stdout
