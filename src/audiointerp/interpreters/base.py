"""The one interface every interpreter implements (PIQ, L2I, L-MAC, baselines...).

Training code, metrics, the report and the CLI only ever see this interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiointerp.errors import UnsupportedTargetError
from audiointerp.features import Features, MaskDomain
from audiointerp.models.base import Classifier, ClassifierOutput


@dataclass
class Guidance:
    """Ground truth for training on mixtures: the part of the input an explanation keeps.

    Built by the trainer from a :class:`audiointerp.data.mixtures.MixedBatch` and the
    classifier's prediction on it. Row b explains class ``classes[b]``: the prediction, or,
    for interpreters that :attr:`Interpreter.learns_targets`, also the other source's class
    of a mixture (the trainer then repeats that mixture's row). For a clean clip ``target``
    is the input itself and ``other`` is silence, so methods that threshold the input
    (PIQ) read one path.
    """

    target: Tensor  # (B, T, F) |STFT| of class classes[b]'s source (the input if unmixed)
    other: Tensor  # (B, T, F) |STFT| of everything else (zeros if unmixed)
    guided: Tensor  # (B,) bool: a mixture one of whose sources is of class classes[b]
    classes: Tensor  # (B,) long: the class each row explains

    @classmethod
    def unmixed(cls, features: Features, classes: Tensor) -> Guidance:
        """The guidance of clean clips: keep the input, nothing else is there."""
        magnitude = features.magnitude
        guided = torch.zeros(magnitude.shape[0], dtype=torch.bool, device=magnitude.device)
        return cls(magnitude, torch.zeros_like(magnitude), guided, classes)

    def crop(self, frames: int, bins: int) -> Guidance:
        """The first ``frames`` x ``bins`` of both spectra."""
        return Guidance(
            self.target[:, :frames, :bins], self.other[:, :frames, :bins], self.guided, self.classes
        )

    def target_mask(self, threshold: float) -> Tensor:
        """(B, T, F) 1 where the target is loud (log1p|S| > threshold * its per-clip max)
        and louder than the rest; for a clean clip, the reference PIQ's energy target."""
        loud = loud_bins(torch.log1p(self.target), threshold)
        return (loud & (self.target >= self.other)).float()


@dataclass(frozen=True)
class Capabilities:
    """What an interpreter supports; callers and the contract test read it, never the type.

    Attributes:
        any_target: explains any class given as ``target``; False: only the predicted
            class, and :meth:`Interpreter.check_target` refuses the others.
        batched: in eval mode a clip's mask does not depend on its batch-mates, so a batch
            gives the masks of its clips one by one.
        needs_gradients: forward differentiates the classifier (gradient baselines), so
            callers enable gradients around it even under ``no_grad``.
        needs_training: has parameters to learn before use; False: usable as built.
    """

    any_target: bool
    batched: bool
    needs_gradients: bool
    needs_training: bool


def loud_bins(log_magnitude: Tensor, threshold: float) -> Tensor:
    """(B, T, F) bool: log1p|X| above ``threshold`` x its per-clip max (the reference PIQ's
    rule for the bins that matter)."""
    return log_magnitude > threshold * log_magnitude.amax(dim=(1, 2), keepdim=True)


def guided_bce(
    logits: Tensor, guidance: Guidance, log_magnitude: Tensor, threshold: float, loud_weight: float
) -> Tensor:
    """Per-example (B,) BCE of mask logits (B, T, F) against ``guidance.target_mask``.

    The mean over all bins (the reference PIQ's reconstruction term) is dominated by the
    many silent bins, which are easy and inaudible; ``loud_weight`` adds that weight times
    the mean over the input's loud bins (log1p|X| > ``threshold`` x its max), where a mask
    has to tell the explained source from the rest to be heard as that source.
    """
    target = guidance.target_mask(threshold)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    per_example = bce.mean(dim=(1, 2))
    if loud_weight > 0:
        loud = loud_bins(log_magnitude, threshold).to(bce.dtype)
        loud_mean = (bce * loud).sum(dim=(1, 2)) / loud.sum(dim=(1, 2)).clamp_min(1.0)
        per_example = per_example + loud_weight * loud_mean
    return per_example


class Interpreter(nn.Module):
    """Maps (input features, classifier output, target class) to a mask in [0, 1].

    Attributes:
        mask_domain: where the mask is applied (:func:`audiointerp.features.apply_mask`):
            ``linear`` (mask * |X|) or ``log1p`` (reference parity for imported models).
        capabilities: what the method supports (:class:`Capabilities`). On the class:
            the method's default; an instance may differ where its config decides
            (L-MAC's ``any_target`` is its ``class_conditional``).
        learns_targets: the loss trains the mask of whichever class ``Guidance.classes``
            names, so training on mixtures also teaches the non-predicted source's class.
        external_classifiers: the method works for an
            :class:`~audiointerp.models.external.ExternalClassifier` (False: it reads our
            architectures' own feature maps; building it for one is a ConfigError).
        config_class: the dataclass of the method's settings (the fields ``from_config``
            takes); recipes build their typed config from it, so every setting is checked
            and overridable from the command line. None: the method has no settings.
    """

    mask_domain: MaskDomain = "linear"
    capabilities: Capabilities = Capabilities(
        any_target=True, batched=True, needs_gradients=False, needs_training=True
    )
    learns_targets: bool = False
    external_classifiers: bool = True  # works for a user's classifier (models/external.py)
    registry_name: str = ""
    config_class: type | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any], classifier: Classifier) -> Interpreter:
        """Build from a plain mapping (the ``interpreter`` section of a checkpoint config)."""
        raise NotImplementedError

    def config_dict(self) -> dict[str, Any]:
        """The plain mapping :meth:`from_config` takes (saved in checkpoints)."""
        raise NotImplementedError

    def forward(
        self, features: Features, classifier_out: ClassifierOutput, target: Tensor | None = None
    ) -> Tensor:
        """Mask over the linear-magnitude STFT of the input, (B, T, F) in [0, 1].

        Args:
            features: the input's STFT features (T frames, F bins).
            classifier_out: the frozen classifier's output on ``features.magnitude``.
            target: (B,) class to explain; None means the predicted class.
        """
        raise NotImplementedError

    def check_target(self, target: Tensor | None, prediction: Tensor) -> None:
        """Refuse a ``target`` (B,) this interpreter cannot explain.

        Without ``capabilities.any_target`` only the predicted class can be explained, so
        any row whose target differs from ``prediction`` (B,) is refused; forward calls
        this first, so no path silently explains another class than the one asked for.

        Raises:
            UnsupportedTargetError: the first refused row, in :meth:`target_refusal`'s words.
        """
        if target is None or self.capabilities.any_target:
            return
        refused = (target.to(prediction.device) != prediction).nonzero().flatten()
        if len(refused):
            row = int(refused[0])
            reason = self.target_refusal(int(prediction[row]), int(target[row]))
            raise UnsupportedTargetError(reason)

    def target_refusal(self, predicted: int, requested: int) -> str:
        """Why class ``requested`` cannot be explained where the prediction is ``predicted``
        (one line; methods override it to name the classes and the fix)."""
        return (
            f"{self.registry_name} explains only the predicted class ({predicted}), "
            f"so it cannot explain class {requested}"
        )

    def end_epoch(self) -> dict[str, float]:
        """Called after each training epoch; returns statistics for the log (e.g. codebook
        usage). Runs on every rank under DDP."""
        return {}

    def loss(
        self,
        features: Features,
        classifier_out: ClassifierOutput,
        classifier: Classifier,
        guidance: Guidance | None = None,
    ) -> dict[str, Tensor]:
        """Named loss terms (``loss/<name>``), already weighted; the trainer sums them.

        ``guidance`` is given when the batch holds mixtures (None: clean clips only);
        methods without a use for it ignore it.
        """
        raise NotImplementedError(f"{type(self).__name__} has nothing to train")


def resolve_target(classifier_out: ClassifierOutput, target: Tensor | None) -> Tensor:
    """(B,) class indices to explain: ``target`` or the classifier's prediction."""
    return classifier_out.prediction if target is None else target.to(classifier_out.logits.device)
