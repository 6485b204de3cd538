"""Which methods an evaluation compares: the config, the ``Method`` record, methods on a classifier.

A method is one (classifier, interpreter) pair. Model folders give theirs (see
:func:`audiointerp.evaluation.run.load_methods`); :func:`build_methods` adds interpreters
with nothing to train (gradient baselines, the ``random`` and ``ones`` bounds) on a
folder's classifier.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from audiointerp import interpreters  # noqa: F401  (registers every method)
from audiointerp.checkpoints import checkpoint_folder
from audiointerp.config import ConfigError
from audiointerp.interpreters.base import Interpreter
from audiointerp.interpreters.registry import INTERPRETERS, build_interpreter
from audiointerp.metrics.sanity import MIN_REPRODUCIBILITY, MIN_SENSITIVITY, SanityCutoffs
from audiointerp.models import Classifier
from audiointerp.models.fast import fast_copy

BOUND_METHODS = ("random", "ones")  # floor and "the whole input": shown as bounds
CONTROL_METHODS = ("energy", *BOUND_METHODS)  # interpreters that explain nothing


@dataclass
class EvalConfig:
    """How much to evaluate; defaults keep a narrow model's evaluation to about a minute.

    Attributes:
        test_folds: folds of the data folder whose clips are explained.
        max_clips: cap on test clips (None: all).
        n_mixtures: mixtures created when no mixture folder is given.
        max_mixtures: cap on mixtures used (None: all).
        sanity_clips: clips whose masks the sanity check compares (and mixtures whose
            SI-SNRi it re-measures), so slow methods stay bounded.
        sanity_min_reproducibility, sanity_min_sensitivity: the check's cut-offs (a
            method passes iff mean R >= the first and D's 95 % interval lies above the
            second; :mod:`audiointerp.metrics.sanity`).
        n_examples: examples per method (clips and mixtures each) saved for the report.
        batch_size: clips per forward pass.
        seed: mixture drawing and weight re-initialisation.
        methods: registered interpreters with nothing to train (see
            :func:`classifier_methods`) built on the first folder's classifier.
    """

    test_folds: tuple[int, ...] = (5,)
    max_clips: int | None = None
    n_mixtures: int = 16
    max_mixtures: int | None = None
    sanity_clips: int = 8
    sanity_min_reproducibility: float = MIN_REPRODUCIBILITY
    sanity_min_sensitivity: float = MIN_SENSITIVITY
    n_examples: int = 2
    batch_size: int = 8
    seed: int = 0
    methods: tuple[str, ...] = BOUND_METHODS

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        known = classifier_methods()
        unknown = [name for name in self.methods if name not in known]
        if unknown:
            raise ConfigError(
                f"eval methods: unknown {', '.join(map(repr, unknown))}; methods built on a "
                f"classifier: {', '.join(known)} (trained interpreters come from model folders)"
            )

    @property
    def sanity_cutoffs(self) -> SanityCutoffs:
        return SanityCutoffs(self.sanity_min_reproducibility, self.sanity_min_sensitivity)


@dataclass(frozen=True)
class SanityRuns:
    """A trained explainer trained again for the sanity check (its model folders).

    Attributes:
        second: on the same classifier f with another seed (E'_f).
        randomized: on the randomised classifier f~ (E_f~), which its folder holds.
        tier: where and at which budget they were trained, printed with the verdict
            (e.g. "demo tier, 6 epochs a run").
    """

    second: Path
    randomized: Path
    tier: str


def classifier_methods() -> list[str]:
    """Registered interpreters that need no training, so any classifier can host them."""
    return sorted(name for name, cls in INTERPRETERS.items() if not cls.capabilities.needs_training)


@dataclass
class Method:
    """One evaluated (classifier, interpreter) pair and how its inputs are prepared."""

    name: str  # e.g. "piq_conv2d", "energy_conv2d"
    classifier: Classifier
    interpreter: Interpreter
    model_dir: Path
    clip_seconds: float
    normalization: str
    classifier_name: str  # e.g. "conv2d"


def default_output_folder(model_dir: str | os.PathLike) -> Path:
    """A model's run folder: the parent of its checkpoint folder (``run/model`` -> ``run``)."""
    return checkpoint_folder(model_dir).parent


def build_methods(host: Method, names: Sequence[str]) -> list[Method]:
    """Interpreters ``names`` built on ``host``'s classifier, named ``<name>_<classifier>``."""
    return [
        Method(
            f"{name}_{host.classifier_name}",
            host.classifier,
            build_interpreter(name, {}, host.classifier),
            host.model_dir,
            host.clip_seconds,
            host.normalization,
            host.classifier_name,
        )
        for name in names
    ]


def classifier_id(classifier: Classifier) -> str:
    """First 8 hex digits of a SHA-256 over the classifier's tensors (names, shapes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(classifier.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:8]


def inference_parts(method: Method) -> tuple[Classifier, Interpreter]:
    """The method's classifier and interpreter for passes without gradients:
    :func:`~audiointerp.models.fast.fast_copy` copies (the same math, faster), or the
    originals for methods that differentiate the classifier and for a user's classifier
    (``fast_copyable`` False)."""
    if method.interpreter.capabilities.needs_gradients or not method.classifier.fast_copyable:
        return method.classifier, method.interpreter
    return fast_copy(method.classifier), fast_copy(method.interpreter)  # type: ignore[return-value]
