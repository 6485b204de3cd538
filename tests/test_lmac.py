"""L-MAC: decoder shapes (reference and fitted), loss terms, gradients reaching only the
decoder, and a few optimiser steps localising the band a toy classifier reads."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import Tensor

from audiointerp.checkpoints import prefixed, save_checkpoint
from audiointerp.cli import main
from audiointerp.config import ConfigError
from audiointerp.features import FeatureConfig, FeatureExtractor, Features
from audiointerp.interpreters.decoders import Cnn14Decoder
from audiointerp.interpreters.lmac import (
    LMAC,
    Conv2dMaskDecoder,
    LMACConfig,
    fit_mask_logits,
    total_variation,
)
from audiointerp.interpreters.registry import build_interpreter
from audiointerp.models import ClassifierConfig, build_classifier, classifier_checkpoint
from audiointerp.models.base import Classifier, ClassifierOutput
from audiointerp.models.conv2d import Conv2dClassifier

BAND = (16, 32)


def features_of(magnitude: Tensor) -> Features:
    return Features(magnitude.to(torch.complex64), magnitude, n_samples=0)


def tiny_classifier(name: str, features: FeatureConfig | None = None) -> Classifier:
    torch.manual_seed(0)
    config = ClassifierConfig(
        name=name, dim=4, cnn14_width=1 / 32, features=features or FeatureConfig()
    )
    return build_classifier(config, ["a", "b", "c"]).eval().requires_grad_(False)


def test_cnn14_decoder_is_the_reference_topology():
    with torch.device("meta"):  # count the full-width parameters without allocating them
        full = Cnn14Decoder((2048, 1024, 512, 256), 2048, 1, 1, relu_before_last=False)
    assert sum(p.numel() for p in full.parameters()) == 236_728_321
    assert [name for name, _ in full.named_children()] == [f"convt{i}" for i in range(1, 10)]
    lmac = build_interpreter("lmac", {"width": 1 / 64}, tiny_classifier("cnn14"))
    assert isinstance(lmac.decoder, Cnn14Decoder) and not lmac.decoder.relu_before_last
    decoder = Cnn14Decoder((8, 4, 2, 1), 16, 1, 1, relu_before_last=False)
    hidden = tuple(
        torch.randn(2, c, t, f) for c, t, f in ((8, 13, 2), (4, 13, 2), (2, 26, 5), (1, 53, 10))
    )
    assert decoder(hidden).shape == (2, 1, 425, 513)  # the reference's mask for 431 x 80


def test_conv2d_decoder_mirrors_the_encoder_exactly():
    decoder = Conv2dMaskDecoder(4, 8)
    assert decoder((torch.randn(2, 4, 26, 32),), 431, 513).shape == (2, 431, 513)
    assert decoder((torch.randn(1, 4, 2, 3),), 47, 63).shape == (1, 47, 63)


def test_fit_mask_logits_crops_pads_and_interpolates():
    logits = torch.randn(2, 425, 513)
    fitted = fit_mask_logits(logits, 431, 513)
    torch.testing.assert_close(fitted[:, :425], logits)
    torch.testing.assert_close(fitted[:, 425:], logits[:, -1:].expand(2, 6, 513))
    assert torch.equal(fit_mask_logits(logits, 400, 513), logits[:, :400])
    ramp = torch.linspace(0, 1, 9).expand(1, 3, 9)
    torch.testing.assert_close(
        fit_mask_logits(ramp, 3, 17), torch.linspace(0, 1, 17).expand(1, 3, 17)
    )


@pytest.mark.parametrize("name", ["conv2d", "cnn14"])
@pytest.mark.parametrize("n_fft", [1024, 256])
def test_mask_covers_the_input_and_ignores_batch_mates(name, n_fft):
    settings = FeatureConfig(n_fft=n_fft, win_ms=16.0 if n_fft == 256 else 23.2199)
    classifier = tiny_classifier(name, settings)
    torch.manual_seed(1)
    features = FeatureExtractor(settings)(torch.randn(2, 8000))  # 0.5 s: 44 frames
    interpreter = build_interpreter("lmac", {"width": 1 / 64}, classifier).eval()
    mask = interpreter(features, classifier(features.magnitude))
    assert mask.shape == features.magnitude.shape
    assert mask.min() > 0 and mask.max() < 1
    alone = interpreter(features[1:], classifier(features.magnitude[1:]))
    torch.testing.assert_close(alone[0], mask[1], atol=1e-5, rtol=1e-4)


def test_config_round_trip_and_errors():
    classifier = tiny_classifier("conv2d")
    interpreter = build_interpreter("lmac", {"width": 0.5, "mask_domain": "log1p"}, classifier)
    assert interpreter.mask_domain == "log1p"
    rebuilt = LMAC.from_config(interpreter.config_dict(), classifier)
    assert rebuilt.config_dict() == interpreter.config_dict()
    assert rebuilt.state_dict().keys() == interpreter.state_dict().keys()
    with pytest.raises(ConfigError, match="interpreter.l1"):
        build_interpreter("lmac", {"l1": 1.0}, classifier)
    with pytest.raises(ConfigError, match="width"):
        build_interpreter("lmac", {"width": 0}, classifier)
    with pytest.raises(ConfigError, match="no decoder for classifier"):
        LMAC(LMACConfig(), Classifier(FeatureConfig(), ["a"]))


def test_total_variation():
    assert total_variation(torch.ones(2, 5, 7)) == 0
    stripes = torch.zeros(1, 4, 6)
    stripes[:, :, ::2] = 1.0  # every neighbouring-bin pair differs by 1, frames constant
    assert total_variation(stripes) == 1.0


@pytest.mark.parametrize("name", ["conv2d", "cnn14"])
def test_loss_terms_and_gradients_reach_only_the_decoder(name):
    classifier = tiny_classifier(name)
    torch.manual_seed(2)
    features = features_of(torch.rand(3, 32, 513) * 2)
    config = {"width": 1 / 64, "tv_weight": 0.5}
    interpreter = build_interpreter("lmac", config, classifier)
    with torch.no_grad():
        out = classifier(features.magnitude)
    terms = interpreter.loss(features, out, classifier)
    assert set(terms) == {"loss/in", "loss/out", "loss/l1", "loss/tv"}
    with torch.no_grad():
        mask = interpreter(features, out)
        predicted = out.prediction
        ce_in = F.cross_entropy(classifier(mask * features.magnitude).logits, predicted)
        ce_out = F.cross_entropy(classifier((1 - mask) * features.magnitude).logits, predicted)
    torch.testing.assert_close(terms["loss/in"], 4.0 * ce_in)
    torch.testing.assert_close(terms["loss/out"], -0.2 * ce_out)
    torch.testing.assert_close(terms["loss/l1"], 6.4 * mask.mean())
    torch.testing.assert_close(terms["loss/tv"], 0.5 * total_variation(mask))
    sum(terms.values()).backward()
    assert all(p.grad is None for p in classifier.parameters())
    assert all(p.grad is not None for p in interpreter.parameters())
    assert sum(p.grad.abs().sum() for p in interpreter.parameters()) > 0

    reference = {**config, "l1_weight": 0.4, "reference_l1_batch_scaling": True}
    scaled = build_interpreter("lmac", reference, classifier)
    scaled.load_state_dict(interpreter.state_dict())
    l1 = scaled.loss(features, out, classifier)["loss/l1"]
    torch.testing.assert_close(l1, 3 * 0.4 * mask.mean())  # the batch of 3 multiplies it


class BandConv2d(Conv2dClassifier):
    """Only hears bins BAND: two logits +-(mean in-band log1p level - 0.3), and a hidden map
    that is the band-limited log-spectrogram average-pooled 16 x 16, one copy per channel
    with gains -1 ... 1 (what a network that only hears the band can represent)."""

    def forward_features(self, inputs: Tensor) -> ClassifierOutput:
        band = torch.zeros(inputs.shape[-1])
        band[BAND[0] : BAND[1]] = 1.0
        heard = inputs * band
        gains = torch.linspace(-1, 1, self.encoder.conv1.out_channels)[None, :, None, None]
        feature_map = F.avg_pool2d(heard[:, None], 16) * gains  # (B, dim, T/16, F/16)
        level = heard.sum(dim=(1, 2)) / (inputs.shape[1] * (BAND[1] - BAND[0]))
        logit = 8.0 * (level - 0.3)
        return ClassifierOutput(
            torch.stack([logit, -logit], 1), feature_map.mean((2, 3)), (feature_map,)
        )


def test_lmac_losses_move_the_mask_into_the_band():
    torch.manual_seed(3)
    classifier = BandConv2d(FeatureConfig(), ["band", "other"], dim=8).eval().requires_grad_(False)
    features = features_of(torch.rand(4, 16, 64) + 0.5)  # equal level in and out of the band
    interpreter = build_interpreter("lmac", {"width": 1 / 16}, classifier)
    optimiser = torch.optim.Adam(interpreter.parameters(), lr=1e-2)
    with torch.no_grad():
        out = classifier(features.magnitude)
    assert (out.prediction == 0).all()

    def inside_minus_outside() -> float:
        with torch.no_grad():
            mask = interpreter(features, out)
        inside = mask[..., BAND[0] : BAND[1]].mean()
        outside = torch.cat([mask[..., : BAND[0]], mask[..., BAND[1] :]], -1).mean()
        return float(inside - outside)

    before = inside_minus_outside()
    for _ in range(30):
        optimiser.zero_grad()
        sum(interpreter.loss(features, out, classifier).values()).backward()
        optimiser.step()
    assert abs(before) < 0.02
    assert inside_minus_outside() > 0.3


def test_cli_refuses_a_target_an_unconditioned_lmac_cannot_explain(tmp_path, capsys):
    classes = ["dog", "rain", "siren"]
    settings = FeatureConfig(sample_rate=8000, n_fft=256, hop_ms=16.0, win_ms=32.0)
    config = ClassifierConfig(dim=4, lin_neurons=8, features=settings)
    torch.manual_seed(0)
    classifier = build_classifier(config, classes).eval()
    lmac = build_interpreter("lmac", {"width": 1 / 16}, classifier)
    tensors, config_map, meta = classifier_checkpoint(classifier, config)
    tensors |= prefixed("interpreter", lmac.state_dict())
    config_map["interpreter"] = {"name": "lmac", **lmac.config_dict()}
    model = save_checkpoint(tmp_path / "model", tensors, config_map, {**meta, "duration_s": 0.5})
    clip = tmp_path / "clip.wav"
    sf.write(clip, 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(4000) / 8000), 8000)
    argv = ["interpret", str(model), str(clip), "--out", str(tmp_path / "out"), "--json"]
    assert main(argv) == 0
    predicted = json.loads(capsys.readouterr().out)[0]["predicted"]
    assert main([*argv, "--target", predicted]) == 0  # the prediction can be explained
    capsys.readouterr()
    other = next(name for name in classes if name != predicted)
    assert main([*argv, "--target", other]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"audiointerp: error: lmac explains only the predicted class ('{predicted}'); it was "
        f"trained without interpreter.class_conditional=true, so it cannot explain '{other}'"
    ]
