"""Uncertainty of a figure averaged over clips or mixtures: percentile bootstrap intervals.

Every mean in the evaluation table is over a few dozen clips or mixtures, so two methods
can differ by less than the noise of the sample. A percentile bootstrap (Efron &
Tibshirani 1993, ch. 13) resamples the items with replacement, recomputes the mean, and
takes the 2.5 and 97.5 percentiles as the 95 % interval; a paired bootstrap of the
per-item differences says whether two methods evaluated on the same items differ.
Seeded: the same values give the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``values`` (NaNs dropped, as the
    table's means drop them).

    One value gives a zero-width interval; none gives (nan, nan).
    """
    known = np.asarray(values, dtype=np.float64)
    known = known[~np.isnan(known)]
    return bootstrap_ratio_interval(known, np.ones_like(known), confidence, resamples, seed)


def bootstrap_ratio_interval(
    numerator: Sequence[float] | np.ndarray,
    denominator: Sequence[float] | np.ndarray,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """The bootstrap interval of mean(numerator) / mean(denominator), items resampled in
    pairs (e.g. a method's SI-SNRi as a fraction of the oracle's on the same mixtures)."""
    assert 0.0 < confidence < 1.0, confidence
    a, b = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if len(a) == 0:
        return math.nan, math.nan
    picks = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    ratios = a[picks].mean(axis=1) / b[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_difference_interval(
    first: Sequence[float] | np.ndarray,
    second: Sequence[float] | np.ndarray,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """The bootstrap interval of mean(first - second) over items scored by both."""
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return bootstrap_interval(a - b, confidence, seed=seed)


def overlap(first: Sequence[float], second: Sequence[float]) -> bool:
    """Whether two (low, high) intervals share a point (a NaN bound: unknown, so yes)."""
    if any(math.isnan(v) for v in (*first, *second)):
        return True
    return first[0] <= second[1] and second[0] <= first[1]
