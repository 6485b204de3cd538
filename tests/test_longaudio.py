"""Long audio: window plans, normalised overlap-add, and the identity property end to end.

The identity test (as asteroid's overlap-add test): an interpreter whose mask is all
ones, run through the windows and the cross-fade, gives back the input, for lengths that
are not multiples of the hop, shorter and longer than one window.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor
from toys import BandClassifier

from audiointerp.features import FeatureConfig, Features
from audiointerp.interpreters.base import Interpreter, resolve_target
from audiointerp.longaudio import OverlapAdd, frame_weights, plan_windows, sample_weights
from audiointerp.models.base import ClassifierOutput
from audiointerp.pipeline import Explainer

RATE = 8000
FEATURES = FeatureConfig(sample_rate=RATE, n_fft=256, hop_ms=16.0, win_ms=32.0)  # hop 128
HOP = FEATURES.hop_length
WINDOW_S = 0.5  # 4000 samples: 31.25 hops, so windows and hops never line up by chance


class OnesInterpreter(Interpreter):
    """The identity explanation: keep everything."""

    def forward(self, features: Features, classifier_out: ClassifierOutput, target=None) -> Tensor:
        return torch.ones_like(features.magnitude)


class PointwiseInterpreter(Interpreter):
    """A mask that depends on each bin alone, so windows and the whole file agree on it."""

    def forward(self, features: Features, classifier_out: ClassifierOutput, target=None) -> Tensor:
        return features.magnitude / (features.magnitude + 1.0)


class BandOracle(Interpreter):
    """Keeps exactly the target class's band of the :class:`BandClassifier`."""

    def forward(self, features: Features, classifier_out: ClassifierOutput, target=None) -> Tensor:
        target = resolve_target(classifier_out, target)  # (B,)
        n_classes = classifier_out.logits.shape[-1]
        bins = torch.arange(features.magnitude.shape[-1])
        band = torch.tensor_split(bins, n_classes)
        mask = torch.zeros_like(features.magnitude)
        for row, cls in enumerate(target.tolist()):
            mask[row, :, band[cls]] = 1.0
        return mask


def _explainer(interpreter: Interpreter, **kwargs: Any) -> Explainer:
    classifier = BandClassifier(FEATURES, ["low", "high"])
    return Explainer(classifier, interpreter, window_seconds=WINDOW_S, **kwargs)


def _noise(n_samples: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, n_samples).astype(np.float32)


def _tone(freq: float, n_samples: int, rate: int = RATE) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(n_samples) / rate)).astype(np.float32)


@pytest.mark.parametrize("n_samples", [1, 100, 3999, 4000, 4001, 9_877, 41_234])
def test_plan_covers_the_input_with_hop_aligned_overlapping_windows(n_samples: int) -> None:
    plan = plan_windows(n_samples, window=4000, frame_hop=HOP, overlap=0.5)
    starts = np.array(plan.starts)
    assert starts[0] == 0 and np.all(starts % HOP == 0) and np.all(np.diff(starts) > 0)
    assert 0 <= plan.padded_samples - max(n_samples, 4000) < HOP  # end padded < one hop
    assert np.all(np.diff(starts) <= 2000)  # at least half a window of overlap
    assert plan.n_frames == n_samples // HOP + 1
    if n_samples <= 4000:
        assert plan.starts == (0,)


@pytest.mark.parametrize("n_samples", [37, 3999, 4001, 9_877, 41_234])
def test_overlap_add_of_unchanged_windows_is_the_input(n_samples: int) -> None:
    plan = plan_windows(n_samples, window=4000, frame_hop=HOP)
    audio = _noise(n_samples)
    frames = np.random.default_rng(1).random((plan.padded_frames, 3), dtype=np.float32)
    waves = OverlapAdd(plan.padded_samples, sample_weights(plan))
    grid = OverlapAdd(plan.padded_frames, frame_weights(plan), (3,))
    for k, start in enumerate(plan.starts):
        waves.add(start, plan.segment(audio, k))
        offset = plan.frame_offset(k)
        grid.add(offset, frames[offset : offset + plan.frames_per_window])
    np.testing.assert_allclose(waves.result(n_samples), audio, atol=1e-6)
    np.testing.assert_allclose(grid.result(plan.n_frames), frames[: plan.n_frames], atol=1e-6)


def test_cross_fade_weights_sum_to_one() -> None:
    """Constant windows of different values give a weighted mean: with ones, exactly one."""
    plan = plan_windows(20_000, window=4000, frame_hop=HOP)
    fade = OverlapAdd(plan.padded_samples, sample_weights(plan))
    for k, start in enumerate(plan.starts):
        fade.add(start, np.full(4000, float(k), dtype=np.float32))
    result = fade.result(20_000)
    # between window k's and k+1's starts the value moves monotonically from k to k+1
    assert result[0] == pytest.approx(0.0) and result[-1] == pytest.approx(len(plan.starts) - 1)
    assert np.all(np.diff(result) >= -1e-5)


@pytest.mark.parametrize("n_samples", [777, 3999, 4001, 13_337, 30_001])
def test_identity_interpreter_returns_the_input(n_samples: int) -> None:
    assert n_samples % HOP != 0
    audio = _noise(n_samples, seed=n_samples)
    result = _explainer(OnesInterpreter()).explain(audio, RATE)
    np.testing.assert_allclose(result.waveform, audio, atol=1e-5)
    np.testing.assert_allclose(result.removed, 0.0, atol=1e-6)
    assert result.mask.shape == (n_samples // HOP + 1, FEATURES.n_freqs)
    np.testing.assert_allclose(result.mask, 1.0, atol=1e-6)


def test_identity_at_another_rate_keeps_length_rate_and_content() -> None:
    rate, n_samples = 11_025, 30_011  # 2.7 s: several windows after resampling to 8 kHz
    tone = _tone(440.0, n_samples, rate)
    result = _explainer(OnesInterpreter()).explain(tone, rate)
    assert result.waveform.shape == (n_samples,) and result.sample_rate == rate
    inner = slice(500, -500)  # resampling filters ring at the very edges
    np.testing.assert_allclose(result.waveform[inner], tone[inner], atol=2e-3)


def test_long_mask_is_the_full_file_mask_where_frames_agree() -> None:
    """Frames of hop-aligned windows are the file's frames: a per-bin mask must match."""
    audio = _noise(27_000, seed=3) * np.linspace(0.1, 1.0, 27_000, dtype=np.float32)
    explainer = _explainer(PointwiseInterpreter(), normalization="none")
    long_mask = explainer.explain(audio, RATE).mask
    magnitude = explainer.extractor(torch.from_numpy(audio)).magnitude[0].numpy()
    full_mask = magnitude / (magnitude + 1.0)
    assert long_mask.shape == full_mask.shape
    # window edges see zero padding, but the sin^2 taper gives them weights < 1e-3
    np.testing.assert_allclose(long_mask, full_mask, atol=2e-3)


def test_long_audio_explains_the_class_of_highest_mean_probability_everywhere() -> None:
    n_low, n_high = 28_000, 12_000  # 3.5 s of a low tone, then 1.5 s of a high tone
    audio = np.concatenate([_tone(300.0, n_low), _tone(3300.0, n_high)])
    result = _explainer(BandOracle()).explain(audio, RATE, top_k=2)
    assert result.predicted == "low" and result.target == "low"
    names = [name for name, _ in result.top_k]
    assert names == ["low", "high"] and result.probability == result.top_k[0][1]
    assert 0.5 < result.probability < 1.0
    half = FEATURES.n_freqs // 2
    # every window explained "low", also those that hear only the high tone
    assert np.all(result.mask[:, :half] > 0.999) and np.all(result.mask[:, half + 1 :] < 1e-3)
    assert np.abs(result.waveform[-4000:]).max() < 0.05  # the high tone is not kept


@pytest.mark.parametrize("budget", [2**30, 1])  # the vote's outputs kept; none fit
def test_each_window_is_classified_once_when_the_vote_outputs_are_kept(budget: int) -> None:
    """Without a target, the voting pass's classifier outputs serve the explaining pass
    while they fit a quarter of the memory budget; with a target there is no vote."""
    audio = np.concatenate([_tone(300.0, 28_000), _tone(3300.0, 12_000)])
    explainer = _explainer(BandOracle(), window_batch=2, memory_budget=budget)
    calls = []
    explainer.classifier.register_forward_hook(lambda _, inputs, __: calls.append(len(inputs[0])))
    n_windows = len(plan_windows(len(audio), explainer.window, HOP, explainer.overlap).starts)
    results = [explainer.explain(audio, RATE, top_k=2)]
    assert sum(calls) == (n_windows if budget > 1 else 2 * n_windows)
    calls.clear()
    results.append(explainer.explain(audio, RATE, target="low", top_k=2))
    assert sum(calls) == n_windows
    first, second = results
    assert first.target == second.target == "low" and first.top_k == second.top_k
    np.testing.assert_array_equal(first.mask, second.mask)
    np.testing.assert_array_equal(first.waveform, second.waveform)
