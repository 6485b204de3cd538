"""PNG pictures for the report: spectrograms on one colour scale, and masks on [0, 1].

Uses matplotlib's Agg canvas directly (no pyplot, no global backend state).
"""

from __future__ import annotations

import io

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from audiointerp.features import apply_mask

FIGSIZE, DPI = (4.8, 2.6), 72


def _image_png(
    image: np.ndarray,
    title: str,
    seconds: float,
    max_khz: float,
    vmin: float,
    vmax: float,
    cmap: str,
    label: str,
) -> bytes:
    """(T, F) image -> PNG bytes, time on x, frequency up, with a colour bar."""
    figure = Figure(figsize=FIGSIZE)
    FigureCanvasAgg(figure)
    # Fixed axes rectangles: an automatic layout engine costs more than the drawing.
    axis = figure.add_axes((0.11, 0.17, 0.70, 0.73))
    colorbar_axis = figure.add_axes((0.83, 0.17, 0.03, 0.73))
    shown = axis.imshow(
        image.T,
        origin="lower",
        aspect="auto",
        extent=(0.0, seconds, 0.0, max_khz),
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
    )
    axis.set_title(title, fontsize=9)
    axis.set_xlabel("time (s)", fontsize=8)
    axis.set_ylabel("kHz", fontsize=8)
    axis.tick_params(labelsize=7)
    colorbar = figure.colorbar(shown, cax=colorbar_axis)
    colorbar.set_label(label, fontsize=8)
    colorbar_axis.tick_params(labelsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def spectrogram_png(
    magnitude: np.ndarray, title: str, seconds: float, max_khz: float, vmax: float
) -> bytes:
    """log1p of a (T, F) linear magnitude on the scale [0, vmax] (shared within an example)."""
    return _image_png(np.log1p(magnitude), title, seconds, max_khz, 0.0, vmax, "magma", "log1p |X|")


def mask_png(mask: np.ndarray, title: str, seconds: float, max_khz: float) -> bytes:
    """A (T, F) mask on the scale [0, 1]."""
    return _image_png(mask, title, seconds, max_khz, 0.0, 1.0, "viridis", "mask")


def explanation_pngs(
    magnitude: np.ndarray, mask: np.ndarray, domain: str, seconds: float, max_khz: float
) -> dict[str, bytes]:
    """The four pictures of one explanation, as the report shows them.

    Args:
        magnitude: the input's (T, F) linear magnitude.
        mask: its (T, F) mask in [0, 1].
        domain: the interpreter's mask domain (``apply_mask``'s "linear" or "log1p").
        seconds, max_khz: the extent of the time and frequency axes.

    Returns:
        PNG bytes by name: ``input``, ``explanation`` (mask-in) and ``removed`` (mask-out)
        spectrograms on the input's colour scale, and ``mask`` on [0, 1].
    """
    mask_t, magnitude_t = torch.from_numpy(mask)[None], torch.from_numpy(magnitude)[None]
    kept = apply_mask(mask_t, magnitude_t, domain)[0].numpy()
    removed = apply_mask(1.0 - mask_t, magnitude_t, domain)[0].numpy()
    vmax = float(np.log1p(magnitude).max()) or 1.0
    pictures = {
        name: spectrogram_png(values, name, seconds, max_khz, vmax)
        for name, values in (("input", magnitude), ("explanation", kept), ("removed", removed))
    }
    pictures["mask"] = mask_png(mask, f"mask ({domain} domain)", seconds, max_khz)
    return pictures
