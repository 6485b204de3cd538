"""Classifiers by name: config, registry, and our checkpoint format for them.

A classifier checkpoint holds its tensors under ``classifier.``, its
:class:`ClassifierConfig` as the ``classifier`` section of ``config.yaml`` and the class
names, sample rate and feature settings in ``meta.json``. Interpreter checkpoints embed
the same three things, so :func:`load_classifier` reads either kind of folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from audiointerp.checkpoints import (
    Checkpoint,
    CheckpointError,
    check_keys,
    load_checkpoint,
    prefixed,
    save_checkpoint,
)
from audiointerp.config import ConfigError, from_dict, to_dict
from audiointerp.features import FeatureConfig
from audiointerp.models.base import Classifier, ClassifierOutput
from audiointerp.models.cnn14 import Cnn14Classifier
from audiointerp.models.conv2d import Conv2dClassifier
from audiointerp.models.external import ExternalClassifier, external_checkpoint

CHECKPOINT_PREFIX = "classifier"


@dataclass
class ClassifierConfig:
    """Which classifier and its sizes; defaults are the reference's full-width models.

    Attributes:
        name: ``conv2d`` (Conv2dEncoder_v2 + cosine head) or ``cnn14`` (+ Linear head).
        dim: conv2d encoder channels (reference 256).
        lin_neurons: conv2d head's linear block width (reference 192).
        cnn14_width: multiplier of CNN14's channels 64 ... 2048 (1.0 = reference).
        logit_scale: conv2d cosine-logit scale. 30 for our training, the scale SpeechBrain's
            additive-angular-margin loss uses: it lets softmax probabilities reach ~1, where
            raw cosines (scale 1, the reference) cap the top probability near 0.13 over 50
            classes. Imported reference weights use 1.0 for parity. Unused by cnn14.
        features: STFT and mel settings of the classifier's input.
    """

    name: Literal["conv2d", "cnn14"] = "conv2d"
    dim: int = 256
    lin_neurons: int = 192
    cnn14_width: float = 1.0
    logit_scale: float = 30.0
    features: FeatureConfig = field(default_factory=FeatureConfig)


def _build_conv2d(config: ClassifierConfig, class_names: list[str]) -> Classifier:
    return Conv2dClassifier(
        config.features, class_names, config.dim, config.lin_neurons, config.logit_scale
    )


def _build_cnn14(config: ClassifierConfig, class_names: list[str]) -> Classifier:
    return Cnn14Classifier(config.features, class_names, config.cnn14_width)


CLASSIFIERS: dict[str, Callable[[ClassifierConfig, list[str]], Classifier]] = {
    "conv2d": _build_conv2d,
    "cnn14": _build_cnn14,
}


def build_classifier(config: ClassifierConfig, class_names: list[str]) -> Classifier:
    """A freshly initialised classifier ``config.name`` with one output per class name."""
    if config.name not in CLASSIFIERS:
        raise ConfigError(
            f"classifier.name: unknown classifier {config.name!r}; "
            f"known: {', '.join(sorted(CLASSIFIERS))}"
        )
    assert class_names, "a classifier needs at least one class"
    return CLASSIFIERS[config.name](config, list(class_names))


def classifier_checkpoint(
    classifier: Classifier, config: ClassifierConfig | None
) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]]:
    """(tensors under ``classifier.``, ``{"classifier": config}``, meta) for a checkpoint;
    a user's classifier is referenced instead (:func:`external_checkpoint`)."""
    if isinstance(classifier, ExternalClassifier):
        return external_checkpoint(classifier)
    assert config is not None, "our classifiers are saved with their config"
    assert classifier.feature_config == config.features, "classifier built from another config"
    tensors = prefixed(CHECKPOINT_PREFIX, classifier.state_dict())
    meta = {
        "class_names": list(classifier.class_names),
        "sample_rate": config.features.sample_rate,
        "features": to_dict(config.features),
    }
    return tensors, {CHECKPOINT_PREFIX: to_dict(config)}, meta


def save_classifier(
    folder: str | os.PathLike,
    classifier: Classifier,
    config: ClassifierConfig,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``classifier`` as a checkpoint folder (atomic); ``meta`` adds e.g. metrics."""
    tensors, config_map, base_meta = classifier_checkpoint(classifier, config)
    return save_checkpoint(folder, tensors, config_map, {**base_meta, **(meta or {})})


def load_classifier(folder: str | os.PathLike) -> tuple[Classifier, ClassifierConfig]:
    """Rebuild the classifier of a classifier or interpreter folder, in eval mode.

    Loading is strict: every tensor must be present with its shape, and none extra.
    """
    return classifier_from_checkpoint(load_checkpoint(folder), folder)


def classifier_from_checkpoint(
    checkpoint: Checkpoint, folder: str | os.PathLike
) -> tuple[Classifier, ClassifierConfig]:
    """:func:`load_classifier` on a checkpoint already read (``folder`` names it in errors)."""
    section = checkpoint.config.get(CHECKPOINT_PREFIX)
    if not isinstance(section, dict):
        raise CheckpointError(f"{folder}: config.yaml has no '{CHECKPOINT_PREFIX}' section")
    try:
        config = from_dict(ClassifierConfig, section, prefix=f"{CHECKPOINT_PREFIX}.")
    except ConfigError as error:
        raise CheckpointError(f"{folder}: config.yaml: {error}") from error
    class_names = checkpoint.meta.get("class_names")
    if not isinstance(class_names, list) or not class_names:
        raise CheckpointError(f"{folder}: meta.json has no class_names list")
    classifier = build_classifier(config, [str(name) for name in class_names])
    state = checkpoint.state_dict(CHECKPOINT_PREFIX)
    expected = {key: value.shape for key, value in classifier.state_dict().items()}
    check_keys(f"{folder} ({CHECKPOINT_PREFIX}.*)", state, expected)
    classifier.load_state_dict(state, strict=True)
    return classifier.eval(), config


__all__ = [
    "CLASSIFIERS",
    "Classifier",
    "ClassifierConfig",
    "ClassifierOutput",
    "Cnn14Classifier",
    "Conv2dClassifier",
    "ExternalClassifier",
    "build_classifier",
    "classifier_checkpoint",
    "classifier_from_checkpoint",
    "load_classifier",
    "save_classifier",
]
