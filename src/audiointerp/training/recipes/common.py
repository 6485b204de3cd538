"""What the classifier and interpreter recipes share: their common settings, the clips
they read, fitting a task into a run folder, and the run folder's trained model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from audiointerp.checkpoints import CheckpointError, is_checkpoint
from audiointerp.config import save_config
from audiointerp.data.esc50 import ESC50Dataset, Normalization, SplitConfig
from audiointerp.io import atomic_write
from audiointerp.models import Classifier
from audiointerp.training import ddp
from audiointerp.training.loop import Task, TrainConfig, Trainer


@dataclass
class RecipeConfig:
    """Settings every recipe shares (data, run folder, optimisation)."""

    experiment: str = "experiment"
    data_folder: str = ""  # "" = the embedded synthetic set
    output_folder: str = ""  # "" = results/<experiment>/<train.seed>
    splits: SplitConfig = field(default_factory=SplitConfig)
    normalization: Normalization = "peak"
    duration_s: float = 5.0  # clips are cropped / zero-padded to this length
    train: TrainConfig = field(default_factory=TrainConfig)
    test_only: bool = False  # evaluate the saved model/ on the test folds, no training


def dataset(config: RecipeConfig, folds: list[int], classifier: Classifier) -> ESC50Dataset:
    """The clips of ``folds`` as the classifier hears them (its rate and class order)."""
    return ESC50Dataset(
        config.data_folder,
        folds,
        sample_rate=classifier.feature_config.sample_rate,
        class_names=classifier.class_names,
        normalization=config.normalization,
        duration_s=config.duration_s,
    )


def input_meta(config: RecipeConfig) -> dict[str, Any]:
    """How the model's inputs were prepared; saved in meta.json so a ``model/`` folder
    copied out of its run still explains with the right window and scaling."""
    return {"duration_s": config.duration_s, "normalization": config.normalization}


def fit(task: Task, config: RecipeConfig, classifier: Classifier) -> None:
    """Train ``task`` on the train folds, selecting on the valid folds; rank 0 writes the
    run folder. Every rank leaves the process group afterwards (testing runs on rank 0)."""
    folder = Path(config.output_folder)
    trainer = Trainer(task, config.train, folder, input_meta(config))
    if trainer.env.is_main:
        save_config(config, folder / "config.yaml")
    trainer.fit(
        dataset(config, config.splits.train_folds, classifier),
        dataset(config, config.splits.valid_folds, classifier),
    )
    ddp.shutdown()


def saved_model(folder: Path) -> Path:
    """``folder/model``, or a clear error when no training produced it yet."""
    model = folder / "model"
    if not is_checkpoint(model):
        raise CheckpointError(f"{model}: no trained model here; run without --test_only first")
    return model


def save_figure(figure: Figure, path: Path) -> None:
    """PNG via temp + rename (matplotlib's object API: no pyplot state, no GUI backend)."""
    with atomic_write(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
