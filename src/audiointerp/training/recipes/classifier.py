"""The classifier recipe (``train_classifier.py``): train, then test on the test folds
(accuracy, per-class accuracy, confusion matrix and its plot)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from audiointerp.data.esc50 import class_names_from_metadata, read_metadata
from audiointerp.io import write_text_atomic
from audiointerp.models import Classifier, ClassifierConfig, build_classifier, load_classifier
from audiointerp.training import ddp
from audiointerp.training.loop import seed_everything
from audiointerp.training.recipes.common import (
    RecipeConfig,
    dataset,
    fit,
    save_figure,
    saved_model,
)
from audiointerp.training.tasks import ClassifierTask


@dataclass
class ClassifierRecipeConfig(RecipeConfig):
    """A classifier recipe: the shared settings plus the network."""

    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)


def train_classifier(config: ClassifierRecipeConfig) -> dict[str, Any] | None:
    """Train (unless ``test_only``) and test; returns the test metrics (None off rank 0)."""
    folder = Path(config.output_folder)
    if not config.test_only:
        class_names = class_names_from_metadata(
            read_metadata(config.data_folder), config.splits.train_folds
        )
        seed_everything(config.train.seed)
        classifier = build_classifier(config.classifier, class_names)
        fit(ClassifierTask(classifier, config.classifier), config, classifier)
    if not ddp.launched_as_main():
        return None
    classifier, _ = load_classifier(saved_model(folder))
    device = ddp.resolve_device(config.train.device, ddp.DistEnv())
    metrics = test_classifier(classifier, dataset(config, config.splits.test_folds, classifier),
                              config.train.batch_size, device)  # fmt: skip
    write_text_atomic(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    plot_confusion(np.array(metrics["confusion_matrix"]), classifier.class_names,
                   folder / "confusion_matrix.png")  # fmt: skip
    print(f"test accuracy {100 * metrics['test_accuracy']:.2f}% on {metrics['n_test']} clips "
          f"-> {folder / 'metrics.json'}")  # fmt: skip
    return metrics


@torch.no_grad()
def test_classifier(
    classifier: Classifier, test_set: Dataset, batch_size: int, device: torch.device
) -> dict[str, Any]:
    """Accuracy, per-class accuracy and the confusion matrix (rows: true, columns: predicted)."""
    classifier.eval().to(device)
    n_classes = classifier.n_classes
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)
    for waveform, labels, _ in tqdm(DataLoader(test_set, batch_size=batch_size), desc="test"):
        predictions = classifier.classify_waveform(waveform.to(device)).prediction.cpu()
        confusion += torch.bincount(
            labels * n_classes + predictions, minlength=n_classes**2
        ).reshape(n_classes, n_classes)
    per_class = confusion.diag() / confusion.sum(1).clamp(min=1)
    return {
        "test_accuracy": float(confusion.diag().sum() / confusion.sum()),
        "per_class_accuracy": dict(zip(classifier.class_names, per_class.tolist(), strict=True)),
        "n_test": int(confusion.sum()),
        "class_names": list(classifier.class_names),
        "confusion_matrix": confusion.tolist(),
    }


def plot_confusion(confusion: np.ndarray, class_names: list[str], path: Path) -> None:
    """Confusion-matrix heat map with counts, written atomically as PNG."""
    size = max(4.0, 0.35 * len(class_names) + 2)
    figure = Figure(figsize=(size, size))
    axes = figure.subplots()
    axes.imshow(confusion, cmap="Blues")
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=90, fontsize=7)
    axes.set_yticks(ticks, class_names, fontsize=7)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if len(class_names) <= 20:
        for (row, col), count in np.ndenumerate(confusion):
            color = "white" if count > confusion.max() / 2 else "black"
            axes.text(col, row, str(count), ha="center", va="center", fontsize=7, color=color)
    figure.tight_layout()
    save_figure(figure, path)
