"""The one interface every interpreter implements (PIQ, L2I, L-MAC, baselines...).

Training code, metrics, the report and the CLI only ever see this interface.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from audiointerp.features import Features, MaskDomain
from audiointerp.models.base import Classifier, ClassifierOutput


class Interpreter(nn.Module):
    """Maps (input features, classifier output, target class) to a mask in [0, 1].

    Attributes:
        mask_domain: where the mask is applied (:func:`audiointerp.features.apply_mask`):
            ``linear`` (mask * |X|) or ``log1p`` (reference parity for imported models).
        trainable: False for methods with nothing to learn (gradient baselines, oracles).
        config_class: the dataclass of the method's settings (the fields ``from_config``
            takes); recipes build their typed config from it, so every setting is checked
            and overridable from the command line. None: the method has no settings.
    """

    mask_domain: MaskDomain = "linear"
    trainable: bool = True
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

    def end_epoch(self) -> dict[str, float]:
        """Called after each training epoch; returns statistics for the log (e.g. codebook
        usage). Runs on every rank under DDP."""
        return {}

    def loss(
        self, features: Features, classifier_out: ClassifierOutput, classifier: Classifier
    ) -> dict[str, Tensor]:
        """Named loss terms (``loss/<name>``), already weighted; the trainer sums them."""
        raise NotImplementedError(f"{type(self).__name__} has nothing to train")


def resolve_target(classifier_out: ClassifierOutput, target: Tensor | None) -> Tensor:
    """(B,) class indices to explain: ``target`` or the classifier's prediction."""
    return classifier_out.prediction if target is None else target.to(classifier_out.logits.device)
