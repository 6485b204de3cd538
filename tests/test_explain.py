"""The one "explain a batch" path: exact audio for binary masks, one classifier pass for
several targets, gradients only where a method differentiates, the modules left as found."""

from __future__ import annotations

import pytest
import torch
from test_separation import TwoBandClassifier, WeightBandInterpreter, make_mixtures
from torch import Tensor

from audiointerp.explain import class_summary, classify, explain, explain_targets, interpret
from audiointerp.features import Features
from audiointerp.interpreters.base import Capabilities, Interpreter
from audiointerp.interpreters.controls import OnesControl
from audiointerp.interpreters.registry import build_interpreter
from audiointerp.models.base import ClassifierOutput


class GradRecorder(Interpreter):
    """All-ones mask; records whether gradients were enabled and the classifier's mode."""

    def __init__(self, trainable: bool, classifier: TwoBandClassifier | None = None):
        super().__init__()
        self.capabilities = Capabilities(
            any_target=True, batched=True, needs_gradients=not trainable, needs_training=trainable
        )
        self.grad_enabled: list[bool] = []
        self.classifier_training: list[bool] = []
        object.__setattr__(self, "watched", classifier)  # not a submodule

    def forward(
        self, features: Features, classifier_out: ClassifierOutput, target: Tensor | None = None
    ) -> Tensor:
        self.grad_enabled.append(torch.is_grad_enabled())
        if self.watched is not None:
            self.classifier_training.append(self.watched.training)
        return torch.ones_like(features.magnitude)


class Failing(Interpreter):
    capabilities = Capabilities(
        any_target=True, batched=True, needs_gradients=True, needs_training=False
    )

    def forward(self, features, classifier_out, target=None) -> Tensor:
        raise RuntimeError("interpreter failed")


def _mixtures(count: int = 2) -> Tensor:
    return torch.stack([item["mixture"] for item in make_mixtures(count)])  # (B, N)


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_kept_and_removed_parts_sum_to_the_input_for_a_binary_mask() -> None:
    mixture = _mixtures(1)
    out = explain(TwoBandClassifier().eval(), WeightBandInterpreter(), mixture)
    assert out.waveform.shape == out.removed.shape == mixture.shape
    assert 0 < float(out.mask.mean()) < 1
    assert torch.allclose(out.waveform + out.removed, mixture, atol=1e-4)


def test_ones_mask_keeps_everything_and_removes_nothing() -> None:
    mixture = _mixtures(2)
    out = explain(TwoBandClassifier().eval(), OnesControl(), mixture)
    assert torch.allclose(out.waveform, mixture, atol=1e-4)
    assert float(out.removed.abs().max()) < 1e-6
    assert torch.equal(out.spectrogram, out.features.magnitude)


def test_result_fields_name_the_classes_and_the_grid() -> None:
    classifier = TwoBandClassifier().eval()
    mixture = _mixtures(2)  # a low and a high source each; the classifier decides per clip
    out = explain(classifier, WeightBandInterpreter(), mixture, target=torch.tensor([1, 0]))
    prediction = out.classifier_out.prediction.tolist()
    assert out.predicted_index == prediction
    assert out.predicted == [classifier.class_names[i] for i in prediction]
    assert out.target == ["high", "low"]
    probabilities = out.classifier_out.probabilities
    assert out.probability == pytest.approx([float(probabilities[r, i]) for r, i in
                                             enumerate(prediction)])  # fmt: skip
    assert [len(row) for row in out.top_k] == [2, 2]  # both classes, best first
    assert out.top_k[0][0] == (out.predicted[0], pytest.approx(out.probability[0]))
    assert (out.sample_rate, out.model_sample_rate) == (16000, 16000)
    assert out.hop_length == classifier.feature_config.hop_length


def test_class_summary_ranks_the_classes() -> None:
    summary = class_summary(["a", "b", "c"], torch.tensor([0.2, 0.5, 0.3]), top_k=2)
    assert summary["predicted"] == "b" and summary["predicted_index"] == 1
    assert summary["probability"] == pytest.approx(0.5)
    assert summary["top_k"] == [("b", pytest.approx(0.5)), ("c", pytest.approx(0.3))]


def test_several_targets_share_one_stft_and_one_classifier_pass() -> None:
    classifier = TwoBandClassifier().eval()
    stft_calls, classifier_calls = _count_calls(classifier.feature_extractor), [0]
    original = classifier.forward_features

    def counted(inputs: Tensor) -> ClassifierOutput:
        classifier_calls[0] += 1
        return original(inputs)

    classifier.forward_features = counted  # type: ignore[method-assign]
    mixture = _mixtures(2)
    targets = [torch.tensor([0, 0]), torch.tensor([1, 1]), None]
    low, high, predicted = explain_targets(classifier, WeightBandInterpreter(), mixture, targets)
    assert stft_calls == [1] and classifier_calls == [1]
    assert low.target == ["low", "low"] and high.target == ["high", "high"]
    assert predicted.target == predicted.predicted
    assert low.features is high.features and low.classifier_out is high.classifier_out
    assert torch.allclose(low.waveform + high.waveform, mixture, atol=1e-4)  # bands partition


def test_precomputed_features_and_output_are_used_as_they_are() -> None:
    classifier = TwoBandClassifier().eval()
    mixture = _mixtures(2)
    features, output = classify(classifier, mixture)
    classifier_calls = _count_calls(classifier)
    stft_calls = _count_calls(classifier.feature_extractor)
    given = explain(classifier, WeightBandInterpreter(), features, classifier_out=output)
    assert classifier_calls == [0] and stft_calls == [0]
    assert given.features is features and given.classifier_out is output
    computed = explain(classifier, WeightBandInterpreter(), mixture)
    assert torch.equal(given.mask, computed.mask)
    assert torch.equal(given.waveform, computed.waveform)
    assert torch.equal(given.removed, computed.removed)
    only_features = explain(classifier, WeightBandInterpreter(), features)
    assert classifier_calls == [2]  # the computed explanation's pass, then this one's
    assert torch.equal(only_features.waveform, computed.waveform)


@pytest.mark.parametrize("trainable", [True, False])
def test_gradients_only_for_methods_that_differentiate_the_classifier(trainable: bool) -> None:
    classifier = TwoBandClassifier().eval()
    recorder = GradRecorder(trainable)
    with torch.no_grad():  # an evaluation's context: gradient methods still get gradients
        explain(classifier, recorder, _mixtures(1))
        features, output = classify(classifier, _mixtures(1))
        mask = interpret(recorder, features, output)
    assert recorder.grad_enabled == [not trainable, not trainable]
    assert not mask.requires_grad


def test_a_gradient_method_leaves_the_classifier_as_it_found_it() -> None:
    classifier = TwoBandClassifier().train()  # as a caller might hold it: training, trainable
    before = {name: value.clone() for name, value in classifier.state_dict().items()}
    saliency = build_interpreter("saliency", {}, classifier)
    recorder = GradRecorder(trainable=False, classifier=classifier)
    mixture = _mixtures(2)
    out = explain(classifier, saliency, mixture)
    explain(classifier, recorder, mixture)
    assert recorder.classifier_training == [False]  # explained in eval mode
    assert float(out.mask.max()) == 1.0
    assert classifier.training and all(m.training for m in classifier.modules())
    assert all(p.requires_grad and p.grad is None for p in classifier.parameters())
    after = classifier.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    with pytest.raises(RuntimeError, match="interpreter failed"):
        explain(classifier, Failing(), mixture)
    assert classifier.training and all(p.requires_grad for p in classifier.parameters())
