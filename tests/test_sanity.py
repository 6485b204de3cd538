"""Model-randomisation sanity check: a classifier-blind control is flagged, a real one passes."""

from __future__ import annotations

import pytest
import torch
from test_separation import TwoBandClassifier, WeightBandInterpreter, make_mixtures

from audiointerp.interpreters.controls import EnergyControl, RandomControl
from audiointerp.interpreters.registry import build_interpreter
from audiointerp.metrics.sanity import randomize_weights, sanity_check, spearman


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


def test_energy_control_is_flagged() -> None:
    mixtures = make_mixtures(2)
    waveforms = torch.stack([m["mixture"] for m in mixtures])
    energy = build_interpreter("energy", {}, TwoBandClassifier())
    assert isinstance(energy, EnergyControl)
    result = sanity_check(TwoBandClassifier().eval(), energy, waveforms, mixtures)
    assert result["rank_correlation"] == 1.0
    assert result["sanity_passed"] is False
    assert result["si_snri_drop"] == pytest.approx(0.0, abs=1e-6)


def test_random_control_is_reproducible_hence_flagged() -> None:
    waveforms = torch.stack([m["mixture"] for m in make_mixtures(1)])
    result = sanity_check(TwoBandClassifier().eval(), RandomControl(seed=1), waveforms)
    assert result["sanity_passed"] is False


def test_classifier_dependent_explanation_passes_and_loses_si_snri() -> None:
    mixtures = make_mixtures(2)
    waveforms = torch.stack([m["mixture"] for m in mixtures])
    result = sanity_check(
        TwoBandClassifier().eval(), WeightBandInterpreter(), waveforms, mixtures, seed=0
    )
    assert result["rank_correlation"] < 0.5
    assert result["sanity_passed"] is True
    assert result["si_snri"] > 10.0
    assert result["si_snri_drop"] > 5.0


def test_a_method_holding_its_classifier_sees_the_randomised_one() -> None:
    mixtures = make_mixtures(2)
    waveforms = torch.stack([m["mixture"] for m in mixtures])
    classifier = TwoBandClassifier().eval()
    saliency = build_interpreter("saliency", {}, classifier)
    result = sanity_check(classifier, saliency, waveforms)
    assert result["sanity_passed"] is True  # |dlogit/d|X|| follows the weights
    assert saliency.classifier is classifier  # the original binding is kept
