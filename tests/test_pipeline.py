"""The inference API: loading, input kinds, targets, batches, errors, exact explanations.

An analytic "band" classifier (class c scores the energy of its own share of the bins)
with an oracle interpreter (keep exactly that band) makes the right explanation known:
the tone in the explained class's band. Loading uses a tiny real conv2d classifier and a
test-only interpreter with one parameter, saved in our checkpoint format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import Tensor, nn
from toys import BandClassifier

from audiointerp.checkpoints import CheckpointError, prefixed, save_checkpoint
from audiointerp.features import FeatureConfig, Features
from audiointerp.interpreters.base import Interpreter, resolve_target
from audiointerp.interpreters.registry import INTERPRETERS, build_interpreter, register
from audiointerp.io import AudioError
from audiointerp.models import (
    ClassifierConfig,
    build_classifier,
    classifier_checkpoint,
    save_classifier,
)
from audiointerp.models.base import Classifier, ClassifierOutput
from audiointerp.pipeline import Explainer, TargetError

RATE = 8000
FEATURES = FeatureConfig(sample_rate=RATE, n_fft=256, hop_ms=16.0, win_ms=32.0)  # hop 128
THRESHOLD_NAME = "test-pipeline-threshold"


class BandOracle(Interpreter):
    """Keeps exactly the target class's band of the :class:`BandClassifier`."""

    def forward(self, features: Features, classifier_out: ClassifierOutput, target=None) -> Tensor:
        target = resolve_target(classifier_out, target)  # (B,)
        n_classes = classifier_out.logits.shape[-1]
        bands = torch.tensor_split(torch.arange(features.magnitude.shape[-1]), n_classes)
        mask = torch.zeros_like(features.magnitude)
        for row, cls in enumerate(target.tolist()):
            mask[row, :, bands[cls]] = 1.0
        return mask


class ThresholdInterpreter(Interpreter):
    """sigmoid(sharpness * (log1p|X| - threshold)) with a learnable ``threshold``."""

    def __init__(self, sharpness: float = 4.0):
        super().__init__()
        self.sharpness = sharpness
        self.threshold = nn.Parameter(torch.tensor(0.5))

    @classmethod
    def from_config(cls, config: dict[str, Any], classifier: Classifier) -> ThresholdInterpreter:
        return cls(**config)

    def config_dict(self) -> dict[str, Any]:
        return {"sharpness": self.sharpness}

    def forward(self, features: Features, classifier_out: ClassifierOutput, target=None) -> Tensor:
        return torch.sigmoid(self.sharpness * (features.log_magnitude - self.threshold))


@pytest.fixture(scope="module", autouse=True)
def _registered():
    register(THRESHOLD_NAME)(ThresholdInterpreter)
    yield
    INTERPRETERS.pop(THRESHOLD_NAME)


def _band_explainer(**kwargs: Any) -> Explainer:
    classifier = BandClassifier(FEATURES, ["low", "high"])
    return Explainer(classifier, BandOracle(), window_seconds=0.5, **kwargs)


def _tone(freq: float, n_samples: int, rate: int = RATE, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(n_samples) / rate)).astype(np.float32)


def _save_model(
    folder: Path, duration_s: float | None = 0.5
) -> tuple[Classifier, ThresholdInterpreter]:
    """A tiny conv2d classifier + threshold interpreter as one checkpoint folder."""
    torch.manual_seed(0)
    config = ClassifierConfig(dim=4, lin_neurons=8, features=FEATURES)
    classifier = build_classifier(config, ["dog", "rain", "siren"]).eval()
    interpreter = ThresholdInterpreter(sharpness=3.0)
    with torch.no_grad():
        interpreter.threshold.fill_(0.2)
    tensors, config_map, meta = classifier_checkpoint(classifier, config)
    tensors.update(prefixed("interpreter", interpreter.state_dict()))
    config_map["interpreter"] = {"name": THRESHOLD_NAME, **interpreter.config_dict()}
    if duration_s is not None:
        meta["duration_s"] = duration_s
    save_checkpoint(folder, tensors, config_map, meta)
    return classifier, interpreter


def test_from_pretrained_loads_checkpoint_and_run_folders(tmp_path: Path) -> None:
    classifier, interpreter = _save_model(tmp_path / "run" / "model")
    audio = _tone(440.0, 3000) + _tone(2500.0, 3000, amplitude=0.2)
    expected = Explainer(classifier, interpreter, window_seconds=0.5).explain(audio, RATE)
    for path in (tmp_path / "run" / "model", tmp_path / "run"):
        explainer = Explainer.from_pretrained(path)
        assert explainer.window == 4000  # meta's duration_s
        assert float(explainer.interpreter.threshold) == pytest.approx(0.2)
        assert explainer.interpreter.sharpness == 3.0
        for module in (explainer.classifier, explainer.interpreter):
            assert not module.training
            assert not any(p.requires_grad for p in module.parameters())
        result = explainer.explain(audio, RATE)
        np.testing.assert_allclose(result.mask, expected.mask, atol=1e-6)
        assert dict(result.top_k) == pytest.approx(dict(expected.top_k))


def test_window_length_comes_from_the_run_config_when_meta_lacks_it(tmp_path: Path) -> None:
    _save_model(tmp_path / "run" / "model", duration_s=None)
    assert Explainer.from_pretrained(tmp_path / "run" / "model").window == 5 * RATE  # default
    (tmp_path / "run" / "config.yaml").write_text("duration_s: 0.25\nnormalization: none\n")
    explainer = Explainer.from_pretrained(tmp_path / "run")
    assert explainer.window == 2000 and explainer.normalization == "none"
    assert Explainer.from_pretrained(tmp_path / "run", window_seconds=1.0).window == RATE


@pytest.mark.parametrize("name", ["ones", "energy", "saliency"])
def test_registered_methods_load_and_explain(tmp_path: Path, name: str) -> None:
    """Real registered interpreters, saved as the training task saves them."""
    config = ClassifierConfig(dim=4, lin_neurons=8, features=FEATURES)
    classifier = build_classifier(config, ["dog", "rain", "siren"]).eval()
    interpreter = build_interpreter(name, {}, classifier)
    tensors, config_map, meta = classifier_checkpoint(classifier, config)
    tensors.update(prefixed("interpreter", interpreter.state_dict()))
    config_map["interpreter"] = {"name": name, **interpreter.config_dict()}
    save_checkpoint(tmp_path / "model", tensors, config_map, {**meta, "duration_s": 0.5})
    audio = _tone(500.0, 7000) + _tone(2500.0, 7000, amplitude=0.1)
    result = Explainer.from_pretrained(tmp_path / "model").explain(audio, RATE)
    assert result.mask.shape == (7000 // FEATURES.hop_length + 1, FEATURES.n_freqs)
    assert result.mask.min() >= 0.0 and result.mask.max() <= 1.0 and result.mask.max() > 0.5
    if name == "ones":
        np.testing.assert_allclose(result.waveform, audio, atol=1e-5)


def test_from_pretrained_rejects_what_is_not_an_interpreter_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such model folder"):
        Explainer.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a model checkpoint folder"):
        Explainer.from_pretrained(tmp_path / "empty")
    config = ClassifierConfig(dim=4, lin_neurons=8, features=FEATURES)
    save_classifier(tmp_path / "clf", build_classifier(config, ["a", "b"]), config)
    with pytest.raises(CheckpointError, match="holds no interpreter"):
        Explainer.from_pretrained(tmp_path / "clf")


def test_oracle_explanation_is_the_tone_of_the_explained_class() -> None:
    low, high = _tone(500.0, 3600), _tone(3000.0, 3600, amplitude=0.25)
    explainer = _band_explainer()
    predicted = explainer.explain(low + high, RATE, top_k=5)
    assert predicted.predicted == "low" and predicted.predicted_index == 0
    assert predicted.target == "low"
    assert [name for name, _ in predicted.top_k] == ["low", "high"]  # k capped at C
    assert sum(p for _, p in predicted.top_k) == pytest.approx(1.0, abs=1e-5)
    inner = slice(300, -300)
    np.testing.assert_allclose(predicted.waveform[inner], low[inner], atol=0.02)
    np.testing.assert_allclose(predicted.removed[inner], high[inner], atol=0.02)
    for target in ("high", 1):
        other = explainer.explain(low + high, RATE, target=target)
        assert other.predicted == "low" and other.target == "high"
        np.testing.assert_allclose(other.waveform[inner], high[inner], atol=0.02)


def test_unknown_target_lists_the_valid_names() -> None:
    explainer = _band_explainer()
    with pytest.raises(TargetError, match="valid: low, high"):
        explainer.explain(_tone(500.0, 2000), RATE, target="dog")
    with pytest.raises(TargetError, match="index 0..1"):
        explainer.explain(_tone(500.0, 2000), RATE, target=2)


def test_numpy_tensor_multichannel_and_other_rates_agree() -> None:
    explainer = _band_explainer()
    mono = _tone(500.0, 5000) + _tone(3000.0, 5000, amplitude=0.3)
    reference = explainer.explain(mono, RATE)
    from_tensor = explainer.explain(torch.from_numpy(mono), RATE)
    np.testing.assert_array_equal(from_tensor.waveform, reference.waveform)
    stereo = np.stack([mono * 1.5, mono * 0.5], axis=1)  # (N, 2), mean = mono
    from_stereo = explainer.explain(stereo, RATE)
    np.testing.assert_allclose(from_stereo.waveform, reference.waveform, atol=1e-5)
    n_44k = 27_563  # 0.625 s at 44.1 kHz, not a whole number of model samples
    resampled = explainer.explain(_tone(500.0, n_44k, 44_100), 44_100)
    assert resampled.waveform.shape == resampled.removed.shape == (n_44k,)
    assert resampled.sample_rate == 44_100 and resampled.model_sample_rate == RATE
    assert resampled.mask.shape == (5000 // FEATURES.hop_length + 1, FEATURES.n_freqs)


def test_batch_results_do_not_depend_on_the_batch() -> None:
    """Long clips (3 windows each) in chunks of 2 windows mix clips; results must not."""
    rng = np.random.default_rng(0)
    batch = np.stack(
        [
            _tone(500.0, 9000) + 0.1 * rng.standard_normal(9000).astype(np.float32),
            _tone(3000.0, 9000, amplitude=0.8),
            _tone(700.0, 9000, amplitude=0.05) + _tone(3500.0, 9000, amplitude=0.04),
        ]
    )
    explainer = _band_explainer(window_batch=2)
    together = explainer.explain(batch, RATE, top_k=2)
    assert together.waveform.shape == (3, 9000) and together.mask.shape[0] == 3
    assert together.predicted == ["low", "high", "low"]
    for index, clip in enumerate(batch):
        alone = _band_explainer(window_batch=1).explain(clip, RATE, top_k=2)
        np.testing.assert_allclose(together.waveform[index], alone.waveform, atol=1e-6)
        np.testing.assert_allclose(together.mask[index], alone.mask, atol=1e-6)
        assert together.predicted[index] == alone.predicted
        assert together.probability[index] == pytest.approx(alone.probability, abs=1e-6)


@pytest.mark.parametrize(
    ("audio", "reason"),
    [
        (np.zeros(4000, dtype=np.float32), "silent"),
        (np.full(4000, np.nan, dtype=np.float32), "NaN"),
        (np.zeros(0, dtype=np.float32), "empty"),
        (np.zeros((2, 3, 4), dtype=np.float32), "expected"),
    ],
)
def test_unusable_audio_is_an_audio_error(audio: np.ndarray, reason: str) -> None:
    with pytest.raises(AudioError, match=reason):
        _band_explainer().explain(audio, RATE)


def test_silent_clip_in_a_batch_is_named() -> None:
    batch = np.stack([_tone(500.0, 4000), np.zeros(4000, dtype=np.float32)])
    with pytest.raises(AudioError, match=r"<array>\[1\].*silent"):
        _band_explainer().explain(batch, RATE)


def test_explain_file_keeps_the_files_rate_length_and_mixes_channels(tmp_path: Path) -> None:
    n_samples = 30_000  # 0.68 s at 44.1 kHz
    left = _tone(500.0, n_samples, 44_100)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, 0.0 * left], axis=1), 44_100)
    explainer = _band_explainer()
    result = explainer.explain_file(path)
    assert result.sample_rate == 44_100 and result.waveform.shape == (n_samples,)
    from_array = explainer.explain(sf.read(path, dtype="float32")[0].mean(axis=1), 44_100)
    np.testing.assert_allclose(result.waveform, from_array.waveform, atol=1e-6)
    with pytest.raises(AudioError, match="no such file"):
        explainer.explain_file(tmp_path / "missing.wav")


def test_modes_are_restored_and_results_use_eval_mode(tmp_path: Path) -> None:
    classifier, interpreter = _save_model(tmp_path / "model")
    audio = _tone(440.0, 3000) + _tone(2500.0, 3000, amplitude=0.2)
    explainer = Explainer(classifier, interpreter, window_seconds=0.5)
    in_eval = explainer.explain(audio, RATE)
    classifier.train()
    in_train = explainer.explain(audio, RATE)
    assert classifier.training and all(m.training for m in classifier.modules())
    assert dict(in_train.top_k) == pytest.approx(dict(in_eval.top_k))
    np.testing.assert_allclose(in_train.waveform, in_eval.waveform, atol=1e-6)
