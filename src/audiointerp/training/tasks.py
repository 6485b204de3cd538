"""What the trainer trains: a classifier on waveforms, or an interpreter of a frozen one.

Batches are what :class:`audiointerp.data.esc50.ESC50Dataset` yields, collated:
``(waveform (B, N), label (B,), clip_id list[str])``. Features are computed on the fly
with the classifier's own :class:`~audiointerp.features.FeatureExtractor`, so training,
explanation and metrics read one feature path.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiointerp.checkpoints import prefixed
from audiointerp.data.mixtures import MixedBatch, MixingConfig, mix_batch
from audiointerp.explain import classify, interpret
from audiointerp.features import Features
from audiointerp.interpreters.base import Guidance, Interpreter
from audiointerp.metrics.faithfulness import faithfulness_metrics
from audiointerp.models import ClassifierConfig, classifier_checkpoint
from audiointerp.models.base import Classifier, ClassifierOutput

Batch = tuple[Tensor, Tensor, list[str]]


class ClassifierTask:
    """Cross-entropy on the classifier's logits; accuracy as the metric."""

    def __init__(self, classifier: Classifier, config: ClassifierConfig):
        self.model: nn.Module = classifier
        self.classifier = classifier
        self.config = config

    def to(self, device: torch.device) -> None:
        self.classifier.to(device)

    def _logits(self, waveform: Tensor) -> Tensor:
        """waveform (B, N) -> logits (B, C)."""
        return self.classifier(self.classifier.feature_extractor(waveform).magnitude).logits

    def training_step(self, batch: Batch) -> dict[str, Tensor]:
        waveform, labels, _ = batch
        logits = self._logits(waveform)
        return {
            "loss": F.cross_entropy(logits, labels),
            "metric/accuracy": (logits.detach().argmax(-1) == labels).float().mean(),
        }

    def validation_step(self, batch: Batch) -> dict[str, Tensor]:
        """Per-example (B,) cross-entropy and correctness."""
        waveform, labels, _ = batch
        logits = self._logits(waveform)
        return {
            "loss": F.cross_entropy(logits, labels, reduction="none"),
            "accuracy": (logits.argmax(-1) == labels).float(),
        }

    def end_epoch(self) -> dict[str, float]:
        return {}

    def checkpoint(self) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]]:
        return classifier_checkpoint(self.classifier, self.config)


class InterpreterTask:
    """Trains an interpreter of a frozen classifier; validates with faithfulness metrics.

    The classifier stays in eval mode with ``requires_grad`` off, so it never reaches the
    optimiser (which only takes ``model``, the interpreter) and its BatchNorm statistics
    never move. The loss is the sum of ``interpreter.loss`` terms.

    With ``mixing`` (``prob`` > 0), training batches are partly replaced by two-class
    mixtures (:func:`~audiointerp.data.mixtures.mix_batch`) and the interpreter's loss gets
    a :class:`~audiointerp.interpreters.base.Guidance` saying which source each explained
    class belongs to. Validation stays on clean clips.

    Args:
        interpreter: the trainable interpreter (``model``).
        classifier: the explained classifier.
        classifier_config: how to rebuild it (stored in the checkpoint); None for a user's
            classifier, which the checkpoint references by its spec.
        reference_compatible: compute the metrics with the reference's formulas.
        mixing: training on mixtures; None = clean clips only.
    """

    def __init__(
        self,
        interpreter: Interpreter,
        classifier: Classifier,
        classifier_config: ClassifierConfig | None,
        reference_compatible: bool = False,
        mixing: MixingConfig | None = None,
    ):
        self.model: nn.Module = interpreter
        self.interpreter = interpreter
        self.classifier = classifier.eval().requires_grad_(False)
        self.classifier_config = classifier_config
        self.reference_compatible = reference_compatible
        self.mixing = mixing or MixingConfig()

    def to(self, device: torch.device) -> None:
        self.classifier.to(device)
        self.interpreter.to(device)

    def inputs(self, waveform: Tensor) -> tuple[Features, ClassifierOutput]:
        """waveform (B, N) -> its features and the frozen classifier's output on them."""
        self.classifier.eval()  # in case the interpreter holds it as a submodule
        return classify(self.classifier, waveform)

    def training_step(self, batch: Batch) -> dict[str, Tensor]:
        waveform, labels, _ = batch
        if self.mixing.prob == 0:
            features, classifier_out = self.inputs(waveform)
            terms = self.interpreter.loss(features, classifier_out, self.classifier)
        else:
            mixed = mix_batch(waveform, labels, self.mixing)
            features, classifier_out = self.inputs(mixed.mixture)
            rows, guidance = self.guidance(mixed, classifier_out.prediction)
            features, classifier_out = features[rows], classifier_out[rows]
            terms = self.interpreter.loss(features, classifier_out, self.classifier, guidance)
            terms["metric/guided"] = guidance.guided.float().mean().detach()
        losses = [value for key, value in terms.items() if key.startswith("loss/")]
        return {"loss": torch.stack(losses).sum(), **terms}

    @torch.no_grad()
    def guidance(self, mixed: MixedBatch, prediction: Tensor) -> tuple[Tensor, Guidance]:
        """Rows to train on and their :class:`Guidance`, as magnitude spectra.

        Every row explains its prediction; on a mixture whose prediction is one of its
        sources the target is that source. Rows whose prediction is neither source (or that
        are not mixtures) keep the whole input as their target, which is what an unguided
        method sees. When the interpreter :attr:`~Interpreter.learns_targets`, each guided
        mixture is repeated once more to explain its other source's class.
        """
        labels, (source_a, source_b) = mixed.labels, mixed.sources.unbind(1)
        matches = labels == prediction[:, None]  # (B, 2); label -1 never matches
        guided = (labels[:, 1] >= 0) & matches.any(1)
        second = matches[:, 1] & guided  # the prediction is source b's class
        first = guided & ~second
        target = torch.where(
            second[:, None], source_b, torch.where(first[:, None], source_a, mixed.mixture)
        )
        rows = torch.arange(len(prediction), device=prediction.device)
        classes = prediction
        if self.interpreter.learns_targets:
            extra = guided.nonzero().squeeze(1)
            alternative = torch.where(second[:, None], source_a, source_b)[extra]
            rows = torch.cat([rows, extra])
            target = torch.cat([target, alternative])
            guided = torch.cat([guided, torch.ones_like(extra, dtype=torch.bool)])
            classes = torch.cat([classes, torch.where(second, labels[:, 0], labels[:, 1])[extra]])
        other = mixed.mixture[rows] - target
        extractor = self.classifier.feature_extractor
        return rows, Guidance(
            extractor(target).magnitude, extractor(other).magnitude, guided, classes
        )

    def validation_step(self, batch: Batch) -> dict[str, Tensor]:
        """Per-example faithfulness (AI, AD, AG, FF, fid_in, SPS, COMP) plus the loss terms."""
        features, classifier_out = self.inputs(batch[0])
        mask = self.explain(features, classifier_out)
        metrics = faithfulness_metrics(
            self.classifier,
            features,
            mask,
            self.interpreter.mask_domain,
            reference_compatible=self.reference_compatible,
            method=self.interpreter.registry_name,
            probabilities=classifier_out.probabilities,
        )
        if self.interpreter.capabilities.needs_training:
            terms = self.interpreter.loss(features, classifier_out, self.classifier)
            metrics |= {"loss": torch.stack(list(terms.values())).sum(), **terms}
        return metrics

    def end_epoch(self) -> dict[str, float]:
        """The interpreter's epoch statistics (PIQ: codebook usage, dead-code re-seeding)."""
        return self.interpreter.end_epoch()

    def explain(self, features: Features, classifier_out: ClassifierOutput) -> Tensor:
        """The interpreter's mask (B, T, F) for the predicted class (:func:`interpret`)."""
        return interpret(self.interpreter, features, classifier_out)

    def checkpoint(self) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]]:
        """Self-contained folder: ``classifier.*`` and ``interpreter.*`` tensors, both configs."""
        tensors, config, meta = classifier_checkpoint(self.classifier, self.classifier_config)
        tensors = {**tensors, **prefixed("interpreter", self.interpreter.state_dict())}
        interpreter_config = {"name": self.interpreter.registry_name}
        interpreter_config |= self.interpreter.config_dict()
        return tensors, {**config, "interpreter": interpreter_config}, meta
