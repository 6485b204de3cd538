"""Long audio by overlapping windows, cross-faded with a normalised overlap-add.

A recording longer than the classifier's training clip is cut into windows of that
length overlapping by half. Window starts are multiples of the STFT hop, so frame ``j`` of
the window starting at sample ``s`` is frame ``s // hop + j`` of the whole recording: masks
are cross-faded on the STFT frame grid and waveforms on the sample grid, with one taper
(``sin^2``, strictly positive) evaluated at frame centres and at samples respectively.

Outputs are normalised by the summed taper (``sum_k w_k y_k / sum_k w_k``), so the
effective weights sum to one everywhere, including the first and last half-windows where
only one window contributes. Each window's edges, where its STFT sees artificial zero
padding, get the smallest weights. If every window returns its own input (an identity
explanation), the output is the input exactly, whatever the length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows of one recording start.

    Attributes:
        n_samples: length of the recording (N).
        window: samples per window (W); shorter recordings get one zero-padded window.
        frame_hop: STFT hop; every start is a multiple of it.
        starts: first sample of each window; the last window ends at most one hop past N.
    """

    n_samples: int
    window: int
    frame_hop: int
    starts: tuple[int, ...]

    @property
    def padded_samples(self) -> int:
        """Samples covered by the windows (>= N; the excess is zero padding)."""
        return self.starts[-1] + self.window

    @property
    def frames_per_window(self) -> int:
        """Frames of a centred STFT of one window."""
        return self.window // self.frame_hop + 1

    @property
    def n_frames(self) -> int:
        """Frames of a centred STFT of the whole recording (the output mask's T)."""
        return self.n_samples // self.frame_hop + 1

    @property
    def padded_frames(self) -> int:
        return self.padded_samples // self.frame_hop + 1

    def frame_offset(self, index: int) -> int:
        """First frame of window ``index`` on the recording's frame grid."""
        return self.starts[index] // self.frame_hop

    def segment(self, audio: np.ndarray, index: int) -> np.ndarray:
        """Window ``index`` of ``audio`` (N,), zero-padded to W samples."""
        start = self.starts[index]
        segment = audio[start : start + self.window]
        if len(segment) < self.window:
            segment = np.pad(segment, (0, self.window - len(segment)))
        return segment


def plan_windows(n_samples: int, window: int, frame_hop: int, overlap: float = 0.5) -> WindowPlan:
    """Windows of ``window`` samples covering ``n_samples``, overlapping by ``overlap``.

    The hop between windows is ``window * (1 - overlap)`` rounded down to a multiple of
    ``frame_hop`` (so frames align and the overlap is at least ``overlap``); the last window
    starts at the first multiple of ``frame_hop`` that lets it reach the end, so it is padded
    by less than one STFT hop.
    """
    assert n_samples > 0 and window > 0 and frame_hop > 0, (n_samples, window, frame_hop)
    assert 0.0 <= overlap < 1.0, overlap
    if n_samples <= window:
        return WindowPlan(n_samples, window, frame_hop, (0,))
    hop = max(frame_hop, math.floor(window * (1.0 - overlap) / frame_hop) * frame_hop)
    last = math.ceil((n_samples - window) / frame_hop) * frame_hop
    starts = tuple(range(0, last, hop)) + (last,)
    return WindowPlan(n_samples, window, frame_hop, starts)


def taper(positions: np.ndarray, window: int) -> np.ndarray:
    """The cross-fade weight ``sin^2(pi (t + 0.5) / W)`` at positions ``t`` in [0, W]: > 0."""
    return (np.sin(np.pi * (positions + 0.5) / window) ** 2).astype(np.float32)


def sample_weights(plan: WindowPlan) -> np.ndarray:
    """(W,) taper at every sample of a window."""
    return taper(np.arange(plan.window, dtype=np.float64), plan.window)


def frame_weights(plan: WindowPlan) -> np.ndarray:
    """(T_w,) taper at the centre of every STFT frame of a window."""
    centres = np.arange(plan.frames_per_window, dtype=np.float64) * plan.frame_hop
    return taper(centres, plan.window)


class OverlapAdd:
    """Normalised overlap-add along axis 0: ``sum_k w y_k / sum_k w`` (float32).

    Args:
        length: accumulator length along axis 0 (samples or frames, padded).
        weights: (L,) taper applied to every added window of length L.
        trailing: shape of the other axes (``(F,)`` for masks, ``()`` for waveforms).
    """

    def __init__(self, length: int, weights: np.ndarray, trailing: tuple[int, ...] = ()):
        self.weights = np.asarray(weights, dtype=np.float32)
        self.total = np.zeros((length, *trailing), dtype=np.float32)
        self.weight_sum = np.zeros(length, dtype=np.float32)

    def add(self, offset: int, values: np.ndarray) -> None:
        """Add one window's ``values`` (L, *trailing) starting at ``offset``."""
        size = len(self.weights)
        assert values.shape == (size, *self.total.shape[1:]), (values.shape, self.total.shape)
        assert offset + size <= len(self.total), (offset, size, len(self.total))
        weights = self.weights.reshape(size, *([1] * (values.ndim - 1)))
        self.total[offset : offset + size] += weights * values
        self.weight_sum[offset : offset + size] += self.weights

    def result(self, length: int) -> np.ndarray:
        """The cross-faded signal, cropped to ``length`` (normalised in place: call once)."""
        total = self.total[:length]
        weight_sum = self.weight_sum[:length]
        assert np.all(weight_sum > 0), "a position no window covered"
        total /= weight_sum.reshape(length, *([1] * (total.ndim - 1)))
        return total
