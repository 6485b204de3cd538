"""Sanity checks that treat every method as a procedure applied to a model.

Model randomisation (Adebayo et al. 2018, arXiv 1810.03292): an explanation must depend
on the classifier it explains. Let f be the classifier and f~ a copy with every layer
re-initialised (:func:`randomize_weights`). A method E is a procedure: a gradient map is
computed on f~ as on f; a trained explainer (PIQ, L2I, L-MAC) is *trained again* on f~
with the same recipe and budget, and once more on f with another seed (E'). Per clip i,
with s the Spearman rank correlation of the flattened masks (:func:`spearman`):

* reproducibility R_i = s(E_f(x_i), E'_f(x_i)): 1 for a deterministic method;
* cross-model C_i = s(E_f(x_i), E_f~(x_i));
* sensitivity D_i = R_i - C_i, with a 95 % bootstrap interval over clips.

A method passes if mean R >= ``min_reproducibility`` and D's interval lies above
``min_sensitivity`` (0.5 and 0.3: our cut-offs, :class:`SanityCutoffs`): its masks are
reproducible, and a model that learned nothing gives clearly different ones. A
classifier-blind method (the energy control, the all-ones mask) fails with D = 0; a fresh
random mask fails with R ~ 0; a mask that collapses to a constant (e.g. empty) on f~ for
most clips is no evidence of anything and fails too. Without verdict we also report the
old check's number (the trained decoder reused unchanged on f~, which mixes the decoder's
reaction to features it never saw with model dependence), the eMPRT ratio (mask entropy
on f~ over that on f; Hedstroem et al. 2023, arXiv 2303.08711: above 1 when the
randomised model's explanation is noisier) and the change of the mean mask value.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from audiointerp.explain import explain
from audiointerp.interpreters.base import Interpreter
from audiointerp.metrics.separation import evaluate_mixtures
from audiointerp.metrics.uncertainty import CONFIDENCE, bootstrap_interval
from audiointerp.models.base import Classifier

MIN_REPRODUCIBILITY = 0.5  # our cut-offs (see the module notes); configurable
MIN_SENSITIVITY = 0.3
CONSTANT_SPAN = 1e-6  # a mask whose values span less than this is constant


@dataclass(frozen=True)
class SanityCutoffs:
    """A method passes iff mean R >= ``min_reproducibility`` and the lower end of D's
    ``confidence`` bootstrap interval is above ``min_sensitivity``."""

    min_reproducibility: float = MIN_REPRODUCIBILITY
    min_sensitivity: float = MIN_SENSITIVITY
    confidence: float = CONFIDENCE


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


Explainer = tuple[Classifier, Interpreter]  # a method applied to a model


def reseeded(interpreter: Interpreter, offset: int = 1) -> Interpreter:
    """The same method with its ``seed`` moved by ``offset`` (the random control), or the
    interpreter itself when it has no seed (a deterministic method: R = 1)."""
    config = interpreter.config_dict()
    if "seed" not in config:
        return interpreter
    classifier = getattr(interpreter, "classifier", None)
    rebuilt = type(interpreter).from_config({**config, "seed": config["seed"] + offset}, classifier)
    rebuilt.load_state_dict(interpreter.state_dict())
    return rebuilt.eval()


def mask_entropy(mask: Tensor) -> Tensor:
    """Shannon entropy (nats) of each mask normalised to sum 1, (B, ...) -> (B,); NaN for
    an all-zero mask (no distribution to measure)."""
    flat = mask.detach().flatten(1).double().clamp_min(0.0)
    total = flat.sum(dim=1, keepdim=True)
    p = flat / total
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(dim=1)
    return torch.where(total.squeeze(1) > 0, entropy, torch.full_like(entropy, math.nan)).float()


def sanity_verdict(
    reproducibility: np.ndarray,
    cross_model: np.ndarray,
    collapsed: float,
    cutoffs: SanityCutoffs,
    seed: int = 0,
) -> dict[str, Any]:
    """The verdict and its reason from per-clip R and C and the fraction of clips whose
    mask varies on f but is constant on f~ (see the module notes)."""
    r = float(reproducibility.mean())
    d, (low, high) = _sensitivity(reproducibility, cross_model, cutoffs, seed)
    passed = False
    if r < cutoffs.min_reproducibility:
        reason = f"not reproducible (mean R < {cutoffs.min_reproducibility})"
    elif collapsed > 0.5:
        reason = f"its mask on f~ is constant for {collapsed:.0%} of clips"
    elif high < cutoffs.min_sensitivity and low <= 0.0:
        reason = "blind to the model (D ~ 0)"
    elif low <= cutoffs.min_sensitivity:
        reason = f"too little model dependence (D's interval not above {cutoffs.min_sensitivity})"
    else:
        passed, reason = True, "reproducible and model-dependent"
    return {
        "passed": passed,
        "reason": f"{reason}: R {r:.2f}, D {d:.2f} [{low:.2f}, {high:.2f}]",
        "reproducibility": r,
        "cross_model": float(cross_model.mean()),
        "sensitivity": d,
        "sensitivity_interval": [low, high],
    }


def _sensitivity(
    reproducibility: np.ndarray, cross_model: np.ndarray, cutoffs: SanityCutoffs, seed: int
) -> tuple[float, tuple[float, float]]:
    """Mean D = R - C over the examples and its bootstrap interval."""
    sensitivity = reproducibility - cross_model
    interval = bootstrap_interval(sensitivity, cutoffs.confidence, seed=seed)
    return float(sensitivity.mean()), interval


def _agreement(masks: dict[str, Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Per example, from :func:`_masks`: R (f's masks against those of the run with the
    other seed) and C (against those on f~)."""
    r = spearman(masks["f"], masks["second"]).double().numpy()
    return r, spearman(masks["f"], masks["randomized"]).double().numpy()


def _masks(
    classifier: Classifier,
    interpreter: Interpreter,
    pairs: dict[str, Explainer | None],
    waveforms: Tensor,
    batch_size: int,
) -> tuple[dict[str, Tensor], Tensor]:
    """The masks of ``waveforms`` under the method on f (``"f"``) and under each given
    pair of ``pairs``, and the first waveform's magnitude; a pair equal to the method
    itself (a deterministic method's E'_f) reuses its masks."""
    masks: dict[str, list[Tensor]] = {"f": [], **{key: [] for key in pairs}}
    for start in range(0, len(waveforms), batch_size):
        original = explain(classifier, interpreter, waveforms[start : start + batch_size])
        features = original.features  # every copy shares the STFT (one feature config)
        masks["f"].append(original.mask)
        if start == 0:
            magnitude = features.magnitude[0]
        done = {(classifier, interpreter): original.mask}
        for key, pair in pairs.items():
            if pair is not None:
                if pair not in done:
                    done[pair] = explain(*pair, features).mask
                masks[key].append(done[pair])
    stacked = {key: torch.cat(values) for key, values in masks.items() if values}
    return stacked, magnitude


def sanity_check(
    classifier: Classifier,
    interpreter: Interpreter,
    waveforms: Tensor,
    second: Explainer | None = None,
    randomized: Explainer | None = None,
    mixtures: Sequence[dict] | None = None,
    cutoffs: SanityCutoffs | None = None,
    seed: int = 0,
    batch_size: int = 4,
    si_snri_before: float | None = None,
    random_classifier: Classifier | None = None,
) -> dict[str, Any]:
    """R, C and D of one method on ``waveforms`` (B, N), the verdict and the diagnostics.

    Args:
        classifier, interpreter: the method on the explained classifier f (untouched).
        second: the method again with another seed, E'_f; default: :func:`reseeded`. A
            trained explainer has no default (it must be trained again).
        randomized: the method on f~, E_f~; default: f~ = ``randomize_weights(classifier,
            seed)`` with the interpreter bound to it (:func:`bind_interpreter`). A trained
            explainer has no default (it must be trained again on f~).
        mixtures: optional mixture items: the SI-SNRi of E_f~ (or of the reused decoder),
            and R and D on the mixtures (diagnostics: a separating explainer's model
            dependence shows on mixtures more than on clean clips).
        si_snri_before: the method's mixture SI-SNRi if already computed (saves a pass).
        random_classifier: f~ if already made (``randomize_weights(classifier, seed)``;
            methods on one classifier share it).

    Returns:
        ``passed`` (None when a trained explainer came without its runs: not checked),
        ``reason``, ``reproducibility``, ``cross_model``, ``sensitivity`` (means),
        ``sensitivity_interval``, per-clip ``R`` and ``C``; the diagnostics
        ``reused_correlation``, ``empirt_ratio``, ``mask_mean_change``; with mixtures
        ``si_snri``, ``si_snri_randomized``, ``si_snri_drop``, ``mixtures_reproducibility``,
        ``mixtures_sensitivity``, ``mixtures_sensitivity_interval``; and ``masks`` (the first
        clip's spectrogram and its masks under f, f with the other seed and f~).
    """
    cutoffs = cutoffs or SanityCutoffs()
    trained = interpreter.capabilities.needs_training
    if second is None and not trained:
        second = (classifier, reseeded(interpreter))
    if random_classifier is None:
        random_classifier = randomize_weights(classifier, seed)
    reused = (random_classifier, bind_interpreter(interpreter, classifier, random_classifier))
    if randomized is None and not trained:
        randomized = reused
    pairs = {"reused": reused, "second": second, "randomized": randomized}
    stacked, magnitude = _masks(classifier, interpreter, pairs, waveforms, batch_size)
    result: dict[str, Any] = {
        "reused_correlation": float(spearman(stacked["f"], stacked["reused"]).mean()),
        "masks": {
            "magnitude": magnitude,
            **{key: value[0] for key, value in stacked.items()},
        },
    }
    if second is None or randomized is None:
        result.update(
            passed=None,
            reason="not checked: a trained explainer must be trained again on f~ and with "
            "another seed (audiointerp sanity, or the demo's sanity tier)",
        )
    else:
        r, c = _agreement(stacked)
        constant = {
            key: (flat.amax(1) - flat.amin(1)) < CONSTANT_SPAN
            for key, flat in ((k, stacked[k].flatten(1)) for k in ("f", "randomized"))
        }  # a mask that varies on f but is constant on f~ has collapsed
        collapsed = float((constant["randomized"] & ~constant["f"]).float().mean())
        entropy = (
            mask_entropy(stacked["randomized"]).nanmean() / mask_entropy(stacked["f"]).nanmean()
        )
        result |= sanity_verdict(r, c, collapsed, cutoffs, seed)
        result |= {
            "R": r.tolist(),
            "C": c.tolist(),
            "empirt_ratio": float(entropy),
            "mask_mean_change": float(stacked["randomized"].mean() - stacked["f"].mean()),
        }
    if mixtures and second is not None and randomized is not None:
        mixed = torch.stack([torch.as_tensor(item["mixture"]) for item in mixtures])
        runs = {"second": second, "randomized": randomized}
        on_mixtures, _ = _masks(classifier, interpreter, runs, mixed, batch_size)
        r, c = _agreement(on_mixtures)
        d, interval = _sensitivity(r, c, cutoffs, seed)
        result |= {
            "mixtures_reproducibility": float(r.mean()),
            "mixtures_sensitivity": d,
            "mixtures_sensitivity_interval": list(interval),
        }
    if mixtures:
        before = si_snri_before
        if before is None:
            before = evaluate_mixtures(classifier, interpreter, mixtures, batch_size).summary()[
                "si_snri"
            ]
        pair = randomized if randomized is not None else reused
        after = evaluate_mixtures(*pair, mixtures, batch_size).summary()["si_snri"]
        result.update(si_snri=before, si_snri_randomized=after, si_snri_drop=before - after)
    return result
