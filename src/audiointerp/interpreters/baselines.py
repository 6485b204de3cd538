"""Standard attribution baselines as listenable masks: saliency, integrated gradients,
Grad-CAM and occlusion.

Each method attributes the target class's logit (default: the prediction) to the
classifier's input **linear magnitude** |X| (B, T, F), through the classifier's own feature
path, using Captum where it does the work (``Saliency``, ``IntegratedGradients``,
``Occlusion``). Grad-CAM is a few lines over ``ClassifierOutput.hidden[0]`` (the last conv
block's map), so it needs no hooks.

One normalisation turns every attribution into a mask (:func:`attribution_to_mask`):

1. keep the positive part (evidence *for* the class; saliency is |gradient| already);
2. divide each example by its own 99th percentile (nearest rank, over all T x F bins) of
   that positive part, or by its maximum when the percentile is 0 (sparse attributions);
   an all-zero attribution gives an all-zero mask;
3. clip to [0, 1].

The top 1 % of bins get gain 1 and the rest a gain proportional to their attribution, so
the mask is a soft gain on |X| (``mask_domain`` linear) that can be listened to like any
other method's. Nothing is shared across the batch, so a clip's mask does not depend on
its batch-mates.

No side effects: during a call the classifier runs in eval mode with parameter gradients
off; its modes and ``requires_grad`` flags are restored afterwards, also when the call
raises. Gradients are taken with ``torch.autograd.grad`` only w.r.t. the input or the
hidden map, so no parameter ``.grad`` is written and no hook is registered.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, Occlusion, Saliency
from torch import Tensor, nn

from audiointerp.config import ConfigError, from_dict, to_dict
from audiointerp.features import Features
from audiointerp.interpreters.base import Capabilities, Interpreter, resolve_target
from audiointerp.interpreters.registry import register
from audiointerp.models.base import Classifier, ClassifierOutput
from audiointerp.models.external import ExternalClassifier


@dataclass
class BaselineConfig:
    """Settings every baseline shares.

    Attributes:
        percentile: the per-example percentile of the positive attribution that maps to
            mask 1 (see :func:`attribution_to_mask`).
    """

    percentile: float = 99.0

    def __post_init__(self) -> None:
        if not 0.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")


@dataclass
class IntegratedGradientsConfig(BaselineConfig):
    """Attributes: n_steps (Gauss-Legendre points on the path from silence to the input);
    internal_batch_size (inputs per classifier call; bounds memory)."""

    n_steps: int = 32
    internal_batch_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_steps < 1 or self.internal_batch_size < 1:
            raise ValueError("n_steps and internal_batch_size must be >= 1")


@dataclass
class OcclusionConfig(BaselineConfig):
    """A window of ``window_frames`` x ``window_bins`` set to silence, moved by the strides.

    Attributes:
        perturbations_per_eval: occluded copies per classifier call (bounds memory).
    """

    window_frames: int = 32
    window_bins: int = 32
    stride_frames: int = 32
    stride_bins: int = 32
    perturbations_per_eval: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        sizes = (self.window_frames, self.window_bins, self.stride_frames, self.stride_bins)
        if min(*sizes, self.perturbations_per_eval) < 1:
            raise ValueError("occlusion windows, strides and perturbations_per_eval must be >= 1")


def attribution_to_mask(attribution: Tensor, percentile: float = 99.0) -> Tensor:
    """(B, T, F) attribution -> (B, T, F) mask in [0, 1]: positive part / percentile, clipped."""
    positive = attribution.clamp_min(0.0).flatten(1)  # (B, T*F)
    n_bins = positive.shape[1]
    rank = min(max(1, math.ceil(percentile / 100.0 * n_bins)), n_bins)
    scale = positive.kthvalue(rank, dim=1).values  # (B,)
    scale = torch.where(scale > 0, scale, positive.amax(dim=1))
    mask = positive / scale.clamp_min(torch.finfo(positive.dtype).tiny)[:, None]
    return mask.clamp(0.0, 1.0).view_as(attribution)


@contextmanager
def frozen(classifier: nn.Module) -> Iterator[None]:
    """Run ``classifier`` in eval mode with parameter gradients off; restore both on exit."""
    modes = [(module, module.training) for module in classifier.modules()]
    flags = [(parameter, parameter.requires_grad) for parameter in classifier.parameters()]
    classifier.eval().requires_grad_(False)
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        for parameter, requires_grad in flags:
            parameter.requires_grad_(requires_grad)


class AttributionBaseline(Interpreter):
    """A gradient/perturbation attribution of the classifier's logit, normalised to a mask.

    Subclasses implement :meth:`attribute`. The classifier is kept as a plain attribute,
    not a submodule, so the interpreter has no state of its own in checkpoints.
    """

    capabilities = Capabilities(
        any_target=True, batched=True, needs_gradients=True, needs_training=False
    )
    config_class: type[BaselineConfig] = BaselineConfig

    def __init__(self, config: BaselineConfig, classifier: Classifier):
        super().__init__()
        self.config = config
        object.__setattr__(self, "classifier", classifier)  # not registered as a submodule

    @classmethod
    def from_config(cls, config: dict[str, Any], classifier: Classifier) -> AttributionBaseline:
        return cls(from_dict(cls.config_class, config, prefix="interpreter."), classifier)

    def config_dict(self) -> dict[str, Any]:
        return to_dict(self.config)

    def logits(self, magnitude: Tensor) -> Tensor:
        """The forward function attributions differentiate: |X| (B, T, F) -> logits (B, C)."""
        return self.classifier(magnitude).logits

    def attribute(self, magnitude: Tensor, target: Tensor) -> Tensor:
        """Attribution of logit ``target`` (B,) to each bin of ``magnitude``, (B, T, F)."""
        raise NotImplementedError

    def forward(
        self, features: Features, classifier_out: ClassifierOutput, target: Tensor | None = None
    ) -> Tensor:
        """(B, T, F) mask in [0, 1] for ``target`` (default: the predicted class)."""
        target = resolve_target(classifier_out, target)
        with frozen(self.classifier), torch.enable_grad(), self.classifier.explaining(features):
            attribution = self.attribute(features.magnitude.detach(), target)
        return attribution_to_mask(attribution.detach(), self.config.percentile)


@register("saliency")
class SaliencyBaseline(AttributionBaseline):
    """|d logit_c / d|X||: the input gradient's magnitude (Simonyan et al., arXiv 1312.6034)."""

    def attribute(self, magnitude: Tensor, target: Tensor) -> Tensor:
        return Saliency(self.logits).attribute(magnitude.requires_grad_(), target=target, abs=True)


@register("integrated_gradients")
class IntegratedGradientsBaseline(AttributionBaseline):
    """Integrated gradients from silence (|X| = 0) to the input (Sundararajan et al.,
    arXiv 1703.01365); the attributions sum to logit_c(X) - logit_c(0)."""

    config_class = IntegratedGradientsConfig

    def attribute(self, magnitude: Tensor, target: Tensor) -> Tensor:
        cfg = self.config
        assert isinstance(cfg, IntegratedGradientsConfig)
        return IntegratedGradients(self.logits).attribute(
            magnitude.requires_grad_(),
            baselines=torch.zeros_like(magnitude),
            target=target,
            n_steps=cfg.n_steps,
            method="gausslegendre",
            internal_batch_size=cfg.internal_batch_size,
        )


@register("gradcam")
class GradCAMBaseline(AttributionBaseline):
    """Grad-CAM (Selvaraju et al., arXiv 1610.02391) on the last conv block, ``hidden[0]``.

    ReLU(sum_k a_k A_k) with a_k the mean gradient of logit_c over map k, upsampled
    bilinearly to the network input's (T, width). When that width is the mel axis
    (CNN14), each linear bin takes the filterbank-weighted mean of the mel bands that
    cover it (the DC and Nyquist bins, covered by none, get 0).
    """

    @classmethod
    def from_config(cls, config: dict[str, Any], classifier: Classifier) -> AttributionBaseline:
        """Refuses a user's classifier whose named layer is not a (B, K, T', F') map."""
        if isinstance(classifier, ExternalClassifier) and len(classifier.hidden_shape) != 3:
            raise ConfigError(
                f"interpreter 'gradcam' needs a layer with (B, K, T', F') activations "
                f"(time, then frequency); {classifier.name} gives (B, "
                f"{', '.join(map(str, classifier.hidden_shape))}): name a convolutional "
                "layer, or use saliency, "
                "integrated_gradients or occlusion"
            )
        return super().from_config(config, classifier)

    def attribute(self, magnitude: Tensor, target: Tensor) -> Tensor:
        out = self.classifier(magnitude.requires_grad_())  # the graph must reach hidden[0]
        activations = out.hidden[0]  # (B, K, T', F')
        score = out.logits.gather(1, target[:, None]).sum()  # examples are independent
        (gradients,) = torch.autograd.grad(score, activations)
        weights = gradients.mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)
        cam = F.relu((weights * activations).sum(dim=1, keepdim=True))  # (B, 1, T', F')
        frames, bins = magnitude.shape[1:]
        with torch.no_grad():
            input_width = self.classifier.input_features(magnitude[:1]).shape[-1]
        cam = F.interpolate(cam, size=(frames, input_width), mode="bilinear", align_corners=False)
        cam = cam.squeeze(1)  # (B, T, width)
        if input_width == bins:
            return cam
        filters = self.classifier.feature_extractor.mel_filters  # (F, n_mels)
        assert filters.shape == (bins, input_width), "network input is neither |X| bins nor mel"
        return (cam @ filters.T) / filters.sum(dim=1).clamp_min(1e-8)  # (B, T, F)


@register("occlusion")
class OcclusionBaseline(AttributionBaseline):
    """Drop in logit_c when a window of |X| is silenced (Zeiler & Fergus, arXiv 1311.2901),
    averaged over the windows covering each bin."""

    config_class = OcclusionConfig
    capabilities = Capabilities(
        any_target=True, batched=True, needs_gradients=False, needs_training=False
    )

    def attribute(self, magnitude: Tensor, target: Tensor) -> Tensor:
        cfg = self.config
        assert isinstance(cfg, OcclusionConfig)
        frames, bins = magnitude.shape[1:]
        with torch.no_grad():
            return Occlusion(self.logits).attribute(
                magnitude,
                sliding_window_shapes=(min(cfg.window_frames, frames), min(cfg.window_bins, bins)),
                strides=(cfg.stride_frames, cfg.stride_bins),
                baselines=0.0,
                target=target,
                perturbations_per_eval=cfg.perturbations_per_eval,
            )
