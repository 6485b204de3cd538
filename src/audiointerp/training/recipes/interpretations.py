"""Files an interpreter recipe saves per test clip (``--save_interpretations=true``)."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch.utils.data import Dataset
from tqdm import tqdm

from audiointerp.explain import explain
from audiointerp.features import apply_mask
from audiointerp.io import save_audio
from audiointerp.training.recipes.common import save_figure
from audiointerp.training.tasks import InterpreterTask


def save_interpretations(
    task: InterpreterTask, clips: Dataset, folder: Path, count: int, device: torch.device
) -> None:
    """Per clip: ``original.wav``, ``interpretation.wav`` and ``spectra.png`` (input | mask)."""
    rate = task.classifier.feature_config.sample_rate
    for index in tqdm(range(min(count, len(clips))), desc="saving interpretations"):  # type: ignore[arg-type]
        waveform, _, clip_id = clips[index]
        explained = explain(task.classifier, task.interpreter, waveform[None].to(device))
        features, mask = explained.features, explained.mask  # mask (1, T, F)
        assert features is not None
        masked = apply_mask(mask, features.magnitude, task.interpreter.mask_domain)  # picture
        out = folder / clip_id
        out.mkdir(parents=True, exist_ok=True)
        save_audio(out / "original.wav", waveform.numpy(), rate)
        save_audio(out / "interpretation.wav", explained.waveform[0].cpu().numpy(), rate)
        predicted = explained.predicted[0]
        panels = [("input log1p|X|", features.log_magnitude[0]), ("mask", mask[0]),
                  ("explanation log1p|X|", torch.log1p(masked[0]))]  # fmt: skip
        plot_spectra(panels, f"explaining: {predicted}", out / "spectra.png")


def plot_spectra(panels: list[tuple[str, torch.Tensor]], title: str, path: Path) -> None:
    """Side-by-side (T, F) images, time on x, frequency on y, written atomically as PNG."""
    figure = Figure(figsize=(4 * len(panels), 3.5))
    axes = figure.subplots(1, len(panels), sharey=True)
    for ax, (name, image) in zip(axes, panels, strict=True):
        ax.imshow(image.T.cpu().numpy(), origin="lower", aspect="auto", cmap="magma")
        ax.set_title(name)
        ax.set_xlabel("frame")
    axes[0].set_ylabel("frequency bin")
    figure.suptitle(title)
    figure.tight_layout()
    save_figure(figure, path)
