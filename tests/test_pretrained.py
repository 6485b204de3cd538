"""One loader: a model folder is read once; classifier-only and interpreter folders alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import audiointerp.checkpoints as checkpoints
from audiointerp.checkpoints import CheckpointError, save_checkpoint
from audiointerp.features import FeatureConfig
from audiointerp.interpreters.controls import EnergyControl
from audiointerp.models import ClassifierConfig, build_classifier, classifier_checkpoint
from audiointerp.pretrained import load_model

CONFIG = ClassifierConfig(dim=4, lin_neurons=8, features=FeatureConfig(sample_rate=8000))


def _save(folder: Path, interpreter: dict | None = None, **meta: object) -> torch.Tensor:
    """A tiny conv2d classifier folder (with an interpreter section if given); its logits."""
    torch.manual_seed(0)
    classifier = build_classifier(CONFIG, ["dog", "rain"]).eval()
    tensors, config, base_meta = classifier_checkpoint(classifier, CONFIG)
    if interpreter is not None:
        config["interpreter"] = interpreter
    save_checkpoint(folder, tensors, config, {**base_meta, **meta})
    with torch.no_grad():
        return classifier(torch.rand(1, 20, CONFIG.features.n_freqs, generator=_seed())).logits


def _seed() -> torch.Generator:
    return torch.Generator().manual_seed(1)


def test_classifier_folder_is_read_once_and_loads_frozen(tmp_path, monkeypatch) -> None:
    logits = _save(tmp_path / "clf")
    reads = []
    original = checkpoints.load_file
    monkeypatch.setattr(checkpoints, "load_file", lambda path: reads.append(path) or original(path))
    model = load_model(tmp_path / "clf")
    assert len(reads) == 1
    assert model.interpreter is None and model.folder == tmp_path / "clf"
    assert model.classifier_config == CONFIG and model.meta["class_names"] == ["dog", "rain"]
    assert (model.clip_seconds, model.normalization) == (5.0, "peak")  # the defaults
    assert not model.classifier.training
    assert not any(p.requires_grad for p in model.classifier.parameters())
    with torch.no_grad():
        loaded = model.classifier(torch.rand(1, 20, CONFIG.features.n_freqs, generator=_seed()))
    assert torch.equal(loaded.logits, logits)


def test_interpreter_folder_and_training_settings(tmp_path) -> None:
    run = tmp_path / "run"
    _save(run / "model", {"name": "energy"}, duration_s=2.5)
    (run / "config.yaml").write_text(yaml.safe_dump({"duration_s": 9.0, "normalization": "none"}))
    model = load_model(run)  # a run folder: its model/
    assert isinstance(model.interpreter, EnergyControl) and not model.interpreter.training
    assert model.folder == run / "model"
    assert (model.clip_seconds, model.normalization) == (2.5, "none")  # meta.json first


def test_unknown_interpreter_is_a_checkpoint_error(tmp_path) -> None:
    _save(tmp_path / "bad", {"name": "no-such-method"})
    with pytest.raises(CheckpointError, match="unknown interpreter 'no-such-method'"):
        load_model(tmp_path / "bad")
