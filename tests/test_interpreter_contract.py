"""The interpreter contract, one table over the registry: registering a
method is enough to have every check run on it.

Each variant (every name the package registers, plus a class-conditional L-MAC) is
built untrained on a tiny conv2d classifier and explains three 0.5-s clips (32 x 129
spectrograms).
What the checks mean:

* mask: (B, T, F) like the magnitude, finite, in [0, 1];
* batched (``capabilities.batched``): row b of a batch's mask equals the mask of clip b
  alone, to 2e-4 (float noise: convolutions may sum in another order for another B, and
  occlusion and gradients take differences of nearly equal logits);
* target: the prediction given as ``target`` is always accepted and gives the default
  mask exactly. Another class is either refused with ``UnsupportedTargetError`` (one
  line), when ``capabilities.any_target`` is False, or honoured: a batch of mixed
  targets gives, row by row, each clip's mask for its own target computed alone, and,
  unless the method is a classifier-blind control, each clip has some other class whose
  mask differs from its prediction's (zero-initialised parameters, such as L-MAC's
  identity class conditioning, are first set at random, as training would);
* checkpoint: saved with the training task's checkpoint code and loaded by
  ``Explainer.from_pretrained``, it gives identical masks;
* deterministic: two eval-mode calls give identical masks;
* side effects: the frozen classifier keeps ``requires_grad`` False, gets no ``.grad``,
  stays in eval mode and holds no hooks, after explaining and (for methods that need
  training) after a backward pass of the loss, which reaches the interpreter's own
  parameters; methods that need no training have none.

The negative tests register broken toys and show that the checks catch them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from audiointerp.checkpoints import save_checkpoint
from audiointerp.errors import UnsupportedTargetError
from audiointerp.features import FeatureConfig, Features
from audiointerp.interpreters.base import Capabilities, Interpreter, resolve_target
from audiointerp.interpreters.controls import Control
from audiointerp.interpreters.registry import INTERPRETERS, build_interpreter, register
from audiointerp.models import ClassifierConfig, build_classifier
from audiointerp.models.base import Classifier, ClassifierOutput
from audiointerp.pipeline import Explainer
from audiointerp.training.tasks import InterpreterTask

CLASSES = ["dog", "rain", "siren"]
FEATURES = FeatureConfig(sample_rate=8000, n_fft=256, hop_ms=16.0, win_ms=32.0)  # F = 129
CLASSIFIER = ClassifierConfig(name="conv2d", dim=4, lin_neurons=8, features=FEATURES)
TINY: dict[str, dict[str, Any]] = {  # small settings; any other method runs at its defaults
    "l2i": {"width": 8, "n_components": 6, "n_frames": 32},
    "lmac": {"width": 1 / 16},
    "piq": {"n_keys": 12},
    "integrated_gradients": {"n_steps": 4},
    "occlusion": {"window_frames": 8, "window_bins": 16, "stride_frames": 8, "stride_bins": 16},
}


def library_interpreters() -> set[str]:
    """Names the package registers (test modules may register toys of their own)."""
    return {name for name, cls in INTERPRETERS.items() if cls.__module__.startswith("audiointerp.")}


VARIANTS = [(name, {}) for name in sorted(library_interpreters())]
VARIANTS += [("lmac", {"class_conditional": True})]
IDS = [name + ("-conditional" if extra else "") for name, extra in VARIANTS]
BATCH_TOLERANCE = {"atol": 2e-4, "rtol": 0.0}  # float noise in a mask in [0, 1]


@dataclass
class Setup:
    """A frozen classifier, an interpreter in eval mode, and three clips' inputs."""

    classifier: Classifier
    interpreter: Interpreter
    features: Features
    out: ClassifierOutput

    def explain(self, target: Tensor | None = None, rows: slice = slice(None)) -> Tensor:
        """The mask of clips ``rows`` for ``target``, with gradients as callers enable them."""
        features, out = self.features[rows], self.out[rows]
        with torch.set_grad_enabled(self.interpreter.capabilities.needs_gradients):
            return self.interpreter(features, out, target).detach()

    @property
    def prediction(self) -> Tensor:
        return self.out.prediction


def build(name: str, extra: dict[str, Any]) -> Setup:
    torch.manual_seed(0)
    classifier = build_classifier(CLASSIFIER, CLASSES).eval().requires_grad_(False)
    interpreter = build_interpreter(name, {**TINY.get(name, {}), **extra}, classifier).eval()
    with torch.no_grad():  # what training would do to identity-initialised parameters
        for parameter in interpreter.parameters():
            if parameter.requires_grad and not parameter.any():
                parameter.normal_(0.0, 0.5)
    time = torch.arange(4000) / 8000
    tones = torch.stack([torch.sin(2 * torch.pi * f * time) for f in (300.0, 1200.0, 2500.0)])
    waveform = 0.3 * tones + 0.05 * torch.randn(3, 4000, generator=torch.Generator().manual_seed(1))
    features = classifier.feature_extractor(waveform)
    with torch.no_grad():
        out = classifier(features.magnitude)
    return Setup(classifier, interpreter, features, out)


# --- the checks, one function each so the negative tests can run them on broken toys ----


def check_mask(setup: Setup) -> None:
    mask = setup.explain()
    assert mask.dtype == setup.features.magnitude.dtype
    check_mask_values(mask, setup)


def check_mask_values(mask: Tensor, setup: Setup) -> None:
    assert mask.shape == setup.features.magnitude.shape and bool(torch.isfinite(mask).all())
    assert 0.0 <= float(mask.min()) and float(mask.max()) <= 1.0


def check_batched(setup: Setup) -> None:
    if not setup.interpreter.capabilities.batched:
        return
    mask = setup.explain()
    for row in range(len(mask)):
        alone = setup.explain(rows=slice(row, row + 1))
        torch.testing.assert_close(alone[0], mask[row], **BATCH_TOLERANCE)


def check_target(setup: Setup) -> None:
    prediction, n_classes = setup.prediction, setup.classifier.n_classes
    assert torch.equal(setup.explain(prediction), setup.explain())
    other = (prediction + 1) % n_classes
    if not setup.interpreter.capabilities.any_target:
        with pytest.raises(UnsupportedTargetError) as refusal:
            setup.explain(other)
        assert str(refusal.value) and "\n" not in str(refusal.value)
        return
    mixed = torch.where(torch.arange(len(prediction)) % 2 == 0, other, prediction)
    mask = setup.explain(mixed)
    check_mask_values(mask, setup)
    for row in range(len(mask)):
        alone = setup.explain(mixed[row : row + 1], rows=slice(row, row + 1))
        torch.testing.assert_close(alone[0], mask[row], **BATCH_TOLERANCE)
    if isinstance(setup.interpreter, Control):
        return  # classifier-blind by design: the same mask for every class
    predicted_mask = setup.explain()
    others = [setup.explain((prediction + shift) % n_classes) for shift in range(1, n_classes)]
    for row in range(len(prediction)):
        differences = [float((o[row] - predicted_mask[row]).abs().max()) for o in others]
        assert max(differences) > 1e-4, f"row {row}: the same mask for every class"


def check_round_trip(setup: Setup, folder: Path) -> None:
    task = InterpreterTask(setup.interpreter, setup.classifier, CLASSIFIER)
    tensors, config, meta = task.checkpoint()
    save_checkpoint(folder, tensors, config, {**meta, "duration_s": 0.5})
    loaded = Explainer.from_pretrained(folder, fast=False)  # the stock layers: bit-equal
    assert loaded.interpreter.config_dict() == setup.interpreter.config_dict()
    with torch.no_grad():
        out = loaded.classifier(setup.features.magnitude)
    reloaded = Setup(loaded.classifier, loaded.interpreter, setup.features, out)
    assert torch.equal(reloaded.explain(), setup.explain())


def check_deterministic(setup: Setup) -> None:
    assert torch.equal(setup.explain(), setup.explain())


def _hooks(module: torch.nn.Module) -> int:
    hook_dicts = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks")
    hook_dicts += ("_backward_pre_hooks",)
    return sum(len(getattr(m, d)) for m in module.modules() for d in hook_dicts)


def check_no_side_effects(setup: Setup) -> None:
    classifier, interpreter = setup.classifier, setup.interpreter
    assert _hooks(classifier) == 0
    setup.explain()
    if interpreter.capabilities.any_target:
        setup.explain((setup.prediction + 1) % classifier.n_classes)
    own = [p for p in interpreter.parameters() if p.requires_grad]
    assert not {id(p) for p in own} & {id(p) for p in classifier.parameters()}
    if interpreter.capabilities.needs_training:
        interpreter.train()
        terms = interpreter.loss(setup.features, setup.out, classifier)
        torch.stack(
            [value for key, value in terms.items() if key.startswith("loss/")]
        ).sum().backward()
        interpreter.eval()
        assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in own)
    else:
        assert not own, "a method that needs no training has parameters to train"
    assert all(not p.requires_grad and p.grad is None for p in classifier.parameters())
    assert not any(module.training for module in classifier.modules())
    assert _hooks(classifier) == 0


@pytest.fixture(params=VARIANTS, ids=IDS)
def setup(request: pytest.FixtureRequest) -> Setup:
    return build(*request.param)


def test_every_registered_interpreter_is_covered() -> None:
    assert {name for name, _ in VARIANTS} == library_interpreters()


def test_mask_shape_and_range(setup: Setup) -> None:
    check_mask(setup)


def test_batch_equals_one_by_one(setup: Setup) -> None:
    check_batched(setup)


def test_target_honoured_or_refused(setup: Setup) -> None:
    check_target(setup)


def test_save_load_round_trip(setup: Setup, tmp_path: Path) -> None:
    check_round_trip(setup, tmp_path / "model")


def test_deterministic_in_eval_mode(setup: Setup) -> None:
    check_deterministic(setup)


def test_no_side_effects_on_the_classifier(setup: Setup) -> None:
    check_no_side_effects(setup)


def test_capabilities_follow_the_config() -> None:
    plain = build("lmac", {}).interpreter
    conditional = build("lmac", {"class_conditional": True}).interpreter
    assert not plain.capabilities.any_target and conditional.capabilities.any_target
    assert INTERPRETERS["lmac"].capabilities == plain.capabilities  # the class: the default
    assert conditional.capabilities.needs_training and not conditional.capabilities.needs_gradients


# --- broken toys: the contract must catch each ------------------------------------------


class _Toy(Interpreter):
    """Keeps the loud bins of the target's share of frequencies; broken by subclasses."""

    capabilities = Capabilities(
        any_target=True, batched=True, needs_gradients=False, needs_training=False
    )

    @classmethod
    def from_config(cls, config: dict[str, Any], classifier: Classifier) -> Interpreter:
        return cls()

    def config_dict(self) -> dict[str, Any]:
        return {}

    def band(self, features: Features, target: Tensor) -> Tensor:
        bins = features.magnitude.shape[-1]
        owner = torch.arange(bins) * len(CLASSES) // bins  # (F,) class owning each bin
        return (owner[None, None, :] == target[:, None, None]).to(features.magnitude.dtype)

    def forward(
        self, features: Features, classifier_out: ClassifierOutput, target: Tensor | None = None
    ) -> Tensor:
        target = resolve_target(classifier_out, target)
        return self.band(features, target).expand_as(features.magnitude).contiguous()


class IgnoresTarget(_Toy):
    """Claims any target but explains the prediction (the old unconditioned L-MAC)."""

    def forward(self, features, classifier_out, target=None):
        return super().forward(features, classifier_out, None)


class NormalisesOverTheBatch(_Toy):
    """Scales by the batch's peak, so a clip's mask depends on its batch-mates."""

    def forward(self, features, classifier_out, target=None):
        mask = super().forward(features, classifier_out, target) * features.magnitude
        return mask / mask.amax()


class LeavesAHook(_Toy):
    """Hooks the classifier while explaining and never removes the hook."""

    def __init__(self, classifier: Classifier):
        super().__init__()
        object.__setattr__(self, "classifier", classifier)  # not a submodule

    @classmethod
    def from_config(cls, config: dict[str, Any], classifier: Classifier) -> Interpreter:
        return cls(classifier)

    def forward(self, features, classifier_out, target=None):
        self.classifier.register_forward_hook(lambda *args: None)
        return super().forward(features, classifier_out, target)


class PredictionOnly(_Toy):
    """Explains only the prediction and says so: refuses other targets (a valid method)."""

    capabilities = Capabilities(
        any_target=False, batched=True, needs_gradients=False, needs_training=False
    )

    def forward(self, features, classifier_out, target=None):
        self.check_target(target, classifier_out.prediction)
        return super().forward(features, classifier_out, target)


class ExplainsWhatItRefuses(PredictionOnly):
    """Declares no ``any_target`` but never refuses."""

    def forward(self, features, classifier_out, target=None):
        return _Toy.forward(self, features, classifier_out, target)


class OutOfRange(_Toy):
    """Returns the magnitude itself, not a mask in [0, 1]."""

    def forward(self, features, classifier_out, target=None):
        return features.magnitude * 10


@pytest.fixture()
def broken(request: pytest.FixtureRequest) -> Iterator[Setup]:
    name = f"test-contract-{request.param.__name__}"
    register(name)(request.param)
    try:
        yield build(name, {})
    finally:
        INTERPRETERS.pop(name)


@pytest.mark.parametrize(
    ("broken", "check"),
    [
        (IgnoresTarget, check_target),
        (NormalisesOverTheBatch, check_batched),
        (LeavesAHook, check_no_side_effects),
        (OutOfRange, check_mask),
        (ExplainsWhatItRefuses, check_target),
    ],
    indirect=["broken"],
    ids=["ignores-target", "batch-dependent", "leaves-a-hook", "out-of-range", "no-refusal"],
)
def test_the_contract_catches_a_broken_interpreter(broken: Setup, check) -> None:
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        check(broken)


@pytest.mark.parametrize("toy", [_Toy, PredictionOnly], ids=["any-target", "prediction-only"])
def test_working_toys_pass_every_check(toy: type[Interpreter], tmp_path: Path) -> None:
    register("test-contract-toy")(toy)
    try:
        setup = build("test-contract-toy", {})
        for check in (check_mask, check_batched, check_target, check_deterministic):
            check(setup)
        check_no_side_effects(setup)
        check_round_trip(setup, tmp_path / "model")
    finally:
        INTERPRETERS.pop("test-contract-toy")


def test_the_default_refusal_names_both_classes() -> None:
    register("test-contract-toy")(PredictionOnly)
    try:
        setup = build("test-contract-toy", {})
        other = (setup.prediction + 1) % len(CLASSES)
        with pytest.raises(UnsupportedTargetError) as refusal:
            setup.explain(other)
    finally:
        INTERPRETERS.pop("test-contract-toy")
    predicted, requested = int(setup.prediction[0]), int(other[0])
    assert str(refusal.value) == (
        f"test-contract-toy explains only the predicted class ({predicted}), "
        f"so it cannot explain class {requested}"
    )
