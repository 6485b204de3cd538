"""Model-randomisation sanity check (Adebayo et al. 2018, arXiv 1810.03292).

An explanation of a classifier must change when the classifier's weights are replaced by
random ones. We re-initialise every layer of a deep copy (the original is untouched),
recompute the masks, and measure the Spearman rank correlation between the original and
the randomised masks, per example. ``sanity_passed`` means the mean correlation is below
``threshold`` (0.5 by default: at 0.5 or above, the explanation's ordering of the bins
largely survives the loss of everything the classifier learned). A method that ignores the
classifier (the ``energy`` control) keeps correlation 1 and is flagged.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from audiointerp.explain import explain
from audiointerp.interpreters.base import Interpreter
from audiointerp.metrics.separation import evaluate_mixtures
from audiointerp.models.base import Classifier

SANITY_THRESHOLD = 0.5


def randomize_weights(classifier: Classifier, seed: int = 0) -> Classifier:
    """A deep copy of ``classifier`` with every layer re-initialised (cascading, all layers).

    Uses each module's own ``reset_parameters`` (normalisation layers also reset their
    running statistics); TorchScript layers (a user's classifier) have none, so their
    parameters are redrawn from a normal distribution of each tensor's own std. The global
    RNG state is left as it was.
    """
    randomized = copy.deepcopy(classifier)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in randomized.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
            elif isinstance(module, torch.jit.ScriptModule):
                for parameter in module.parameters(recurse=False):
                    spread = float(parameter.std()) if parameter.numel() > 1 else 1.0
                    parameter.data.normal_(0.0, spread)
    return randomized.eval()


def bind_interpreter(
    interpreter: Interpreter, original: Classifier, randomized: Classifier
) -> Interpreter:
    """``interpreter`` as it explains ``randomized``.

    Most methods read the classifier only through its output and are returned as they are;
    methods that keep their classifier (gradient baselines) are rebuilt around
    ``randomized`` with the same config and weights.
    """
    if getattr(interpreter, "classifier", None) is not original:
        return interpreter
    rebuilt = type(interpreter).from_config(interpreter.config_dict(), randomized)
    rebuilt.load_state_dict(interpreter.state_dict())
    return rebuilt.eval()


def spearman(first: Tensor, second: Tensor) -> Tensor:
    """Spearman rank correlation per example (average ranks for ties), (B, ...) -> (B,).

    Identical masks give 1 even when constant; a constant mask against a varying one gives 0.
    """
    a = first.detach().flatten(1).double().cpu().numpy()
    b = second.detach().flatten(1).double().cpu().numpy()
    values = []
    for x, y in zip(a, b, strict=True):
        if np.array_equal(x, y):
            values.append(1.0)
            continue
        rank_x, rank_y = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
        norm = math.sqrt(float(rank_x @ rank_x) * float(rank_y @ rank_y))
        values.append(float(rank_x @ rank_y) / norm if norm > 0 else 0.0)
    return torch.tensor(values, dtype=torch.float32)


def sanity_check(
    classifier: Classifier,
    interpreter: Interpreter,
    waveforms: Tensor,
    mixtures: Sequence[dict] | None = None,
    threshold: float = SANITY_THRESHOLD,
    seed: int = 0,
    batch_size: int = 4,
    si_snri_before: float | None = None,
) -> dict[str, Any]:
    """Compare masks (and mixture SI-SNRi) of the classifier and of a randomised copy.

    Args:
        classifier: the explained classifier (left untouched: a copy is randomised).
        interpreter: its interpreter.
        waveforms: (B, N) clips whose masks (for the predicted class) are compared.
        mixtures: optional mixture items; adds SI-SNRi before/after and the drop.
        threshold: ``sanity_passed`` iff the mean rank correlation is below it.
        si_snri_before: the explainer's mixture SI-SNRi if already computed (saves a pass).

    Returns:
        {"rank_correlation", "sanity_passed", "threshold"} and, with mixtures,
        {"si_snri", "si_snri_randomized", "si_snri_drop"}.
    """
    random_classifier = randomize_weights(classifier, seed)
    random_interpreter = bind_interpreter(interpreter, classifier, random_classifier)
    correlations = []
    for start in range(0, len(waveforms), batch_size):
        batch = waveforms[start : start + batch_size]
        original = explain(classifier, interpreter, batch)
        # the copy's feature extractor is the original's: share the STFT
        randomized = explain(random_classifier, random_interpreter, original.features)
        correlations.append(spearman(original.mask, randomized.mask))
    correlation = float(torch.cat(correlations).mean())
    result: dict[str, Any] = {
        "rank_correlation": correlation,
        "sanity_passed": correlation < threshold,
        "threshold": threshold,
    }
    if mixtures:
        before = si_snri_before
        if before is None:
            scores = evaluate_mixtures(classifier, interpreter, mixtures, batch_size)
            before = scores.summary()["si_snri"]
        scores = evaluate_mixtures(random_classifier, random_interpreter, mixtures, batch_size)
        after = scores.summary()["si_snri"]
        result.update(si_snri=before, si_snri_randomized=after, si_snri_drop=before - after)
    return result
