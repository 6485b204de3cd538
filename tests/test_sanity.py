"""The sanity check treats every method as a procedure applied to a model (R, C, D).

A toy classifier that looks at one frequency band only: a gradient map of it passes; the
energy control fails with D ~ 0; a random mask fails with R ~ 0; a trained "decoder" that
ignores the classifier fails, one that reads it passes. And the bootstrap interval covers
the true mean at about its nominal rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from test_separation import TwoBandClassifier, make_mixtures
from torch import Tensor, nn

from audiointerp.features import FeatureConfig, Features
from audiointerp.interpreters.base import Interpreter
from audiointerp.interpreters.controls import EnergyControl, RandomControl
from audiointerp.interpreters.registry import build_interpreter
from audiointerp.metrics.sanity import (
    SanityCutoffs,
    mask_entropy,
    randomize_weights,
    sanity_check,
    sanity_verdict,
    spearman,
)
from audiointerp.metrics.uncertainty import bootstrap_interval, overlap
from audiointerp.models.base import Classifier, ClassifierOutput

BAND = slice(40, 120)  # the bins the toy classifier reads (~1.2-3.7 kHz at 16 kHz, n_fft 1024)


class OneBandClassifier(Classifier):
    """Two classes from the time-mean log1p|X| of one band only: Linear(F, 2) whose
    weights are zero outside ``BAND``; ``hidden`` is the weight matrix (B, 2, F)."""

    def __init__(self):
        super().__init__(FeatureConfig(), ["quiet", "loud"])
        self.linear = nn.Linear(513, 2)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()
            ramp = torch.linspace(0.5, 1.5, BAND.stop - BAND.start)
            self.linear.weight[1, BAND] = ramp
            self.linear.weight[0, BAND] = -ramp

    def input_features(self, linear_magnitude: Tensor) -> Tensor:
        return torch.log1p(linear_magnitude)

    def forward_features(self, inputs: Tensor) -> ClassifierOutput:
        pooled = inputs.mean(dim=1)
        weights = self.linear.weight.expand(len(inputs), -1, -1)
        return ClassifierOutput(logits=self.linear(pooled), embedding=pooled, hidden=(weights,))


class BandDecoder(Interpreter):
    """A toy trained explainer: a learned (F,) band profile, repeated over time.

    "Training" (:func:`train_decoder`) sets the profile from the classifier's weights for
    the target class when ``reads_classifier``; otherwise from the data alone (the mean
    log-magnitude of the training clips), ignoring the classifier: the decoder that
    ignores its features.
    """

    def __init__(self, profile: Tensor):
        super().__init__()
        self.register_buffer("profile", profile)

    @classmethod
    def from_config(cls, config: dict[str, Any], classifier: Classifier) -> Interpreter:
        return cls(torch.zeros(2, 513))

    def forward(
        self, features: Features, classifier_out: ClassifierOutput, target: Tensor | None = None
    ) -> Tensor:
        target = classifier_out.prediction if target is None else target
        rows = self.profile[target]  # (B, F)
        return rows[:, None, :].expand_as(features.magnitude).contiguous()


def train_decoder(
    classifier: Classifier, clips: Tensor, seed: int, reads_classifier: bool
) -> BandDecoder:
    """A "training run": the profile in [0, 1] over a fixed ramp, plus a little
    seed-dependent noise."""
    generator = torch.Generator().manual_seed(seed)
    if reads_classifier:
        weights = classifier.linear.weight.detach().abs()  # (2, F): what each class reads
    else:
        magnitude = classifier.feature_extractor(clips).magnitude
        weights = torch.log1p(magnitude).mean(dim=(0, 1)).expand(2, -1)
    profile = 0.8 * weights / weights.amax(dim=1, keepdim=True).clamp_min(1e-12)
    profile = profile + torch.linspace(0.0, 0.2, 513)  # a fixed prior: no ties
    profile = profile + 1e-5 * torch.rand(profile.shape, generator=generator)
    return BandDecoder(profile.clamp(0, 1)).eval()


def clips(count: int = 10) -> Tensor:
    """Tones inside and outside the band plus noise: clips with varied spectra."""
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(16000) / 16000
    out = []
    for i in range(count):
        inside = torch.sin(2 * torch.pi * (1500 + 150 * i) * t)
        outside = 0.8 * torch.sin(2 * torch.pi * (6000 - 200 * i) * t)
        out.append(inside * (i % 2) + outside + 0.05 * torch.randn(len(t), generator=generator))
    return torch.stack(out)


def test_randomize_leaves_the_original_untouched() -> None:
    classifier = TwoBandClassifier().eval()
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    rng_state = torch.get_rng_state()
    randomized = randomize_weights(classifier, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_state)
    for key, value in classifier.state_dict().items():
        assert torch.equal(value, before[key])
    assert not torch.equal(randomized.linear.weight, classifier.linear.weight)
    again = randomize_weights(classifier, seed=3)
    assert torch.equal(again.linear.weight, randomized.linear.weight)


def test_spearman_known_values() -> None:
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert spearman(a, a * 10).item() == pytest.approx(1.0)
    assert spearman(a, -a).item() == pytest.approx(-1.0)
    assert spearman(a, torch.tensor([[1.0, 1.0, 1.0, 1.0]])).item() == 0.0
    assert spearman(torch.ones(1, 4), torch.ones(1, 4)).item() == 1.0
    # ties: ranks [1.5, 1.5, 3, 4] vs [1, 2, 3, 4] -> 0.9487
    tied = torch.tensor([[1.0, 1.0, 3.0, 4.0]])
    assert spearman(tied, a).item() == pytest.approx(0.9487, abs=1e-4)


def test_a_gradient_map_of_a_one_band_classifier_passes() -> None:
    classifier = OneBandClassifier().eval()
    saliency = build_interpreter("saliency", {}, classifier)
    result = sanity_check(classifier, saliency, clips())
    assert result["reproducibility"] == 1.0  # deterministic: the same map twice
    assert result["cross_model"] < 0.4
    assert result["sensitivity_interval"][0] > 0.3
    assert result["passed"] is True, result["reason"]
    assert saliency.classifier is classifier  # the original binding is kept


def test_the_energy_control_fails_blind_to_the_model() -> None:
    result = sanity_check(OneBandClassifier().eval(), EnergyControl(), clips())
    assert result["reproducibility"] == 1.0 and result["cross_model"] == 1.0
    assert result["sensitivity"] == pytest.approx(0.0, abs=1e-9)
    assert result["passed"] is False and result["reason"].startswith("blind to the model")


def test_the_all_ones_mask_fails_blind_to_the_model() -> None:
    classifier = OneBandClassifier().eval()
    ones = build_interpreter("ones", {}, classifier)
    result = sanity_check(classifier, ones, clips())
    assert result["sensitivity"] == 0.0
    assert result["passed"] is False and "blind" in result["reason"]


def test_a_random_mask_fails_by_not_being_reproducible() -> None:
    result = sanity_check(OneBandClassifier().eval(), RandomControl(seed=1), clips())
    assert abs(result["reproducibility"]) < 0.1  # another seed: another draw
    assert result["passed"] is False and result["reason"].startswith("not reproducible")


@pytest.mark.parametrize("reads_classifier", [True, False])
def test_a_trained_decoder_is_trained_again_on_the_randomised_model(reads_classifier) -> None:
    classifier = OneBandClassifier().eval()
    data = clips()
    random_classifier = randomize_weights(classifier, seed=0)  # what sanity_check uses
    first = train_decoder(classifier, data, seed=0, reads_classifier=reads_classifier)
    without_runs = sanity_check(classifier, first, data)
    assert without_runs["passed"] is None and "not checked" in without_runs["reason"]
    result = sanity_check(
        classifier,
        first,
        data,
        second=(classifier, train_decoder(classifier, data, 1, reads_classifier)),
        randomized=(random_classifier, train_decoder(random_classifier, data, 0, reads_classifier)),
    )
    assert result["reproducibility"] > 0.9  # the seed moves the profile by 1e-5 only
    if reads_classifier:
        assert result["passed"] is True, result["reason"]
    else:  # the same profile whatever the model: D ~ 0
        assert result["passed"] is False and result["sensitivity"] < 0.1
    assert set(result["masks"]) == {"magnitude", "f", "reused", "second", "randomized"}


def test_a_mask_that_collapses_on_the_randomised_model_is_not_a_pass() -> None:
    r = np.ones(20)
    c = np.zeros(20)  # an empty mask against a varying one: s = 0
    assert sanity_verdict(r, c, collapsed=0.0, cutoffs=SanityCutoffs())["passed"] is True
    verdict = sanity_verdict(r, c, collapsed=0.9, cutoffs=SanityCutoffs())
    assert verdict["passed"] is False and "constant" in verdict["reason"]


def test_cut_offs_are_configurable() -> None:
    r, c = np.full(30, 0.9), np.linspace(0.4, 0.6, 30)  # D ~ 0.4
    assert sanity_verdict(r, c, 0.0, SanityCutoffs())["passed"] is True
    strict = SanityCutoffs(min_sensitivity=0.5)
    assert sanity_verdict(r, c, 0.0, strict)["passed"] is False
    assert sanity_verdict(r, c, 0.0, SanityCutoffs(min_reproducibility=0.95))["passed"] is False


def test_mixture_si_snri_is_re_measured_on_the_randomised_model() -> None:
    mixtures = make_mixtures(2)
    waveforms = torch.stack([m["mixture"] for m in mixtures])
    classifier = TwoBandClassifier().eval()
    saliency = build_interpreter("saliency", {}, classifier)
    result = sanity_check(classifier, saliency, waveforms, mixtures=mixtures)
    assert result["si_snri_drop"] == pytest.approx(result["si_snri"] - result["si_snri_randomized"])
    energy = sanity_check(classifier, EnergyControl(), waveforms, mixtures=mixtures)
    assert energy["si_snri_drop"] == pytest.approx(0.0, abs=1e-6)
    # R and D on the mixtures: here the clips are the mixtures, so they equal the clips'
    assert result["mixtures_reproducibility"] == pytest.approx(result["reproducibility"])
    assert result["mixtures_sensitivity"] == pytest.approx(result["sensitivity"])
    assert result["mixtures_sensitivity_interval"] == pytest.approx(result["sensitivity_interval"])
    assert result["mixtures_sensitivity"] > 0.3
    assert energy["mixtures_sensitivity"] == pytest.approx(0.0, abs=1e-9)
    decoder = sanity_check(classifier, saliency, waveforms[:1], mixtures=None)
    assert "mixtures_sensitivity" not in decoder


def test_mask_entropy() -> None:
    uniform, peaked = torch.ones(1, 4, 4), torch.zeros(1, 4, 4)
    peaked[0, 0, 0] = 1.0
    assert mask_entropy(uniform).item() == pytest.approx(np.log(16))
    assert mask_entropy(peaked).item() == pytest.approx(0.0)
    assert torch.isnan(mask_entropy(torch.zeros(1, 4, 4))).item()


def test_bootstrap_interval_covers_the_true_mean_at_about_the_nominal_rate() -> None:
    rng = np.random.default_rng(0)
    repetitions, n, true_mean = 400, 30, 1.5
    covered = 0
    for repetition in range(repetitions):
        low, high = bootstrap_interval(rng.normal(true_mean, 2.0, n), seed=repetition)
        covered += low <= true_mean <= high
    rate = covered / repetitions
    # 95 % nominal; the percentile bootstrap runs a little short at n = 30 (~0.93); the
    # binomial sd of the rate over 400 repetitions is ~0.011
    assert 0.90 <= rate <= 0.98, rate


def test_bootstrap_edge_cases_and_overlap() -> None:
    assert bootstrap_interval([2.0]) == (2.0, 2.0)
    assert all(np.isnan(bootstrap_interval([])))
    assert bootstrap_interval([1.0, np.nan, 3.0]) == bootstrap_interval([1.0, 3.0])
    assert overlap((0, 1), (1, 2)) and not overlap((0, 1), (1.5, 2))
    assert overlap((0, 1), (np.nan, np.nan))
