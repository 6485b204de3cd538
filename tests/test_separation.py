"""SI-SNR, the ideal-ratio-mask oracle and the mixture benchmark on analytic signals."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from audiointerp.features import FeatureConfig, Features
from audiointerp.interpreters.base import Interpreter, resolve_target
from audiointerp.interpreters.controls import OnesControl
from audiointerp.metrics.separation import (
    evaluate_mixtures,
    ideal_ratio_mask,
    oracle_separation,
    si_snr,
    si_snri,
)
from audiointerp.models.base import Classifier, ClassifierOutput

SR, N = 16000, 8000
SPLIT_BIN = 256  # 4 kHz at n_fft 1024


class TwoBandClassifier(Classifier):
    """Class 0 = energy below 4 kHz, class 1 = above: Linear(F, 2) on time-mean log1p|X|.

    ``hidden`` exposes the weights (B, 2, F) so an interpreter can read the model.
    """

    def __init__(self):
        super().__init__(FeatureConfig(), ["low", "high"])
        self.linear = nn.Linear(513, 2, bias=False)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight[0, :SPLIT_BIN] = 1.0 / SPLIT_BIN
            self.linear.weight[1, SPLIT_BIN:] = 1.0 / (513 - SPLIT_BIN)

    def input_features(self, linear_magnitude: Tensor) -> Tensor:
        return torch.log1p(linear_magnitude)

    def forward_features(self, inputs: Tensor) -> ClassifierOutput:
        pooled = inputs.mean(dim=1)  # (B, F)
        logits = self.linear(pooled)
        weights = self.linear.weight.expand(len(inputs), -1, -1)  # (B, 2, F)
        return ClassifierOutput(logits=logits, embedding=pooled, hidden=(weights,))


class WeightBandInterpreter(Interpreter):
    """Keeps the bins whose weight for the target class exceeds half its max."""

    @classmethod
    def from_config(cls, config: dict[str, Any], classifier: Classifier) -> Interpreter:
        return cls()

    def forward(
        self, features: Features, classifier_out: ClassifierOutput, target: Tensor | None = None
    ) -> Tensor:
        target = resolve_target(classifier_out, target)
        weights = classifier_out.hidden[0][torch.arange(len(target)), target]  # (B, F)
        keep = (weights > 0.5 * weights.amax(-1, keepdim=True)).float()
        return keep[:, None, :].expand_as(features.magnitude).contiguous()


def tone(freq: float, amplitude: float = 1.0, phase: float = 0.0) -> Tensor:
    t = torch.arange(N) / SR
    return amplitude * torch.sin(2 * math.pi * freq * t + phase)


def make_mixtures(count: int = 3) -> list[dict]:
    items = []
    for i in range(count):
        low = tone(500 + 100 * i) + tone(1300, 0.5, phase=i)
        high = tone(5000 + 200 * i, 0.7)
        items.append(
            {
                "mixture": low + high,
                "sources": torch.stack([low, high]),
                "labels": torch.tensor([0, 1]),
                "id": f"mix{i}",
            }
        )
    return items


def test_si_snr_known_values() -> None:
    reference = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    orthogonal = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    noisy = reference + 0.5 * orthogonal
    assert si_snr(noisy, reference).item() == pytest.approx(10 * math.log10(4 / 1.0), abs=1e-4)
    assert si_snr(3 * noisy + 2.0, reference).item() == pytest.approx(6.0206, abs=1e-3)
    assert si_snr(reference, reference).item() > 60
    assert si_snri(noisy, noisy, reference).item() == 0.0


def test_ideal_ratio_mask_is_a_partition_of_unity() -> None:
    sources = torch.stack([make_mixtures(1)[0]["sources"]])  # (1, 2, N)
    extractor = TwoBandClassifier().feature_extractor
    masks = ideal_ratio_mask(extractor, sources)
    assert masks.shape == (1, 2, 44, 513)
    assert masks.min() >= 0 and masks.max() <= 1
    assert torch.allclose(masks.sum(1), torch.ones(1, 44, 513), atol=1e-5)


def test_oracle_separates_tones_in_distinct_bands() -> None:
    item = make_mixtures(1)[0]
    mixture, sources = item["mixture"][None], item["sources"][None]
    estimates = oracle_separation(TwoBandClassifier().feature_extractor, mixture, sources)
    for k in range(2):
        assert si_snri(estimates[:, k], mixture, sources[:, k]).item() > 15.0


def test_band_interpreter_approaches_the_oracle_and_ones_is_the_floor() -> None:
    mixtures = make_mixtures(3)
    classifier = TwoBandClassifier().eval()
    band = evaluate_mixtures(classifier, WeightBandInterpreter(), mixtures, batch_size=2)
    summary = band.summary()
    assert band.si_snri.shape == (3, 2)
    assert summary["oracle_si_snri"] > 15.0
    assert summary["si_snri"] > 10.0
    assert summary["si_snri_oracle_fraction"] == pytest.approx(
        summary["si_snri"] / summary["oracle_si_snri"]
    )
    assert summary["si_snri_oracle_fraction"] > 0.6
    assert summary["prediction_in_mixture"] == 1.0
    ones = evaluate_mixtures(classifier, OnesControl(), mixtures).summary()
    assert ones["si_snri"] == pytest.approx(0.0, abs=1e-3)  # the mixture itself
    assert ones["oracle_si_snri"] == pytest.approx(summary["oracle_si_snri"])


def test_predicted_class_is_scored_against_its_source() -> None:
    mixtures = make_mixtures(2)
    classifier = TwoBandClassifier().eval()
    result = evaluate_mixtures(classifier, WeightBandInterpreter(), mixtures)
    prediction = classifier.classify_waveform(torch.stack([m["mixture"] for m in mixtures]))
    expected = result.si_snri[torch.arange(2), prediction.prediction]
    assert torch.allclose(result.predicted_si_snri, expected, atol=1e-4)
