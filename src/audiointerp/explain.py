"""One home for "explain a batch": waveforms -> features -> classifier -> mask -> audio.

Every caller (the Explainer's windows, the mixture and sanity metrics, the evaluation,
training's validation, the benchmarks) runs this one path::

    features = extractor(waveforms)                                    # STFT, (B, T, F)
    classifier_out = classifier(features.magnitude)                    # no gradients
    mask = interpreter(features, classifier_out, target)               # (B, T, F) in [0, 1]
    waveform = synthesize(apply_mask(mask, |X|, domain), features)     # kept part, (B, N)
    removed = synthesize(apply_mask(1 - mask, |X|, domain), features)  # removed part, (B, N)

Several targets share one STFT and one classifier pass (:func:`explain_targets`), and a
caller that already has the features or the classifier output passes them in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from audiointerp.features import Features, apply_mask
from audiointerp.interpreters.base import Interpreter, resolve_target
from audiointerp.interpreters.baselines import frozen
from audiointerp.models.base import Classifier, ClassifierOutput

Array = Tensor | np.ndarray


@dataclass
class Explanation:
    """An explanation: kept and removed audio, the mask, and the class it explains.

    One class for both producers, because both describe the same thing and every reader
    (metrics, report, CLI, web server, hub loader) should read one set of names:

    * :func:`explain` returns tensors for a batch (B, ...) at the model's rate, with the
      ``features`` and ``classifier_out`` it used (the metrics need the complex spectrum
      and the logits); the class fields are lists over the batch.
    * :meth:`audiointerp.pipeline.Explainer.explain` returns numpy arrays for one clip
      (no batch axis, class fields are scalars) or a batch, at the input's rate, with the
      windows cross-faded; it has no single ``features`` or ``classifier_out`` (None).

    Attributes:
        waveform: mask-in audio, (N,) or (B, N), at ``sample_rate``.
        removed: mask-out audio (what the explanation left out), same shape.
        mask: (T, F) or (B, T, F) in [0, 1] on the model's STFT grid
            (``model_sample_rate``, ``hop_length``).
        spectrogram: the input's linear magnitude on the same grid.
        predicted: predicted class name (a list for a batch); for the Explainer's audio
            longer than one window, the class with the highest mean probability.
        predicted_index: its index (a list for a batch).
        probability: its (mean) probability (a list for a batch).
        top_k: ``[(name, probability), ...]``, best first (a list of lists for a batch).
        target: the class the mask explains (``predicted`` unless a target was given).
        sample_rate: rate of ``waveform`` and ``removed``.
        model_sample_rate: rate of the mask's STFT grid.
        hop_length: samples per mask frame at ``model_sample_rate``.
        features: the batch's features (:func:`explain` only).
        classifier_out: the classifier's output on them (:func:`explain` only).
    """

    waveform: Array
    removed: Array
    mask: Array
    spectrogram: Array
    predicted: str | list[str]
    predicted_index: int | list[int]
    probability: float | list[float]
    top_k: list[tuple[str, float]] | list[list[tuple[str, float]]]
    target: str | list[str]
    sample_rate: int
    model_sample_rate: int
    hop_length: int
    features: Features | None = None
    classifier_out: ClassifierOutput | None = None


def classify(classifier: Classifier, waveforms: Tensor) -> tuple[Features, ClassifierOutput]:
    """waveforms (B, N) -> their features and the classifier's output, without gradients."""
    with torch.no_grad():
        features = classifier.feature_extractor(waveforms)
        with classifier.explaining(features):
            return features, classifier(features.magnitude)


def interpret(
    interpreter: Interpreter,
    features: Features,
    classifier_out: ClassifierOutput,
    target: Tensor | None = None,
) -> Tensor:
    """The interpreter's mask (B, T, F) for ``target`` (B,) (None: the predicted class),
    detached; gradients only for methods that differentiate the classifier."""
    # gradient baselines differentiate the classifier, even inside a caller's no_grad
    with torch.set_grad_enabled(interpreter.capabilities.needs_gradients):
        return interpreter(features, classifier_out, target).detach()


def explain_targets(
    classifier: Classifier,
    interpreter: Interpreter,
    inputs: Tensor | Features,
    targets: Sequence[Tensor | None],
    classifier_out: ClassifierOutput | None = None,
    top_k: int = 5,
) -> list[Explanation]:
    """Explain one batch once per entry of ``targets``, sharing one STFT and classifier pass.

    The classifier and interpreter run in eval mode with parameter gradients off; their
    previous flags are restored on exit.

    Args:
        classifier: the explained classifier; its feature extractor sets the STFT.
        interpreter: maps (features, classifier output, target) to masks.
        inputs: waveforms (B, N), or their features when already computed.
        targets: per explanation, (B,) classes to explain, or None for the predicted.
        classifier_out: the classifier's output on ``inputs`` when already computed.
        top_k: how many classes each explanation lists in ``top_k``.
    """
    assert classifier_out is None or isinstance(inputs, Features), "output without features"
    extractor = classifier.feature_extractor
    with frozen(classifier), frozen(interpreter):
        if isinstance(inputs, Features):
            features = inputs
            if classifier_out is None:
                with torch.no_grad(), classifier.explaining(features):
                    classifier_out = classifier(features.magnitude)
        else:
            features, classifier_out = classify(classifier, inputs)
        summary = [
            class_summary(classifier.class_names, row, top_k)
            for row in classifier_out.probabilities.detach().cpu()
        ]
        domain, magnitude = interpreter.mask_domain, features.magnitude
        explanations = []
        for target in targets:
            mask = interpret(interpreter, features, classifier_out, target)
            assert mask.shape == magnitude.shape, (mask.shape, magnitude.shape)
            with torch.no_grad():
                kept = extractor.synthesize(apply_mask(mask, magnitude, domain), features)
                removed = extractor.synthesize(apply_mask(1.0 - mask, magnitude, domain), features)
            explained = resolve_target(classifier_out, target).tolist()
            explanations.append(
                Explanation(
                    waveform=kept,
                    removed=removed,
                    mask=mask,
                    spectrogram=magnitude,
                    **{key: [row[key] for row in summary] for key in summary[0]},
                    target=[classifier.class_names[int(index)] for index in explained],
                    sample_rate=classifier.feature_config.sample_rate,
                    model_sample_rate=classifier.feature_config.sample_rate,
                    hop_length=classifier.feature_config.hop_length,
                    features=features,
                    classifier_out=classifier_out,
                )
            )
    return explanations


def explain(
    classifier: Classifier,
    interpreter: Interpreter,
    inputs: Tensor | Features,
    target: Tensor | None = None,
    classifier_out: ClassifierOutput | None = None,
    top_k: int = 5,
) -> Explanation:
    """Explain waveforms (B, N) (or their features) for ``target`` (B,) (None: predicted)."""
    return explain_targets(classifier, interpreter, inputs, [target], classifier_out, top_k)[0]


def class_summary(class_names: Sequence[str], probabilities: Tensor, top_k: int) -> dict[str, Any]:
    """``predicted``, ``predicted_index``, ``probability`` and ``top_k`` of (C,) probabilities."""
    best = probabilities.argsort(descending=True)[: max(1, top_k)]
    predicted = int(best[0])
    return {
        "predicted": class_names[predicted],
        "predicted_index": predicted,
        "probability": float(probabilities[predicted]),
        "top_k": [(class_names[int(i)], float(probabilities[i])) for i in best],
    }
