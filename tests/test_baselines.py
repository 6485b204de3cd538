"""Gradient/perturbation baselines: mask contract, IG completeness, band localisation on an
analytic classifier, batch independence and no side effects on the classifier."""

import pytest
import torch
import torch.nn.functional as F
import torch.nn.modules.module as module_hooks
from torch import Tensor, nn

from audiointerp.config import ConfigError
from audiointerp.features import FeatureConfig, Features
from audiointerp.interpreters.baselines import (
    IntegratedGradientsBaseline,
    attribution_to_mask,
)
from audiointerp.interpreters.registry import INTERPRETERS, build_interpreter
from audiointerp.models import ClassifierConfig, build_classifier
from audiointerp.models.base import Classifier, ClassifierOutput

METHODS = ["saliency", "integrated_gradients", "gradcam", "occlusion"]
FAST = {  # small settings so each call takes well under a second
    "saliency": {},
    "integrated_gradients": {"n_steps": 8},
    "gradcam": {},
    "occlusion": {"window_frames": 8, "window_bins": 64, "stride_frames": 8, "stride_bins": 64},
}
SMALL_STFT = FeatureConfig(n_fft=64, hop_ms=2.0, win_ms=4.0)  # 33 bins
BAND = (8, 16)  # bins the analytic classifier looks at


def features_of(magnitude: Tensor) -> Features:
    return Features(magnitude.to(torch.complex64), magnitude, n_samples=0)


def band_indicator(bins: int) -> Tensor:
    indicator = torch.zeros(bins)
    indicator[BAND[0] : BAND[1]] = 1.0
    return indicator


class BandClassifier(Classifier):
    """Two classes decided by the mean log1p magnitude in bins BAND only.

    hidden[0] has two channels pooled 2 x 2: the in-band input (which the logits read)
    and the out-of-band input (which they ignore), so Grad-CAM's channel weights decide.
    """

    def __init__(self) -> None:
        super().__init__(SMALL_STFT, ["band", "other"])
        self.register_buffer("band", band_indicator(SMALL_STFT.n_freqs))
        self.scale = nn.Parameter(torch.tensor(4.0))

    def input_features(self, linear_magnitude: Tensor) -> Tensor:
        return torch.log1p(linear_magnitude)

    def forward_features(self, inputs: Tensor) -> ClassifierOutput:
        stacked = torch.stack([inputs * self.band, inputs * (1 - self.band)], dim=1)
        hidden = F.avg_pool2d(stacked, 2)  # (B, 2, T/2, F/2)
        band_cells = hidden.shape[2] * (BAND[1] - BAND[0]) // 2
        evidence = hidden[:, 0].sum(dim=(1, 2)) / band_cells  # mean in-band log1p level
        logit = self.scale * (evidence - 0.1)
        return ClassifierOutput(torch.stack([logit, -logit], 1), hidden.mean((2, 3)), (hidden,))


class SmoothClassifier(Classifier):
    """log1p -> per-frame tanh layer -> time mean -> linear: smooth, for IG completeness."""

    def __init__(self) -> None:
        super().__init__(SMALL_STFT, ["a", "b", "c"])
        generator = torch.Generator().manual_seed(0)
        self.frame = nn.Parameter(torch.randn(SMALL_STFT.n_freqs, 6, generator=generator) / 3)
        self.out = nn.Parameter(torch.randn(6, 3, generator=generator))

    def input_features(self, linear_magnitude: Tensor) -> Tensor:
        return torch.log1p(linear_magnitude)

    def forward_features(self, inputs: Tensor) -> ClassifierOutput:
        embedding = torch.tanh(inputs @ self.frame).mean(dim=1)  # (B, 6)
        return ClassifierOutput(embedding @ self.out, embedding, (inputs.unsqueeze(1),))


def tiny_classifier(name: str) -> Classifier:
    torch.manual_seed(0)
    config = ClassifierConfig(name=name, dim=4, cnn14_width=1 / 32)
    return build_classifier(config, ["a", "b", "c"]).eval()


def clip_features(batch: int = 2, frames: int = 40) -> Features:
    torch.manual_seed(1)
    return features_of(torch.rand(batch, frames, 513) * 3)


def explain(method: str, classifier: Classifier, features: Features) -> Tensor:
    interpreter = build_interpreter(method, FAST[method], classifier)
    with torch.no_grad():  # as inference may call it: baselines re-enable gradients
        return interpreter(features, classifier(features.magnitude))


def test_registered_untrainable_and_configurable():
    classifier = BandClassifier()
    for method in METHODS:
        interpreter = build_interpreter(method, FAST[method], classifier)
        assert not INTERPRETERS[method].capabilities.needs_training
        assert interpreter.mask_domain == "linear"
        assert interpreter.config_dict()["percentile"] == 99.0
        rebuilt = build_interpreter(method, interpreter.config_dict(), classifier)
        assert rebuilt.config_dict() == interpreter.config_dict()
        assert list(interpreter.state_dict()) == []  # the classifier is not a submodule
        with pytest.raises(ConfigError, match="interpreter.bogus"):
            build_interpreter(method, {"bogus": 1}, classifier)
    with pytest.raises(ConfigError, match="percentile"):
        build_interpreter("saliency", {"percentile": 0}, classifier)


@pytest.mark.parametrize("name", ["conv2d", "cnn14"])
@pytest.mark.parametrize("method", METHODS)
def test_mask_shape_range_and_batch_independence(name, method):
    classifier = tiny_classifier(name)
    features = clip_features()
    mask = explain(method, classifier, features)
    assert mask.shape == (2, 40, 513)
    assert mask.min() >= 0 and mask.max() <= 1
    assert not mask.requires_grad
    alone = explain(method, classifier, features[1:])
    torch.testing.assert_close(alone[0], mask[1], atol=2e-4, rtol=0)  # float noise only


def test_attribution_to_mask_normalisation():
    attribution = torch.arange(-9.0, 91.0).view(1, 10, 10)  # 90 positive values 1..90
    mask = attribution_to_mask(attribution, percentile=90.0)
    scale = 80.0  # 90th percentile of 100 values = the 90th smallest = 80
    assert mask[attribution <= 0].eq(0).all()
    assert mask[attribution >= scale].eq(1).all()
    torch.testing.assert_close(mask[0, 5, 0], torch.tensor(41.0 / scale))
    sparse = torch.zeros(2, 4, 5)
    sparse[0, 1, 2] = 3.0  # the percentile is 0: divide by the max instead
    mask = attribution_to_mask(sparse)
    assert mask[0, 1, 2] == 1 and mask.sum() == 1  # and an all-zero example stays all zero


def test_integrated_gradients_completeness():
    classifier = SmoothClassifier().eval()
    torch.manual_seed(2)
    magnitude = torch.rand(3, 12, SMALL_STFT.n_freqs) * 2
    target = torch.tensor([0, 1, 2])
    interpreter = IntegratedGradientsBaseline.from_config({"n_steps": 32}, classifier)
    attribution = interpreter.attribute(magnitude.clone(), target)
    with torch.no_grad():
        rows = torch.arange(3)
        change = (classifier(magnitude).logits - classifier(torch.zeros_like(magnitude)).logits)[
            rows, target
        ]
    assert change.abs().min() > 0.05
    torch.testing.assert_close(attribution.sum(dim=(1, 2)), change, rtol=0.02, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_masks_localise_the_band_the_classifier_reads(method):
    classifier = BandClassifier().eval()
    torch.manual_seed(3)
    features = features_of(torch.rand(2, 16, SMALL_STFT.n_freqs) + 0.5)
    settings = {"window_frames": 4, "window_bins": 4, "stride_frames": 4, "stride_bins": 4}
    interpreter = build_interpreter(method, settings if method == "occlusion" else {}, classifier)
    mask = interpreter(features, classifier(features.magnitude))
    in_band = mask[..., BAND[0] : BAND[1]].sum(dim=(1, 2))
    assert (in_band / mask.sum(dim=(1, 2)) > 0.9).all()
    assert (mask[..., BAND[0] : BAND[1]].mean(dim=(1, 2)) > 0.3).all()


class FailingClassifier(BandClassifier):
    """Records the state it runs in; raises when ``fail`` is set."""

    fail = False

    def forward_features(self, inputs: Tensor) -> ClassifierOutput:
        self.seen = (self.training, self.scale.requires_grad)
        if self.fail:
            raise RuntimeError("classifier failure")
        return super().forward_features(inputs)


def hooks_of(module: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in module.modules()
    )  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("training", [False, True])
def test_no_side_effects_even_after_an_exception(method, training):
    classifier = FailingClassifier().train(training)
    classifier.scale.requires_grad_(True)
    classifier.band.requires_grad_(False)
    features = features_of(torch.rand(2, 8, SMALL_STFT.n_freqs))
    interpreter = build_interpreter(method, FAST[method], classifier)
    out = classifier(features.magnitude)
    for fail in (False, True):
        classifier.fail = fail
        if fail:
            with pytest.raises(RuntimeError, match="classifier failure"):
                interpreter(features, out)
        else:
            interpreter(features, out)
        assert classifier.seen == (False, False)  # evaluated in eval mode, weights frozen
        assert all(m.training == training for m in classifier.modules())
        assert classifier.scale.requires_grad and classifier.scale.grad is None
        assert hooks_of(classifier) == 0
    assert not module_hooks._global_forward_hooks and not module_hooks._global_backward_hooks
