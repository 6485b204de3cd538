"""L2I, "Listen to Interpret" (Parekh et al., arXiv 2202.11479), on a frozen classifier.

psi maps the classifier's hidden representation to activations H (B, K, T) of a frozen NMF
dictionary W (F, K); theta (attention pooling over time + a linear layer, no biases)
predicts the classifier's decision from H. The explanation of class c keeps the
components whose relevance ``theta.weight[c] * pooled(H)`` exceeds a fraction of the
largest, and masks the input with their share of the NMF reconstruction::

    mask = W[:, L] H[L] / (W H + eps)        (B, T, F) in [0, 1]

Two psi networks, chosen by the classifier's hidden representation: one map (conv2d,
the reference's ``PsiOptimized`` decoder) or four CNN14 blocks (``CNN14PSI_stft_2d``).
Both decoders give about T frames; H is fitted to the input's T frames by cropping or by
repeating the last frame (the reference's conv2d decoder gives 417 of 431 frames, and
the reference zero-pads the mask, silencing the clip's end). theta pools a fixed number
of frames (``n_frames``); H is fitted to that length the same way before pooling.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiointerp.config import ConfigError, from_dict, to_dict
from audiointerp.features import Features, MaskDomain, fit_frames
from audiointerp.interpreters.base import Guidance, Interpreter, resolve_target
from audiointerp.interpreters.decoders import Cnn14Decoder, fit2d, upsampling_stack, xavier_init
from audiointerp.interpreters.nmf import NMFDictionary, load_nmf
from audiointerp.interpreters.registry import register
from audiointerp.models.base import Classifier, ClassifierOutput

CONV2D_MAPS, CNN14_MAPS = 1, 4


@dataclass
class L2IConfig:
    """L2I settings; defaults are the reference's conv2d recipe except where noted.

    Attributes:
        n_components: K, NMF templates (must match the dictionary).
        width: psi channels (reference 256 for conv2d, 2048 for CNN14; CNN14 needs a
            multiple of 8).
        n_frames: frames theta pools over (431 = a 5-s clip; the reference's conv2d uses
            417, the frames its decoder gives).
        alpha: weight of the NMF reconstruction MSE.
        beta: weight of the L1 sparsity of H.
        classifier_temperature: softmax temperature of the classifier's logits in the
            fidelity target (the reference's ``classifier_temp``: 0.01 for conv2d's cosine
            logits, 1 for CNN14).
        relevance_threshold: keep components with normalised relevance above this (the
            reference's ``relevance_th``).
        eps: added to W H in the mask's denominator.
        mask_domain: ``linear`` (mask * |X|) or ``log1p`` (the reference's domain).
        hidden_channels: channels of the classifier's hidden maps; empty = read them off
            the classifier by running it once on silence.
        nmf_folder: dictionary checkpoint to load at construction; empty = W comes from
            the interpreter's own checkpoint (saved configs hold "", the dictionary is
            embedded as ``nmf.W``).
        nmf_hparams: ``train_l2i.py`` with an empty ``nmf_folder``: the ``train_nmf.py``
            hparams whose default output is used (learned first when absent).
    """

    n_components: int = 100
    width: int = 256
    n_frames: int = 431
    alpha: float = 10.0
    beta: float = 0.8
    classifier_temperature: float = field(default=0.01, metadata={"aliases": ("classifier_temp",)})
    relevance_threshold: float = field(default=0.2, metadata={"aliases": ("relevance_th",)})
    eps: float = 1e-10
    mask_domain: MaskDomain = "linear"
    hidden_channels: list[int] = field(default_factory=list)
    nmf_folder: str = ""
    nmf_hparams: str = "nmf.yaml"


class Conv2dPsi(nn.Module):
    """The reference's ``PsiOptimized`` (no adapter): conv2d map -> H.

    Four transposed convolutions (ReLU, BatchNorm) upsample 16x, a k12 one gives a single
    channel (B, 1, T'', F''), and Linear(F -> K) turns each frame into K activations.
    (B, 256, 26, 32) -> (B, K, 417) at the reference's sizes. Keys ``decoder.0`` ...
    ``decoder.14`` as the reference.
    """

    def __init__(self, in_channels: int, width: int, n_components: int, n_freqs: int):
        super().__init__()
        layers = upsampling_stack(in_channels, width)
        layers += [nn.ReLU(), nn.Linear(n_freqs, n_components), nn.ReLU()]
        self.decoder = nn.Sequential(*layers)
        self.n_freqs = n_freqs
        self.apply(xavier_init)

    def forward(self, hidden: tuple[Tensor, ...]) -> Tensor:
        """(map (B, C, T', F'),) -> H (B, K, ~16 T')."""
        (feature_map,) = hidden
        image = self.decoder[:14](feature_map)  # (B, 1, T'', F'')
        image = fit2d(image, (image.shape[-2], self.n_freqs))  # F'' = F at n_fft 1024
        return self.decoder[14:](image).squeeze(1).transpose(1, 2)  # (B, K, T'')


class Cnn14Psi(Cnn14Decoder):
    """The reference's ``CNN14PSI_stft_2d``: CNN14 blocks 6, 5, 4, 3 -> H.

    A :class:`~audiointerp.interpreters.decoders.Cnn14Decoder` with K output maps (ReLU
    after every layer, a k(7, 5) last layer); the mean over frequency gives H (B, K, T).
    (2048, 13, 2), (1024, 13, 2), (512, 26, 5), (256, 53, 10) -> (B, K, 431) at the
    reference's sizes. No BatchNorm; PyTorch's default init (as the reference).
    """

    def __init__(self, in_channels: list[int], width: int, n_components: int):
        if width % 8:
            raise ConfigError(f"interpreter.width: CNN14 psi needs a multiple of 8, got {width}")
        super().__init__(in_channels, width, n_components, 7, relu_before_last=True)

    def forward(self, hidden: tuple[Tensor, ...]) -> Tensor:
        """(block6, block5, block4, block3) -> H (B, K, T)."""
        assert hidden[0].shape[-1] >= 2, "CNN14 psi needs >= 64 mel bands (block 6 >= 2 bins)"
        h = F.relu(super().forward(hidden))  # (B, K, 431, 513)
        return F.relu(h.mean(dim=-1))


class Theta(nn.Module):
    """H (B, K, T) -> class logits: a learned weighting over time, then Linear(K -> C).

    Both without bias, keys ``hard_att.weight`` (1, T) and ``classifier.0.weight`` (C, K)
    as the reference's ``Theta`` (which ends in a softmax; we return logits).
    """

    def __init__(self, n_components: int, n_frames: int, n_classes: int):
        super().__init__()
        self.hard_att = nn.Linear(n_frames, 1, bias=False)
        self.classifier = nn.Sequential(nn.Linear(n_components, n_classes, bias=False))

    @property
    def n_frames(self) -> int:
        return self.hard_att.in_features

    @property
    def class_weight(self) -> Tensor:
        """(C, K) component weights of each class."""
        return self.classifier[0].weight

    def pool(self, activations: Tensor) -> Tensor:
        """H (B, K, T) -> (B, K): fitted to ``n_frames`` (last frame repeated), pooled."""
        fitted = fit_frames(activations.transpose(1, 2), self.n_frames, mode="edge")
        return self.hard_att(fitted.transpose(1, 2)).squeeze(-1)

    def forward(self, activations: Tensor) -> Tensor:
        """H (B, K, T) -> logits (B, C)."""
        return self.classifier(self.pool(activations))


@register("l2i")
class L2I(Interpreter):
    """Listen to Interpret: NMF activations predicted from the classifier's hidden maps.

    Args:
        config: :class:`L2IConfig` with ``hidden_channels`` filled in.
        n_classes: the classifier's number of classes.
        n_freqs: STFT bins (F) of the classifier's features.
    """

    config_class = L2IConfig
    external_classifiers = False  # its psi decodes conv2d's map or CNN14's blocks

    def __init__(self, config: L2IConfig, n_classes: int, n_freqs: int):
        super().__init__()
        channels = list(config.hidden_channels)
        if len(channels) == CONV2D_MAPS:
            self.psi: nn.Module = Conv2dPsi(channels[0], config.width, config.n_components, n_freqs)
        elif len(channels) == CNN14_MAPS:
            self.psi = Cnn14Psi(channels, config.width, config.n_components)
        else:
            raise ConfigError(
                f"interpreter.hidden_channels: L2I reads 1 map (conv2d) or 4 blocks (CNN14), "
                f"got {len(channels)}"
            )
        self.theta = Theta(config.n_components, config.n_frames, n_classes)
        self.nmf = NMFDictionary(n_freqs, config.n_components).requires_grad_(False)
        self.config = config
        self.mask_domain = config.mask_domain

    @classmethod
    def from_config(cls, config: dict[str, Any], classifier: Classifier) -> L2I:
        """Build for ``classifier``; loads the dictionary when ``nmf_folder`` is set."""
        parsed = from_dict(L2IConfig, dict(config), prefix="interpreter.")
        if not parsed.hidden_channels:
            parsed = replace(parsed, hidden_channels=probe_hidden_channels(classifier))
        feature_config = classifier.feature_config
        interpreter = cls(parsed, classifier.n_classes, feature_config.n_freqs)
        if parsed.nmf_folder:
            dictionary = load_nmf(parsed.nmf_folder, feature_config)
            if dictionary.n_components != parsed.n_components:
                raise ConfigError(
                    f"interpreter.n_components: {parsed.n_components}, but the dictionary in "
                    f"{parsed.nmf_folder} has {dictionary.n_components} components"
                )
            interpreter.nmf.W.copy_(dictionary.W.detach())
        return interpreter

    def config_dict(self) -> dict[str, Any]:
        """The constructor config; ``nmf_folder`` is "" because ``nmf.W`` is embedded."""
        return to_dict(replace(self.config, nmf_folder=""))

    # -- the data flow: hidden maps -> H -> (theta logits, relevance) -> mask ------------

    def activations(self, classifier_out: ClassifierOutput, frames: int) -> Tensor:
        """H (B, K, frames) >= 0 from the (detached) hidden maps, last frame repeated."""
        hidden = tuple(h.detach() for h in classifier_out.hidden)
        activations = self.psi(hidden)  # (B, K, T'')
        return fit_frames(activations.transpose(1, 2), frames, mode="edge").transpose(1, 2)

    def relevance(self, activations: Tensor, target: Tensor) -> Tensor:
        """(B, K) relevance of each component to class ``target`` (B,), max |.| = 1."""
        scores = self.theta.class_weight[target] * self.theta.pool(activations)  # (B, K)
        peak = scores.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)
        return scores / peak

    def component_mask(self, activations: Tensor, selected: Tensor) -> Tensor:
        """Share of the selected components in the NMF reconstruction, (B, T, F) in [0, 1].

        The kept part is decoded from the selected components only (gathered per clip,
        padded to the batch's largest selection), so it costs a fraction of the full
        reconstruction when few components are relevant, as the reference's loop does.

        Args:
            activations: H (B, K, T).
            selected: (B, K) bool, True for a kept component.
        """
        n_kept = int(selected.sum(1).max())
        order = selected.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :n_kept]
        keep = selected.gather(1, order).unsqueeze(-1)  # (B, M, 1): False on padding
        frames = activations.shape[-1]
        kept_h = F.relu(activations.gather(1, order.unsqueeze(-1).expand(-1, -1, frames)))
        kept = (kept_h * keep).transpose(1, 2) @ self.nmf.templates.T[order]  # (B, T, F)
        total = self.nmf.decode(activations).add_(self.config.eps)
        return kept.div_(total).clamp_(0.0, 1.0)  # in place: the batch's maps exceed the cache

    def forward(
        self, features: Features, classifier_out: ClassifierOutput, target: Tensor | None = None
    ) -> Tensor:
        """Mask (B, T, F) in [0, 1] of the components relevant to ``target`` (default: the
        prediction); each clip's mask depends on that clip alone (with psi in eval mode)."""
        activations = self.activations(classifier_out, features.magnitude.shape[1])
        relevance = self.relevance(activations, resolve_target(classifier_out, target))
        return self.component_mask(activations, relevance > self.config.relevance_threshold)

    def loss(
        self,
        features: Features,
        classifier_out: ClassifierOutput,
        classifier: Classifier,
        guidance: Guidance | None = None,
    ) -> dict[str, Tensor]:
        """alpha * NMF reconstruction MSE, fidelity CE of theta to the classifier's
        tempered softmax, beta * mean |H|. On mixtures (``guidance``) the same terms are
        computed on the mixture: L2I has no source-level target."""
        activations = self.activations(classifier_out, features.magnitude.shape[1])
        reconstruction = self.nmf.decode(activations)  # (B, T, F)
        soft_target = (classifier_out.logits.detach() / self.config.classifier_temperature).softmax(
            -1
        )
        return {
            "loss/rec": self.config.alpha * F.mse_loss(reconstruction, features.log_magnitude),
            "loss/fid": F.cross_entropy(self.theta(activations), soft_target),
            "loss/l1": self.config.beta * activations.abs().mean(),
        }


@torch.no_grad()
def probe_hidden_channels(classifier: Classifier, frames: int = 64) -> list[int]:
    """Channels of the classifier's hidden maps, from one eval-mode pass on silence.

    The classifier's train/eval mode is restored, so BatchNorm statistics do not move.
    """
    was_training = classifier.training
    classifier.eval()
    try:
        parameter = next(classifier.parameters())
        silence = parameter.new_zeros(1, frames, classifier.feature_config.n_freqs)
        hidden = classifier(silence).hidden
    finally:
        classifier.train(was_training)
    return [int(h.shape[1]) for h in hidden]
