"""Files an interpreter recipe saves per test clip (``--save_interpretations=true``)."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch.utils.data import Dataset
from tqdm import tqdm

from audiointerp.features import apply_mask
from audiointerp.io import save_audio
from audiointerp.training.recipes.common import save_figure
from audiointerp.training.tasks import InterpreterTask


def save_interpretations(
    task: InterpreterTask, clips: Dataset, folder: Path, count: int, device: torch.device
) -> None:
    """Per clip: ``original.wav``, ``interpretation.wav`` and ``spectra.png`` (input | mask)."""
    extractor = task.classifier.feature_extractor
    rate = task.classifier.feature_config.sample_rate
    task.model.eval()
    for index in tqdm(range(min(count, len(clips))), desc="saving interpretations"):  # type: ignore[arg-type]
        waveform, _, clip_id = clips[index]
        features, classifier_out = task.inputs(waveform[None].to(device))
        mask = task.explain(features, classifier_out)  # (1, T, F)
        with torch.no_grad():
            masked = apply_mask(mask, features.magnitude, task.interpreter.mask_domain)
            audio = extractor.synthesize(masked, features)[0]  # (N,)
        out = folder / clip_id
        out.mkdir(parents=True, exist_ok=True)
        save_audio(out / "original.wav", waveform.numpy(), rate)
        save_audio(out / "interpretation.wav", audio.cpu().numpy(), rate)
        predicted = task.classifier.class_names[int(classifier_out.prediction[0])]
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
