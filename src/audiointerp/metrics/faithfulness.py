"""Faithfulness of a mask to the classifier: AI, AD, AG, FF, Fid-In, SPS, COMP.

With p = softmax(classifier(X)), c the explained class (the prediction by default),
p_in = softmax(classifier(mask-in)) and p_out = softmax(classifier(mask-out)), where
mask-in / mask-out are :func:`audiointerp.features.apply_mask` with ``mask`` / ``1 - mask``
(the same for every method), fed back through the classifier's own feature path:

* AI = 100 * [p_in[c] > p[c]]                       (higher is better)
* AD = 100 * max(0, p[c] - p_in[c]) / p[c]          (lower)
* AG = 100 * max(0, p_in[c] - p[c]) / (1 - p[c])    (higher)
* FF = p[c] - p_out[c]                              (higher)
* fid_in = [argmax p_in == c]                       (higher)
* SPS = Gini index of |mask|                        (higher: sparser)
* COMP = entropy of |mask| / sum |mask|, nats       (lower: simpler)

``reference_compatible=True`` reproduces the SpeechBrain recipe's formulas (docs/reference.md
pitfalls 2, 3 and 9): AD on softmax(probabilities) with +1e-10; SPS/COMP as quantus 0.5.3
(mask / batch max, +1e-7 before the Gini index, one value per batch); and, for L2I
(``method`` starting with "l2i"), Fid-In against class 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from audiointerp.features import Features, MaskDomain, apply_mask
from audiointerp.models.base import Classifier

METRIC_NAMES = ("AI", "AD", "AG", "FF", "fid_in", "SPS", "COMP")
REFERENCE_EPS = 1e-10  # the recipe's denominators
QUANTUS_EPS = 1e-7  # quantus Sparseness adds it to every attribution value


def gini_index(mask: Tensor) -> Tensor:
    """Gini index of |mask| per example, (B, ...) -> (B,) in [0, 1); all-equal -> 0.

    An all-zero mask counts as all-equal (0), the limit of a constant mask.
    """
    values = mask.detach().abs().flatten(1).double()
    values = torch.where(values.sum(1, keepdim=True) > 0, values, torch.ones_like(values))
    values, _ = values.sort(dim=1)
    n = values.shape[1]
    rank = torch.arange(1, n + 1, dtype=values.dtype, device=values.device)
    weights = 2 * rank - n - 1
    return ((weights * values).sum(1) / (n * values.sum(1))).float()


def mask_entropy(mask: Tensor) -> Tensor:
    """Entropy (nats) of |mask| / sum |mask| per example, (B, ...) -> (B,).

    One-hot -> 0, constant -> ln(number of bins); an all-zero mask counts as constant.
    """
    values = mask.detach().abs().flatten(1).double()
    values = torch.where(values.sum(1, keepdim=True) > 0, values, torch.ones_like(values))
    distribution = values / values.sum(1, keepdim=True)
    return (-torch.special.xlogy(distribution, distribution).sum(1)).float()


def quantus_sparseness_complexity(mask: Tensor) -> tuple[Tensor, Tensor]:
    """quantus 0.5.3 Sparseness and Complexity as the recipe calls them, one value per batch.

    |mask| is divided by the batch max (``normalise=True``), Sparseness adds 1e-7, and each
    is averaged over the batch (``return_aggregate=True``). A batch whose mask sums to 0 is
    skipped by the recipe: NaN here. Returns two (B,) tensors repeating the batch value.
    """
    values = mask.detach().abs().flatten(1).double()
    batch = values.shape[0]
    if values.sum() == 0:
        nan = torch.full((batch,), math.nan)
        return nan, nan.clone()
    values = values / values.max()
    sparseness = gini_index(values + QUANTUS_EPS).double().mean()
    complexity = mask_entropy(values).double().mean()
    return (
        torch.full((batch,), float(sparseness)),
        torch.full((batch,), float(complexity)),
    )


def average_drop(p: Tensor, p_in: Tensor) -> Tensor:
    """100 * max(0, p - p_in) / p, elementwise on the explained class's probabilities."""
    return 100.0 * (p - p_in).clamp(min=0) / p.clamp(min=torch.finfo(p.dtype).tiny)


@torch.no_grad()
def faithfulness_metrics(
    classifier: Classifier,
    features: Features,
    mask: Tensor,
    mask_domain: MaskDomain = "linear",
    target: Tensor | None = None,
    reference_compatible: bool = False,
    method: str = "",
    probabilities: Tensor | None = None,
) -> dict[str, Tensor]:
    """Per-example faithfulness of ``mask`` for ``classifier``.

    Args:
        classifier: the explained classifier (eval mode is the caller's business).
        features: the input, magnitude (B, T, F).
        mask: (B, T, F) in [0, 1].
        mask_domain: where the mask applies (the interpreter's ``mask_domain``).
        target: (B,) explained classes; None = the classifier's prediction.
        reference_compatible: reproduce the recipe's formulas (see the module docstring).
        method: interpreter name; only used for the recipe's L2I Fid-In bug.
        probabilities: (B, C) the classifier's softmax on the input, if already computed.

    Returns:
        {"AI", "AD", "AG", "FF", "fid_in", "SPS", "COMP"}: each (B,) float tensor on CPU.
    """
    magnitude = features.magnitude
    with classifier.explaining(features):
        probs = classifier(magnitude).probabilities if probabilities is None else probabilities
        probs_in = classifier(apply_mask(mask, magnitude, mask_domain)).probabilities
        probs_out = classifier(apply_mask(1.0 - mask, magnitude, mask_domain)).probabilities
    explained = probs.argmax(-1) if target is None else target.to(probs.device).long()
    index = explained[:, None]
    p = probs.gather(1, index)[:, 0]
    p_in = probs_in.gather(1, index)[:, 0]
    p_out = probs_out.gather(1, index)[:, 0]

    if reference_compatible:
        # pitfall 2: compute_AD re-applies softmax to probabilities.
        twice, twice_in = probs.softmax(-1), probs_in.softmax(-1)
        ad = 100.0 * (twice.gather(1, index) - twice_in.gather(1, index))[:, 0].clamp(min=0)
        ad = ad / (twice.gather(1, index)[:, 0] + REFERENCE_EPS)
        ag = 100.0 * (p_in - p).clamp(min=0) / (1.0 - p + REFERENCE_EPS)
        # pitfall 3: L2I's argmax over the size-1 label dimension is always class 0.
        fid_reference = torch.zeros_like(explained) if method.startswith("l2i") else explained
        fid_in = probs_in.argmax(-1) == fid_reference
        sps, comp = quantus_sparseness_complexity(mask)
    else:
        ad = average_drop(p, p_in)
        ag = 100.0 * (p_in - p).clamp(min=0) / (1.0 - p).clamp(min=torch.finfo(p.dtype).tiny)
        fid_in = probs_in.argmax(-1) == explained
        sps, comp = gini_index(mask), mask_entropy(mask)

    metrics = {
        "AI": 100.0 * (p_in > p).float(),
        "AD": ad,
        "AG": ag,
        "FF": p - p_out,
        "fid_in": fid_in.float(),
        "SPS": sps,
        "COMP": comp,
    }
    return {name: value.detach().float().cpu() for name, value in metrics.items()}
