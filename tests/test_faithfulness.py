"""Faithfulness metrics on analytic classifiers whose probabilities are known by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from audiointerp.features import FeatureConfig, Features, apply_mask
from audiointerp.metrics.faithfulness import (
    faithfulness_metrics,
    gini_index,
    mask_entropy,
)
from audiointerp.models.base import Classifier, ClassifierOutput


class BandClassifier(Classifier):
    """Logits = time-mean of each frequency bin: class k is "energy in bin k" (C = F)."""

    def __init__(self, n_bins: int):
        super().__init__(FeatureConfig(), [f"bin{k}" for k in range(n_bins)])

    def input_features(self, linear_magnitude: Tensor) -> Tensor:
        return linear_magnitude

    def forward_features(self, inputs: Tensor) -> ClassifierOutput:
        logits = inputs.mean(dim=1)  # (B, F)
        return ClassifierOutput(logits=logits, embedding=logits, hidden=(inputs,))


class LevelClassifier(Classifier):
    """50 classes; p[0] = 0.8 * mean|X| + 0.1, the rest share 1 - p[0] equally."""

    def __init__(self):
        super().__init__(FeatureConfig(), [f"c{k}" for k in range(50)])

    def input_features(self, linear_magnitude: Tensor) -> Tensor:
        return linear_magnitude

    def forward_features(self, inputs: Tensor) -> ClassifierOutput:
        first = 0.8 * inputs.mean(dim=(1, 2)) + 0.1  # (B,)
        probs = torch.cat([first[:, None], ((1 - first) / 49)[:, None].expand(-1, 49)], dim=1)
        logits = probs.log()
        return ClassifierOutput(logits=logits, embedding=logits, hidden=(inputs,))


def make_features(magnitude: Tensor) -> Features:
    return Features(spec=magnitude.to(torch.complex64), magnitude=magnitude, n_samples=0)


def two_band_input(frames: int = 3) -> Features:
    """Bin 0 at level 2, bin 1 at level 1: p = softmax([2, 1]) = [0.731, 0.269]."""
    magnitude = torch.tensor([2.0, 1.0]).expand(1, frames, 2).clone()
    return make_features(magnitude)


def band_mask(keep: list[float], frames: int = 3) -> Tensor:
    return torch.tensor(keep).expand(1, frames, 2).clone()


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_mask_keeping_the_evidence_increases_confidence() -> None:
    metrics = faithfulness_metrics(BandClassifier(2), two_band_input(), band_mask([1.0, 0.0]))
    p, p_in, p_out = sigmoid(1.0), sigmoid(2.0), sigmoid(-1.0)
    assert metrics["AI"].item() == 100.0
    assert metrics["AD"].item() == 0.0
    assert metrics["AG"].item() == pytest.approx(100 * (p_in - p) / (1 - p), rel=1e-5)
    assert metrics["AG"].item() == pytest.approx(55.67, abs=0.01)
    assert metrics["FF"].item() == pytest.approx(p - p_out, rel=1e-5)
    assert metrics["fid_in"].item() == 1.0


def test_mask_keeping_the_wrong_band_drops_confidence() -> None:
    metrics = faithfulness_metrics(BandClassifier(2), two_band_input(), band_mask([0.0, 1.0]))
    p, p_in, p_out = sigmoid(1.0), sigmoid(-1.0), sigmoid(2.0)
    assert metrics["AI"].item() == 0.0
    assert metrics["AD"].item() == pytest.approx(100 * (p - p_in) / p, rel=1e-5)
    assert metrics["AG"].item() == 0.0
    assert metrics["FF"].item() == pytest.approx(p - p_out, rel=1e-5)  # negative: -0.150
    assert metrics["fid_in"].item() == 0.0


def test_target_selects_the_explained_class() -> None:
    metrics = faithfulness_metrics(
        BandClassifier(2), two_band_input(), band_mask([0.0, 1.0]), target=torch.tensor([1])
    )
    assert metrics["AI"].item() == 100.0  # p[1] 0.269 -> p_in[1] 0.731
    assert metrics["fid_in"].item() == 1.0


def test_all_ones_mask_is_dense_and_maximally_complex() -> None:
    ones = torch.ones(1, 431, 513)
    metrics = faithfulness_metrics(LevelClassifier(), make_features(ones), ones)
    assert metrics["SPS"].item() == pytest.approx(0.0, abs=1e-6)
    assert metrics["COMP"].item() == pytest.approx(math.log(431 * 513), rel=1e-6)
    assert metrics["COMP"].item() == pytest.approx(12.31, abs=0.005)
    assert metrics["FF"].item() == pytest.approx(0.9 - 0.1, rel=1e-5)  # mask-out is silence


def test_one_hot_mask_has_zero_complexity_and_full_sparseness() -> None:
    mask = torch.zeros(2, 6, 5)
    mask[:, 2, 3] = 0.7
    assert mask_entropy(mask).tolist() == [0.0, 0.0]
    assert gini_index(mask)[0].item() == pytest.approx((30 - 1) / 30, rel=1e-6)


def test_zero_mask_counts_as_constant() -> None:
    mask = torch.zeros(1, 4, 4)
    assert gini_index(mask).item() == 0.0
    assert mask_entropy(mask).item() == pytest.approx(math.log(16))


def test_batched_equals_one_by_one() -> None:
    torch.manual_seed(0)
    magnitude = torch.rand(4, 5, 3) * 3
    mask = torch.rand(4, 5, 3)
    batched = faithfulness_metrics(BandClassifier(3), make_features(magnitude), mask)
    for i in range(4):
        single = faithfulness_metrics(
            BandClassifier(3), make_features(magnitude[i : i + 1]), mask[i : i + 1]
        )
        for name, value in single.items():
            assert value.item() == pytest.approx(batched[name][i].item(), rel=1e-5, abs=1e-6)
    classifier = BandClassifier(3)
    given = classifier(magnitude).probabilities
    reused = faithfulness_metrics(classifier, make_features(magnitude), mask, probabilities=given)
    for name, value in reused.items():
        assert torch.equal(value, batched[name])


# One test per reference pitfall (docs/reference.md, Pitfalls), each showing both behaviours.


def test_pitfall_1_mask_domain_matters_for_soft_masks_only() -> None:
    features = two_band_input()
    binary, soft = band_mask([1.0, 0.0]), band_mask([0.5, 0.5])
    linear = apply_mask(soft, features.magnitude, "linear")
    log1p = apply_mask(soft, features.magnitude, "log1p")
    assert linear[0, 0].tolist() == pytest.approx([1.0, 0.5])
    assert log1p[0, 0].tolist() == pytest.approx([math.sqrt(3) - 1, math.sqrt(2) - 1], rel=1e-5)
    classifier = BandClassifier(2)
    for name in ("FF", "AD", "AG"):
        same_lin = faithfulness_metrics(classifier, features, binary, "linear")[name]
        same_log = faithfulness_metrics(classifier, features, binary, "log1p")[name]
        assert same_lin.item() == pytest.approx(same_log.item(), abs=1e-6)
    ff_lin = faithfulness_metrics(classifier, features, soft, "linear")["FF"].item()
    ff_log = faithfulness_metrics(classifier, features, soft, "log1p")["FF"].item()
    # mask-in = mask-out for a 0.5 mask; the logit gap halves (linear) or not (log1p).
    assert ff_lin == pytest.approx(sigmoid(1.0) - sigmoid(0.5), rel=1e-5)
    assert ff_log == pytest.approx(sigmoid(1.0) - sigmoid(math.sqrt(3) - math.sqrt(2)), rel=1e-5)


def test_pitfall_2_average_drop_on_a_double_softmax() -> None:
    features = make_features(torch.ones(1, 4, 4))  # p[0] = 0.9
    mask = torch.full((1, 4, 4), 0.5)  # p_in[0] = 0.5
    ours = faithfulness_metrics(LevelClassifier(), features, mask)["AD"].item()
    reference = faithfulness_metrics(LevelClassifier(), features, mask, reference_compatible=True)
    assert ours == pytest.approx(44.4, abs=0.05)
    assert reference["AD"].item() == pytest.approx(32.4, abs=0.05)


def test_pitfall_3_l2i_input_fidelity_compares_with_class_0() -> None:
    features, mask = two_band_input(), band_mask([1.0, 0.0])
    target = torch.tensor([1])  # explain bin 1 with a mask that keeps bin 0
    ours = faithfulness_metrics(BandClassifier(2), features, mask, target=target)
    piq = faithfulness_metrics(
        BandClassifier(2), features, mask, target=target, reference_compatible=True, method="piq"
    )
    l2i = faithfulness_metrics(
        BandClassifier(2), features, mask, target=target, reference_compatible=True, method="l2i"
    )
    assert ours["fid_in"].item() == 0.0 and piq["fid_in"].item() == 0.0
    assert l2i["fid_in"].item() == 1.0  # argmax p_in is 0, whatever was explained


def test_pitfall_4_mask_out_is_the_same_for_every_method() -> None:
    torch.manual_seed(1)
    magnitude = torch.rand(1, 5, 3) * 4
    features, mask = make_features(magnitude), torch.rand(1, 5, 3)
    classifier = BandClassifier(3)
    ours = {
        method: faithfulness_metrics(classifier, features, mask, "log1p", method=method)["FF"]
        for method in ("piq", "l2i")
    }
    assert ours["piq"].item() == ours["l2i"].item()
    probs = classifier(magnitude).probabilities[0]
    c = int(probs.argmax())
    expected_out = classifier(apply_mask(1 - mask, magnitude, "log1p")).probabilities[0, c]
    assert ours["l2i"].item() == pytest.approx((probs[c] - expected_out).item(), rel=1e-5)
    # The recipe's L2I-conv2d mask-out subtracts a linear interpretation from log1p|X|.
    log_magnitude = torch.log1p(magnitude)
    l2i_mask_out = log_magnitude - torch.expm1(mask * log_magnitude)
    reference_out = classifier.forward_features(l2i_mask_out).probabilities[0, c]
    assert abs(reference_out.item() - expected_out.item()) > 0.01


def test_pitfall_9_quantus_sparseness_and_complexity() -> None:
    mask = torch.zeros(2, 4, 5)
    mask[0, 1, 1] = 1.0  # one-hot
    mask[1] = 0.5  # constant
    n = 20
    features = make_features(torch.ones(2, 4, 5))
    ours = faithfulness_metrics(BandClassifier(5), features, mask)
    reference = faithfulness_metrics(BandClassifier(5), features, mask, reference_compatible=True)
    assert ours["SPS"].tolist() == pytest.approx([(n - 1) / n, 0.0], abs=1e-6)
    assert ours["COMP"].tolist() == pytest.approx([0.0, math.log(n)], abs=1e-6)
    eps = 1e-7
    one_hot_gini = (n - 1) / (n * (1 + n * eps))  # eps * sum_{i<n}(2i - n - 1) = -(n-1) eps
    batch_sps = (one_hot_gini + 0.0) / 2  # +1e-7 everywhere, then the batch mean
    assert reference["SPS"].tolist() == pytest.approx([batch_sps, batch_sps], rel=1e-6)
    assert reference["COMP"].tolist() == pytest.approx([math.log(n) / 2] * 2, rel=1e-6)
