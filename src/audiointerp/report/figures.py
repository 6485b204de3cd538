"""PNG pictures: spectrograms on one colour scale, masks on [0, 1], and an explanation.

The report draws one (T, F) image a picture (:func:`spectrogram_png`, :func:`mask_png`);
``audiointerp interpret`` draws an explanation's three panels (:func:`plot_explanation`).
Uses matplotlib's Agg canvas directly (no pyplot, no global backend state).
"""

from __future__ import annotations

import io
import textwrap

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from audiointerp.explain import Explanation
from audiointerp.features import apply_mask

FIGSIZE, DPI = (4.8, 2.6), 72
VERDICT_CHARS = 150  # a sanity figure's title wraps here (fontsize 8 on its 12-inch width)


def _figure(figsize: tuple[float, float]) -> Figure:
    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure, dpi: int) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _show(
    axis: Axes,
    image: np.ndarray,
    title: str,
    extent: tuple[float, float, float, float],
    style: tuple[str, float, float],
    fontsize: int,
    interpolation: str | None = None,
) -> AxesImage:
    """Draw a (T, F) image, time on x and frequency up; ``style`` = (colour map, vmin, vmax)."""
    cmap, vmin, vmax = style
    shown = axis.imshow(
        image.T,
        origin="lower",
        aspect="auto",
        extent=extent,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        interpolation=interpolation,
    )
    axis.set_title(title, fontsize=fontsize)
    return shown


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
    figure = _figure(FIGSIZE)
    # Fixed axes rectangles: an automatic layout engine costs more than the drawing.
    axis = figure.add_axes((0.11, 0.17, 0.70, 0.73))
    colorbar_axis = figure.add_axes((0.83, 0.17, 0.03, 0.73))
    extent = (0.0, seconds, 0.0, max_khz)
    shown = _show(axis, image, title, extent, (cmap, vmin, vmax), 9, interpolation="nearest")
    axis.set_xlabel("time (s)", fontsize=8)
    axis.set_ylabel("kHz", fontsize=8)
    axis.tick_params(labelsize=7)
    colorbar = figure.colorbar(shown, cax=colorbar_axis)
    colorbar.set_label(label, fontsize=8)
    colorbar_axis.tick_params(labelsize=7)
    return _png(figure, DPI)


def spectrogram_png(
    magnitude: np.ndarray, title: str, seconds: float, max_khz: float, vmax: float
) -> bytes:
    """log1p of a (T, F) linear magnitude on the scale [0, vmax] (shared within an example)."""
    return _image_png(np.log1p(magnitude), title, seconds, max_khz, 0.0, vmax, "magma", "log1p |X|")


def mask_png(mask: np.ndarray, title: str, seconds: float, max_khz: float) -> bytes:
    """A (T, F) mask on the scale [0, 1]."""
    return _image_png(mask, title, seconds, max_khz, 0.0, 1.0, "viridis", "mask")


def plot_explanation(explanation: Explanation, max_columns: int = 2000) -> bytes:
    """PNG of one clip's input log spectrogram, its mask and the masked spectrogram.

    Long recordings are decimated in time to at most ``max_columns`` frames for the
    picture only.
    """
    step = max(1, -(-len(explanation.mask) // max_columns))
    mask = explanation.mask[::step]
    log_magnitude = np.log1p(explanation.spectrogram[::step])
    seconds = len(explanation.mask) * explanation.hop_length / explanation.model_sample_rate
    extent = (0.0, seconds, 0.0, explanation.model_sample_rate / 2000.0)
    figure = _figure((9, 7))
    top = float(log_magnitude.max())
    panels = (  # (title, image (T, F), (colour map, smallest and largest value shown))
        ("input log1p|X|", log_magnitude, ("magma", 0, top)),
        (f"mask for '{explanation.target}'", mask, ("viridis", 0, 1.0)),
        ("explanation: mask x log1p|X|", mask * log_magnitude, ("magma", 0, top)),
    )
    axes = figure.subplots(3, 1, sharex=True)
    for axis, (title, image, style) in zip(axes, panels, strict=True):
        _show(axis, image, title, extent, style, 10)
        axis.set_ylabel("kHz")
    axes[-1].set_xlabel("time (s)")
    figure.suptitle(f"predicted {explanation.predicted} (p = {explanation.probability:.2f})")
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.07, top=0.91, hspace=0.3)
    return _png(figure, 80)


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


def sanity_png(
    masks: dict[str, np.ndarray],
    reproducibility: list[float],
    cross_model: list[float],
    cutoffs: tuple[float, float],
    verdict: str,
    seconds: float,
    max_khz: float,
) -> bytes:
    """Why a method passed or failed the sanity check: the first clip's spectrogram and
    its masks under f, under f with another seed and under the randomised f~ (those
    computed), then the per-clip R and C with the cut-offs (minimum mean R; D = R - C must
    exceed the second); ``verdict`` is the title."""
    panels = [("f", "mask under f"), ("second", "f, another seed"), ("randomized", "f~")]
    shown = [(key, title) for key, title in panels if key in masks]
    figure = _figure((2.4 * (len(shown) + 2), 2.6))
    extent = (0.0, seconds, 0.0, max_khz)
    width = 1.0 / (len(shown) + 2)
    axis = figure.add_axes((0.04, 0.17, 0.8 * width, 0.6))
    _show(axis, np.log1p(masks["magnitude"]), "input", extent, ("magma", 0.0, None), 8)
    for column, (key, title) in enumerate(shown, start=1):
        axis = figure.add_axes((0.04 + column * width, 0.17, 0.8 * width, 0.6))
        _show(axis, masks[key], title, extent, ("viridis", 0.0, 1.0), 8, "nearest")
        axis.set_yticks([])
    for axis in figure.axes:
        axis.tick_params(labelsize=6)
    axis = figure.add_axes((0.04 + (len(shown) + 1) * width + 0.02, 0.17, 0.7 * width, 0.6))
    bins = np.linspace(-1.0, 1.0, 21)
    if reproducibility:
        axis.hist(reproducibility, bins, alpha=0.6, label="R", color="#2a7")
        axis.hist(cross_model, bins, alpha=0.6, label="C", color="#c52")
        axis.axvline(cutoffs[0], color="#2a7", linestyle="--", linewidth=1)
        axis.legend(fontsize=6)
    axis.set_title(f"R, C per clip\n(R >= {cutoffs[0]}, D > {cutoffs[1]})", fontsize=7)
    axis.tick_params(labelsize=6)
    title = textwrap.fill(verdict, width=VERDICT_CHARS)  # the diagnostics make it long
    figure.suptitle(title, fontsize=8, x=0.02, ha="left")
    return _png(figure, DPI)
