"""L-MAC: listenable maps for audio classifiers (Paissan et al., arXiv 2403.13086).

A decoder reads the frozen classifier's hidden representations and outputs a sigmoid
mask over the linear-magnitude STFT. It is trained so that the masked-in spectrogram
keeps the classifier's decision and the masked-out one loses it, with L1/TV regularisers
keeping the mask small and smooth. Mask-in and mask-out go through
:func:`audiointerp.features.apply_mask` and back through the classifier's own feature
path (log1p-mel for CNN14, log1p for conv2d), with gradients reaching only the decoder.

Decoders:

* CNN14: the reference's ``CNN14PSI_stft``, a
  :class:`~audiointerp.interpreters.decoders.Cnn14Decoder` with one output map
  (236.7 M parameters at ``width`` 1, i.e. dim 2048); 425 x 513 for a 431 x 80 log-mel
  input.
* conv2d: four ConvTranspose2d(k4, s2, p1) layers that mirror the encoder's four strided
  convolutions, each given the encoder's size at that level as ``output_size``, so the
  mask comes out at exactly (T, F) (431 x 513 from the 26 x 32 map).
* a user's classifier (:class:`~audiointerp.models.external.ExternalClassifier`, not in
  the reference): :class:`~audiointerp.interpreters.decoders.ActivationMaskDecoder` reads
  our log1p|X| and the named layer's activations (or the logits), whatever their shape.

Fitting the mask to the input (:func:`fit_mask_logits`): when the decoder's frequency
axis differs from the input's F bins (CNN14 on non-reference STFT settings), the logits
are linearly interpolated along frequency (end points aligned: 0 Hz and Nyquist); along
time they are cropped, or padded by repeating the last decoded frame (the reference
instead drops the input's trailing 6 frames). The sigmoid is applied after fitting.

Differences from the reference, each with a switch where numbers are compared:

* The L1 term is ``l1_weight * mean|m|``; the reference sums a batch mean over the batch,
  so its effective weight grows with the batch size (0.4 x 16 = 6.4 at its B = 16). Our
  default ``l1_weight`` is that effective 6.4, whatever the batch size; ``l1_weight: 0.4``
  with ``reference_l1_batch_scaling`` reproduces the reference exactly. (0.4 without the
  scaling is 16x weaker than what the reference trained with: masks saturate at 1.)
* TV is the mean squared difference between neighbouring frames plus that between
  neighbouring bins (the reference's sum / 2B depends on the clip size and batch size;
  its weight is 0 in the reference config anyway).
* ``mask_domain`` defaults to ``linear`` (mask * |X|); ``log1p`` is the reference's.
* Guidance on mixtures (``guidance_weight`` > 0, with the trainer's ``mixing``): on a
  mixture whose predicted class is one of its sources, BCE between the mask and the bins
  where that source is loud (log1p > ``loud_threshold`` x max, as the reference's binarised
  clean clip) *and* dominant; L1/TV are not applied to those examples, as in the
  reference. The reference gates the term by the cross-correlation of the mask-in
  spectrum with the clean clip (``crosscor_th``) because its contamination is unlabelled
  noise; our mixtures have labelled sources, so the gate is "the prediction is one of the
  sources" instead. It trains from the start rather than as a separate fine-tuning run.
* ``class_conditional`` (not in the reference) conditions the decoder on the explained
  class (:class:`~audiointerp.interpreters.decoders.ClassFiLM`). Without it the mask
  explains the predicted class only, and another ``target`` is refused
  (:meth:`~audiointerp.interpreters.base.Interpreter.check_target`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiointerp.config import ConfigError, from_dict, to_dict
from audiointerp.features import Features, MaskDomain, apply_mask, fit_frames
from audiointerp.interpreters.base import (
    Capabilities,
    Guidance,
    Interpreter,
    guided_bce,
    resolve_target,
)
from audiointerp.interpreters.decoders import ActivationMaskDecoder, ClassFiLM, Cnn14Decoder
from audiointerp.interpreters.registry import register
from audiointerp.models.base import Classifier, ClassifierOutput
from audiointerp.models.cnn14 import Cnn14Classifier
from audiointerp.models.conv2d import Conv2dClassifier
from audiointerp.models.external import ExternalClassifier

CNN14_DECODER_DIM = 2048  # the reference's CNN14PSI_stft(dim=2048)
CONV2D_DECODER_DIM = 256  # the conv2d classifier's reference width
ACTIVATION_DECODER_DIM = 32  # our own choice: the decoder for a user's classifier


@dataclass
class LMACConfig:
    """L-MAC decoder size, mask domain and loss weights (defaults: the reference's, with
    its batch-scaled L1 weight made explicit).

    Attributes:
        width: decoder channels as a multiple of the reference (CNN14: 2048 ... 256;
            conv2d: 256 ... 64).
        mask_domain: ``linear`` (mask * |X|) or ``log1p`` (reference parity).
        mask_in_weight: weight of the mask-in cross-entropy (the reference's ``l_in_w``).
        mask_out_weight: weight of the (negated) mask-out cross-entropy (``l_out_w``).
        l1_weight: weight of mean |mask| (6.4: the reference's ``reg_w_l1`` 0.4 x its batch
            size 16).
        tv_weight: weight of the total variation of the mask (``reg_w_tv``).
        reference_l1_batch_scaling: multiply the L1 term by the batch size, as the
            reference does.
        guidance_weight: weight of the guidance BCE on mixtures (the reference's ``g_w``;
            its fine-tuning: 4).
        loud_threshold: loudness threshold of the guidance target (the reference's
            ``bin_th``, 0.35).
        loud_weight: extra weight of the guidance BCE averaged over the input's loud bins
            (:func:`~audiointerp.interpreters.base.guided_bce`); 0 in the reference.
        class_conditional: condition the decoder on the explained class (a learned
            per-class scale and shift of each hidden map, starting at identity), so a
            class other than the prediction can be explained; the reference has no
            conditioning (False), and then only the prediction can be explained.
    """

    width: float = 1.0
    mask_domain: MaskDomain = "linear"
    mask_in_weight: float = field(default=4.0, metadata={"aliases": ("l_in_w",)})
    mask_out_weight: float = field(default=0.2, metadata={"aliases": ("l_out_w",)})
    l1_weight: float = field(default=6.4, metadata={"aliases": ("reg_w_l1",)})
    tv_weight: float = field(default=0.0, metadata={"aliases": ("reg_w_tv",)})
    reference_l1_batch_scaling: bool = False
    guidance_weight: float = field(default=0.0, metadata={"aliases": ("g_w",)})
    loud_threshold: float = field(default=0.35, metadata={"aliases": ("bin_th",)})
    loud_weight: float = 0.0
    class_conditional: bool = False
    # removed (measured not to help, docs/experiments.md); older checkpoints hold it off
    retired_keys: ClassVar[dict[str, Any]] = {"detail_channels": 0}

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ValueError(f"width must be > 0, got {self.width}")


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class Conv2dMaskDecoder(nn.Module):
    """conv2d map (B, C, T/16, F/16) -> mask logits (B, T, F), mirroring the encoder.

    Args:
        in_channels: the classifier's encoder width.
        dim: decoder width; layers use dim, dim/2, dim/4, then 1 output channel.
    """

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        widths = (in_channels, dim, max(1, dim // 2), max(1, dim // 4), 1)
        self.layers = nn.ModuleList(
            nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)
            for c_in, c_out in zip(widths, widths[1:], strict=False)
        )

    def forward(self, hidden: tuple[Tensor, ...], frames: int, bins: int) -> Tensor:
        """Upsample by 2 four times to the encoder's sizes T/8, T/4, T/2, T (same for F)."""
        h = hidden[0]
        for level, layer in zip((3, 2, 1, 0), self.layers, strict=True):
            h = layer(h, output_size=(frames >> level, bins >> level))
            if level > 0:
                h = F.relu(h, inplace=True)  # a fresh output: no copy
        return h.squeeze(1)  # (B, T, F)


def fit_mask_logits(logits: Tensor, frames: int, bins: int) -> Tensor:
    """(B, T', F') logits -> (B, frames, bins): interpolate along F, crop/edge-pad along T."""
    if logits.shape[-1] != bins:
        logits = F.interpolate(
            logits.unsqueeze(1), size=(logits.shape[1], bins), mode="bilinear", align_corners=True
        ).squeeze(1)
    return fit_frames(logits, frames, mode="edge")


def total_variation(mask: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean squared difference of neighbouring frames plus of neighbouring bins,
    (B, T, F) -> (), each example weighted by ``weights`` (B,) (default 1)."""
    along_time = (mask[:, 1:] - mask[:, :-1]).pow(2).mean(dim=(1, 2))
    along_freq = (mask[:, :, 1:] - mask[:, :, :-1]).pow(2).mean(dim=(1, 2))
    per_example = along_time + along_freq
    return (per_example if weights is None else per_example * weights).mean()


@register("lmac")
class LMAC(Interpreter):
    """Decoder over the classifier's hidden maps -> sigmoid mask (B, T, F) on |X|.

    Unconditioned (the reference), the mask explains the decision encoded in the hidden
    maps, so only the predicted class can be explained (another ``target`` is refused);
    with ``class_conditional`` the decoder reads the maps conditioned on ``target``.
    """

    config_class = LMACConfig
    capabilities = Capabilities(  # the default config's; an instance follows its config
        any_target=False, batched=True, needs_gradients=False, needs_training=True
    )

    def __init__(self, config: LMACConfig, classifier: Classifier):
        super().__init__()
        self.config = config
        self.mask_domain = config.mask_domain
        if isinstance(classifier, Cnn14Classifier):
            blocks = [getattr(classifier.encoder, f"conv_block{i}") for i in (6, 5, 4, 3)]
            channels = tuple(block.conv2.out_channels for block in blocks)
            dim = _scaled(CNN14_DECODER_DIM, config.width)
            self.decoder: nn.Module = Cnn14Decoder(channels, dim, 1, 1, relu_before_last=False)
        elif isinstance(classifier, Conv2dClassifier):
            channels = (classifier.encoder.conv1.out_channels,)
            self.decoder = Conv2dMaskDecoder(channels[0], _scaled(CONV2D_DECODER_DIM, config.width))
        elif isinstance(classifier, ExternalClassifier):
            self.decoder = ActivationMaskDecoder(
                classifier.hidden_shape, _scaled(ACTIVATION_DECODER_DIM, config.width)
            )
            channels = (self.decoder.channels,)
        else:
            raise ConfigError(
                f"interpreter lmac: no decoder for classifier {type(classifier).__name__}; "
                "supported: conv2d, cnn14, your own (ExternalClassifier)"
            )
        self.class_names = list(classifier.class_names)
        self.learns_targets = config.class_conditional
        self.capabilities = replace(LMAC.capabilities, any_target=config.class_conditional)
        self.condition = (
            ClassFiLM(classifier.n_classes, channels) if config.class_conditional else None
        )

    @classmethod
    def from_config(cls, config: dict[str, Any], classifier: Classifier) -> LMAC:
        return cls(from_dict(LMACConfig, config, prefix="interpreter."), classifier)

    def config_dict(self) -> dict[str, Any]:
        return to_dict(self.config)

    def mask_logits(
        self, features: Features, classifier_out: ClassifierOutput, classes: Tensor
    ) -> Tensor:
        """Decoder logits fitted to the input, (B, T, F), for ``classes`` (B,) when the
        decoder is class-conditional."""
        frames, bins = features.magnitude.shape[1:]
        hidden = classifier_out.hidden
        if isinstance(self.decoder, ActivationMaskDecoder):  # any activations, as (B, D, L, 1)
            hidden = (self.decoder.sequence(hidden[0]).unsqueeze(-1),)
        if self.condition is not None:
            hidden = self.condition(hidden, classes)
        if isinstance(self.decoder, ActivationMaskDecoder):
            logits = self.decoder(features.log_magnitude, hidden[0].squeeze(-1))
        elif isinstance(self.decoder, Conv2dMaskDecoder):
            logits = self.decoder(hidden, frames, bins)
        else:
            logits = self.decoder(hidden).squeeze(1)  # (B, T', F')
        return fit_mask_logits(logits, frames, bins)

    def target_refusal(self, predicted: int, requested: int) -> str:
        return (
            f"{self.registry_name} explains only the predicted class "
            f"('{self.class_names[predicted]}'); it was trained without "
            f"interpreter.class_conditional=true, so it cannot explain "
            f"'{self.class_names[requested]}'"
        )

    def forward(
        self, features: Features, classifier_out: ClassifierOutput, target: Tensor | None = None
    ) -> Tensor:
        """Sigmoid mask (B, T, F) in [0, 1] over the input's linear magnitude.

        Raises:
            UnsupportedTargetError: ``target`` is not the prediction and the decoder is not
                class-conditional.
        """
        self.check_target(target, classifier_out.prediction)
        classes = resolve_target(classifier_out, target)
        return torch.sigmoid(self.mask_logits(features, classifier_out, classes))

    def loss(
        self,
        features: Features,
        classifier_out: ClassifierOutput,
        classifier: Classifier,
        guidance: Guidance | None = None,
    ) -> dict[str, Tensor]:
        """Weighted terms: mask-in CE, minus mask-out CE, L1 and TV of the mask, and the
        guidance BCE on mixtures (see the module notes).

        The class is ``guidance.classes`` (default: the classifier's prediction on the
        input); the classifier should be frozen (eval mode, no parameter gradients): only
        the mask receives gradients.
        """
        cfg = self.config
        predicted = (
            guidance.classes if guidance is not None else classifier_out.prediction
        ).detach()
        logits = self.mask_logits(features, classifier_out, predicted)
        mask = torch.sigmoid(logits)  # (B, T, F)
        magnitude = features.magnitude.detach()
        masked = torch.cat(
            [
                apply_mask(mask, magnitude, self.mask_domain),  # mask-in
                apply_mask(1.0 - mask, magnitude, self.mask_domain),  # mask-out
            ]
        )
        with classifier.explaining(features):
            logits_in, logits_out = classifier(masked).logits.chunk(2)  # one pass for both
        guide = guidance is not None and cfg.guidance_weight > 0
        guided = (
            guidance.guided.to(mask.dtype)
            if guide
            else torch.zeros(len(mask), dtype=mask.dtype, device=mask.device)
        )
        regularised = 1.0 - guided  # the reference drops L1/TV where guidance applies
        l1 = (mask.abs().mean(dim=(1, 2)) * regularised).mean()
        if cfg.reference_l1_batch_scaling:
            l1 = l1 * mask.shape[0]
        terms = {
            "loss/in": cfg.mask_in_weight * F.cross_entropy(logits_in, predicted),
            "loss/out": -cfg.mask_out_weight * F.cross_entropy(logits_out, predicted),
            "loss/l1": cfg.l1_weight * l1,
            "loss/tv": cfg.tv_weight * total_variation(mask, regularised),
        }
        if guide:
            bce = guided_bce(
                logits, guidance, features.log_magnitude, cfg.loud_threshold, cfg.loud_weight
            )
            terms["loss/guide"] = cfg.guidance_weight * (bce * guided).mean()
        return terms
