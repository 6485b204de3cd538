"""Training on mixtures: batch mixing at an SNR, the guidance built from the prediction,
the guided losses of PIQ and L-MAC, and class-conditional L-MAC."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from audiointerp.config import ConfigError, from_dict
from audiointerp.data.mixtures import MixedBatch, MixingConfig, mix_batch, scale_pair
from audiointerp.errors import UnsupportedTargetError
from audiointerp.features import FeatureConfig, Features
from audiointerp.interpreters.base import Guidance
from audiointerp.interpreters.registry import build_interpreter
from audiointerp.models import ClassifierConfig
from audiointerp.training.recipes.interpreter import interpreter_recipe_class
from audiointerp.training.tasks import InterpreterTask
from tests.toys import BandClassifier

FEATURES = FeatureConfig(sample_rate=8000, n_fft=256, win_ms=32.0, hop_ms=16.0, n_mels=16)


def tone(freq_hz: float, n: int = 4000, sr: int = 8000, amp: float = 0.5) -> torch.Tensor:
    return amp * torch.sin(2 * math.pi * freq_hz * torch.arange(n) / sr)


def power_db(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(a.pow(2).mean(-1) / b.pow(2).mean(-1))


def test_scale_pair_hits_the_snr_and_keeps_every_peak_at_most_one():
    generator = torch.Generator().manual_seed(0)
    a = 3.0 * torch.randn(3, 1000, generator=generator, dtype=torch.float64)
    b = 0.1 * torch.randn(3, 1000, generator=generator, dtype=torch.float64)
    snr = torch.tensor([-5.0, 0.0, 7.5], dtype=torch.float64)
    sa, sb = scale_pair(a, b, snr)
    assert torch.allclose(power_db(sa, sb), snr, atol=1e-9)
    peaks = torch.stack([sa.abs().amax(-1), sb.abs().amax(-1), (sa + sb).abs().amax(-1)])
    assert torch.allclose(peaks.amax(0), torch.ones(3, dtype=torch.float64))
    silent_a, silent_b = scale_pair(a[:1], torch.zeros(1, 1000, dtype=torch.float64), snr[:1])
    assert not silent_b.any() and torch.allclose(silent_a.abs().amax(), torch.tensor(1.0).double())


def test_mix_batch_pairs_other_classes_and_leaves_unmixed_rows_alone():
    generator = torch.Generator().manual_seed(1)
    waveform = torch.randn(64, 800, generator=generator)
    labels = torch.arange(64) % 4
    config = MixingConfig(prob=0.5, snr_db_min=-3.0, snr_db_max=3.0)
    mixed = mix_batch(waveform, labels, config, generator)
    is_mix = mixed.labels[:, 1] >= 0
    assert 16 < int(is_mix.sum()) < 48  # about half
    assert torch.equal(mixed.mixture, mixed.sources.sum(1))
    assert (mixed.labels[is_mix, 0] != mixed.labels[is_mix, 1]).all()
    assert torch.equal(mixed.labels[:, 0], labels)
    assert torch.equal(mixed.mixture[~is_mix], waveform[~is_mix])
    assert not mixed.sources[~is_mix, 1].any()
    snr = power_db(mixed.sources[is_mix, 0], mixed.sources[is_mix, 1])
    assert ((snr >= -3.0 - 1e-3) & (snr <= 3.0 + 1e-3)).all() and snr.std() > 0.5
    clean = mix_batch(waveform, labels, MixingConfig(prob=0.0), generator)
    assert torch.equal(clean.mixture, waveform) and (clean.labels[:, 1] == -1).all()
    one_class = mix_batch(waveform, torch.zeros(64, dtype=torch.long), MixingConfig(prob=1.0))
    assert torch.equal(one_class.mixture, waveform)  # no partner of another class


def test_mixing_config_errors_name_the_key():
    recipe = interpreter_recipe_class("lmac")
    with pytest.raises(ConfigError, match="mixing"):
        from_dict(recipe, {"mixing": {"prob": 1.5}})
    with pytest.raises(ConfigError, match="mixing.snr"):
        from_dict(recipe, {"mixing": {"snr": 0.0}})


def test_guidance_target_mask_is_loud_and_dominant_bins():
    target = torch.tensor([[[10.0, 10.0, 0.1, 10.0]]])
    other = torch.tensor([[[1.0, 20.0, 0.0, 0.0]]])
    mask = Guidance(target, other, torch.tensor([True]), torch.tensor([0])).target_mask(0.35)
    assert mask.tolist() == [[[1.0, 0.0, 0.0, 1.0]]]  # bin 1 dominated, bin 2 quiet
    clean = Features(target.to(torch.complex64), target, 0)
    energy = (torch.log1p(target) > 0.35 * torch.log1p(target).amax()).float()
    assert torch.equal(Guidance.unmixed(clean, torch.tensor([0])).target_mask(0.35), energy)


def band_task(mixing: MixingConfig) -> InterpreterTask:
    classifier = BandClassifier(FEATURES, ["low", "high"])
    interpreter = build_interpreter("energy", {}, classifier)
    return InterpreterTask(
        interpreter, classifier, ClassifierConfig(features=FEATURES), mixing=mixing
    )


def test_guidance_follows_the_prediction_to_its_source():
    task = band_task(MixingConfig(prob=1.0))
    low, high = tone(500.0), tone(3000.0, amp=0.2)
    sources = torch.stack([torch.stack([low, high]), torch.stack([high, low])])  # (2, 2, N)
    mixed = MixedBatch(sources.sum(1), sources, torch.tensor([[0, 1], [1, 0]]))
    extractor = task.classifier.feature_extractor
    for prediction, expected in ((0, low), (1, high)):
        rows, guidance = task.guidance(mixed, torch.tensor([prediction, prediction]))
        assert rows.tolist() == [0, 1]  # the energy control learns no target
        assert guidance.guided.all() and guidance.classes.tolist() == [prediction] * 2
        reference = extractor(expected[None]).magnitude[0]
        for row in range(2):
            assert torch.allclose(guidance.target[row], reference, atol=1e-5)
    rows, unmatched = task.guidance(mixed, torch.tensor([2, 2]))  # neither source's class
    assert not unmatched.guided.any()
    assert torch.allclose(unmatched.target, extractor(mixed.mixture).magnitude, atol=1e-5)
    assert unmatched.other.max() < 1e-3


def test_training_step_mixes_and_reports_the_guided_fraction():
    torch.manual_seed(0)
    waveform = torch.stack([tone(500.0), tone(3000.0)] * 4)
    labels = torch.tensor([0, 1] * 4)
    from tests.test_lmac import BandConv2d

    conv = BandConv2d(FEATURES, ["band", "other"], dim=4).eval()
    lmac = build_interpreter("lmac", {"width": 1 / 16, "guidance_weight": 4.0}, conv)
    task = InterpreterTask(
        lmac, conv, ClassifierConfig(features=FEATURES), mixing=MixingConfig(1.0)
    )
    out = task.training_step((waveform, labels, [""] * 8))
    assert "loss/guide" in out and 0.0 <= float(out["metric/guided"]) <= 1.0
    terms = [v for k, v in out.items() if k.startswith("loss/")]
    assert torch.allclose(out["loss"], torch.stack(terms).sum())
    clean = InterpreterTask(lmac, conv, ClassifierConfig(features=FEATURES))
    assert "loss/guide" not in clean.training_step((waveform, labels, [""] * 8))


def test_lmac_guidance_moves_the_mask_onto_the_target_source():
    from tests.test_lmac import BAND, BandConv2d, features_of

    torch.manual_seed(4)
    classifier = BandConv2d(FeatureConfig(), ["band", "other"], dim=8).eval().requires_grad_(False)
    target = torch.zeros(2, 16, 64)
    target[..., BAND[0] : BAND[1]] = 5.0  # the predicted class's source: the band it hears
    other = torch.zeros(2, 16, 64)
    other[..., 40:56] = 5.0
    features = features_of(target + other)
    settings = {"width": 1 / 16, "guidance_weight": 4.0, "mask_in_weight": 0.0,
                "mask_out_weight": 0.0, "l1_weight": 0.0}  # fmt: skip
    interpreter = build_interpreter("lmac", settings, classifier)
    guidance = Guidance(target, other, torch.tensor([True, True]), torch.tensor([0, 0]))
    out = classifier(features.magnitude)
    optimiser = torch.optim.Adam(interpreter.parameters(), lr=1e-2)
    for _ in range(40):
        optimiser.zero_grad()
        sum(interpreter.loss(features, out, classifier, guidance).values()).backward()
        optimiser.step()
    with torch.no_grad():
        mask = interpreter(features, out)
    assert mask[..., BAND[0] : BAND[1]].mean() > 0.8 and mask[..., 40:56].mean() < 0.2
    unguided = Guidance(target, other, torch.tensor([False, False]), torch.tensor([0, 0]))
    with torch.no_grad():
        assert float(interpreter.loss(features, out, classifier, unguided)["loss/guide"]) == 0.0


def test_piq_rec_target_on_a_mixture_is_the_predicted_source():
    from tests.test_piq import make_classifier, make_features, make_piq

    classifier = make_classifier()
    piq = make_piq(classifier).eval()
    torch.nn.init.normal_(piq.decoder[-1].weight, std=0.5)  # logits far from 0
    features = make_features(2, 0.5)
    out = classifier(features.magnitude)
    target = features.magnitude.clone()
    target[..., 100:] = 0.0  # the predicted source owns only the low bins
    other = features.magnitude - target
    guidance = Guidance(target, other, torch.tensor([True, True]), out.prediction)
    with torch.no_grad():
        guided = piq.loss(features, out, classifier, guidance)["loss/rec"]
        codes = piq.quantize(piq.encode(out.hidden[0]), out.prediction).codes
        logits, frames = piq.mask_logits(features, codes)
        expected = F.binary_cross_entropy_with_logits(
            logits[:, :frames], guidance.crop(frames, 10**6).target_mask(piq.config.loud_threshold)
        )
        clean = piq.loss(features, out, classifier)["loss/rec"]
    assert torch.allclose(guided, expected, atol=1e-6)
    assert not torch.allclose(guided, clean)


def test_target_learners_also_train_the_other_source_class():
    from tests.test_lmac import BandConv2d

    low, high = tone(500.0), tone(3000.0, amp=0.2)
    sources = torch.stack([torch.stack([low, high]), torch.stack([low, torch.zeros_like(low)])])
    mixed = MixedBatch(sources.sum(1), sources, torch.tensor([[0, 1], [0, -1]]))
    conv = BandConv2d(FEATURES, ["low", "high"], dim=4).eval()
    lmac = build_interpreter("lmac", {"width": 1 / 16, "class_conditional": True}, conv)
    task = InterpreterTask(
        lmac, conv, ClassifierConfig(features=FEATURES), mixing=MixingConfig(1.0)
    )
    rows, guidance = task.guidance(mixed, torch.tensor([0, 0]))
    assert rows.tolist() == [0, 1, 0]  # the mixture again, for its other source's class
    assert guidance.classes.tolist() == [0, 0, 1] and guidance.guided.tolist() == [
        True,
        False,
        True,
    ]
    extractor = conv.feature_extractor
    assert torch.allclose(guidance.target[2], extractor(high[None]).magnitude[0], atol=1e-5)
    assert torch.allclose(guidance.other[2], extractor(low[None]).magnitude[0], atol=1e-5)


def test_class_conditional_lmac_explains_the_requested_class():
    from tests.test_piq import make_classifier, make_features

    classifier = make_classifier()
    features = make_features(2, 0.5)
    out = classifier(features.magnitude)
    plain = build_interpreter("lmac", {"width": 1 / 16}, classifier).eval()
    assert not plain.learns_targets and not plain.capabilities.any_target
    other = (out.prediction + 1) % classifier.n_classes
    with torch.no_grad():  # the prediction is accepted, another class refused
        assert torch.equal(plain(features, out, out.prediction), plain(features, out))
        with pytest.raises(UnsupportedTargetError, match="class_conditional=true"):
            plain(features, out, other)
    torch.manual_seed(0)
    conditional = build_interpreter(
        "lmac", {"width": 1 / 16, "class_conditional": True}, classifier
    )
    assert conditional.learns_targets and conditional.capabilities.any_target
    conditional.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():  # the conditioning starts as identity
        assert torch.allclose(conditional(features, out), plain(features, out))
        for parameter in conditional.condition.parameters():
            parameter.normal_()
        first = conditional(features, out, torch.tensor([0, 0]))
        second = conditional(features, out, torch.tensor([1, 1]))
        assert not torch.allclose(first, second)
        one = conditional(features[:1], out[torch.tensor([0])], torch.tensor([1]))
    torch.testing.assert_close(one, second[:1])  # per clip, whatever the batch


def test_guided_bce_adds_the_mean_over_loud_bins():
    from audiointerp.interpreters.base import guided_bce

    target = torch.tensor([[[9.0, 9.0, 0.0, 0.0]]])
    other = torch.tensor([[[0.0, 20.0, 0.0, 0.0]]])
    guidance = Guidance(target, other, torch.tensor([True]), torch.tensor([0]))
    logits = torch.tensor([[[2.0, 1.0, -1.0, 0.5]]])
    log_magnitude = torch.log1p(target + other)  # bins 0 and 1 are loud
    expected_target = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    bce = F.binary_cross_entropy_with_logits(logits, expected_target, reduction="none")[0, 0]
    plain = guided_bce(logits, guidance, log_magnitude, 0.35, 0.0)
    torch.testing.assert_close(plain, bce.mean()[None])
    loud = guided_bce(logits, guidance, log_magnitude, 0.35, 2.0)
    torch.testing.assert_close(loud, (bce.mean() + 2.0 * bce[:2].mean())[None])
