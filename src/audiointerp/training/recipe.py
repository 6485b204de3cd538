"""The runner behind every recipe script (``recipes/esc50/train_*.py`` are three lines).

Command shape, as in the reference::

    python train_classifier.py hparams/conv2d.yaml [--data_folder=DIR] [--key=value ...]
    python train_piq.py hparams/piq.yaml [--classifier_folder=DIR] [--test_only]

The hparams path is tried relative to the working directory, then to the script's folder.
Overrides are typed against the recipe's config dataclass (``--train.lr=1e-3``);
``--seed`` and ``--device`` are short for ``--train.seed`` and ``--train.device``. An empty
``data_folder`` means the embedded synthetic set (generated on first use). A run folder
(``output_folder``, default ``results/<experiment>/<seed>``) gets ``config.yaml``,
``train_log.txt``, ``model/``, ``train_state/`` and ``metrics.json``; training resumes
from ``train_state/`` when the same command is run again. Launch with ``torchrun`` for
data-parallel training; testing then runs on rank 0 alone.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import audiointerp.interpreters  # noqa: F401  (registers the interpreters)
from audiointerp.checkpoints import CheckpointError, load_checkpoint
from audiointerp.config import (
    ConfigError,
    apply_overrides,
    describe,
    from_dict,
    load_yaml,
    parse_overrides,
    save_config,
    to_dict,
)
from audiointerp.data.esc50 import (
    ESC50Dataset,
    Normalization,
    SplitConfig,
    class_names_from_metadata,
    read_metadata,
)
from audiointerp.data.mixtures import MixingConfig
from audiointerp.data.synthetic import ensure_synthetic
from audiointerp.errors import USER_ERRORS
from audiointerp.features import apply_mask
from audiointerp.interpreters.registry import INTERPRETERS, build_interpreter
from audiointerp.io import atomic_write, save_audio, write_text_atomic
from audiointerp.models import (
    Classifier,
    ClassifierConfig,
    build_classifier,
    load_classifier,
)
from audiointerp.training import ddp
from audiointerp.training.loop import Task, TrainConfig, Trainer, evaluate, seed_everything
from audiointerp.training.tasks import ClassifierTask, InterpreterTask

ALIASES = {"seed": "train.seed", "device": "train.device"}


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


@dataclass
class ClassifierRecipeConfig(RecipeConfig):
    """A classifier recipe: the shared settings plus the network."""

    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)


# ------------------------------------------------------------------------ config


def resolve_hparams(path: str, script_dir: Path | None) -> Path:
    """``path`` relative to the working directory, else to the recipe script's folder."""
    candidates = [Path(path)] + ([script_dir / path] if script_dir else [])
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(
        f"hparams file not found: {path} (looked in {', '.join(map(str, candidates))})"
    )


def load_recipe_config(cls: type, argv: list[str], script_dir: Path | None) -> tuple[Any, Path]:
    """``[HPARAMS.yaml, --key=value, ...]`` -> (typed config, resolved hparams path)."""
    if not argv or argv[0].startswith("--"):
        raise ConfigError("usage: SCRIPT HPARAMS.yaml [--key=value ...] (hparams file first)")
    hparams = resolve_hparams(argv[0], script_dir)
    overrides = {ALIASES.get(k, k): v for k, v in parse_overrides(argv[1:]).items()}
    config = apply_overrides(from_dict(cls, load_yaml(hparams)), overrides)
    if not config.data_folder:
        config = dataclasses.replace(config, data_folder=str(ensure_synthetic()))
    if not config.output_folder:
        folder = Path("results") / config.experiment / str(config.train.seed)
        config = dataclasses.replace(config, output_folder=str(folder))
    return config, hparams


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


def wants_help(argv: list[str], cls: type, script: str) -> bool:
    """Print the recipe's usage and every overridable key when ``-h``/``--help`` is given."""
    if not {"-h", "--help"} & set(argv):
        return False
    print(f"usage: python {script} HPARAMS.yaml [--key=value | --key value | --flag ...]\n")
    print("Trains (or with --test_only evaluates) as configured by HPARAMS.yaml (relative to")
    print("the working directory or to hparams/ beside the script); every key below can be")
    print("overridden on the command line. Exit status: 0 ok, 2 bad usage/config/data,")
    print("130 interrupted (run the same command again to resume).\n")
    print("\n".join(describe(cls)))
    return True


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


def run_guarded(main: Callable[[], None]) -> int:
    """Run a recipe: user errors become one line on stderr and exit status 2."""
    try:
        main()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        ddp.shutdown()
    return 0


def saved_model(folder: Path) -> Path:
    """``folder/model``, or a clear error when no training produced it yet."""
    model = folder / "model"
    if not (model / "model.safetensors").is_file():
        raise CheckpointError(f"{model}: no trained model here; run without --test_only first")
    return model


# -------------------------------------------------------------------- classifier


def run_classifier_recipe(argv: list[str], script_dir: Path | None = None) -> int:
    """Entry point of ``train_classifier.py``; returns the exit status."""

    def main() -> None:
        config, _ = load_recipe_config(ClassifierRecipeConfig, argv, script_dir)
        train_classifier(config)

    if wants_help(argv, ClassifierRecipeConfig, "train_classifier.py"):
        return 0
    return run_guarded(main)


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
    _save_figure(figure, path)


def _save_figure(figure: Figure, path: Path) -> None:
    """PNG via temp + rename (matplotlib's object API: no pyplot state, no GUI backend)."""
    with atomic_write(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)


# ------------------------------------------------------------------- interpreter


def interpreter_recipe_class(method_name: str) -> type:
    """The typed config of ``method_name``'s recipe: shared fields + its ``config_class``."""
    if method_name not in INTERPRETERS:
        raise ConfigError(f"unknown interpreter {method_name!r}; known: {sorted(INTERPRETERS)}")
    settings = INTERPRETERS[method_name].config_class
    if settings is None:
        raise ConfigError(f"interpreter {method_name!r} declares no config_class")
    return dataclasses.make_dataclass(
        f"{settings.__name__}Recipe",
        [
            ("interpreter", settings, field(default_factory=settings)),
            # training on two-class mixtures (prob 0: clean clips, the reference)
            ("mixing", MixingConfig, field(default_factory=MixingConfig)),
            # a trained classifier model/ folder; "" = the classifier recipe's default
            # output for this data and seed, trained first with classifier_hparams if absent
            ("classifier_folder", str, field(default="")),
            ("classifier_hparams", str, field(default="conv2d.yaml")),
            ("save_interpretations", bool, field(default=False)),
            ("n_interpretations", int, field(default=10)),  # test clips saved per run
            ("reference_compatible", bool, field(default=False)),  # the reference's metrics
        ],
        bases=(RecipeConfig,),
        namespace={"__module__": __name__},
    )


def run_interpreter_recipe(
    method_name: str, argv: list[str], script_dir: Path | None = None
) -> int:
    """Entry point of ``train_<method>.py``; returns the exit status."""

    def main() -> None:
        config, hparams = load_recipe_config(
            interpreter_recipe_class(method_name), argv, script_dir
        )
        train_interpreter(method_name, config, hparams.parent)

    if method_name in INTERPRETERS and wants_help(
        argv, interpreter_recipe_class(method_name), f"train_{method_name}.py"
    ):
        return 0
    return run_guarded(main)


def classifier_folder(config: Any, hparams_dir: Path) -> Path:
    """The classifier to explain; trains it first when the default one does not exist."""
    if config.classifier_folder:
        return Path(config.classifier_folder)
    hparams = resolve_hparams(config.classifier_hparams, hparams_dir)
    classifier_config = from_dict(ClassifierRecipeConfig, load_yaml(hparams))
    classifier_config = dataclasses.replace(
        classifier_config,
        data_folder=config.data_folder,
        splits=config.splits,
        normalization=config.normalization,
        duration_s=config.duration_s,
        train=dataclasses.replace(
            classifier_config.train, seed=config.train.seed, device=config.train.device
        ),
        output_folder=str(Path("results") / classifier_config.experiment / str(config.train.seed)),
    )
    model = Path(classifier_config.output_folder) / "model"
    if not (model / "model.safetensors").is_file():
        print(f"no trained classifier at {model}: training one with {hparams} first")
        train_classifier(classifier_config)
    return model


def train_interpreter(method_name: str, config: Any, hparams_dir: Path) -> dict | None:
    """Train (unless ``test_only``) and test an interpreter; returns the metrics (rank 0)."""
    folder = Path(config.output_folder)
    trainable = INTERPRETERS[method_name].capabilities.needs_training
    if not config.test_only and trainable:
        classifier, classifier_config = load_classifier(classifier_folder(config, hparams_dir))
        seed_everything(config.train.seed)
        interpreter = build_interpreter(method_name, to_dict(config.interpreter), classifier)
        task = InterpreterTask(
            interpreter, classifier, classifier_config, config.reference_compatible, config.mixing
        )
        fit(task, config, classifier)
    if not ddp.launched_as_main():
        return None
    if trainable:
        task = load_interpreter_task(saved_model(folder), config.reference_compatible)
    else:  # nothing to learn: explain with the configured method directly
        classifier, classifier_config = load_classifier(classifier_folder(config, hparams_dir))
        interpreter = build_interpreter(method_name, to_dict(config.interpreter), classifier)
        task = InterpreterTask(
            interpreter, classifier, classifier_config, config.reference_compatible
        )
    device = ddp.resolve_device(config.train.device, ddp.DistEnv())
    task.to(device)
    test_set = dataset(config, config.splits.test_folds, task.classifier)
    stats = evaluate(task, test_set, config.train.batch_size, device)
    key = f"{method_name}_{task.classifier_config.name}"
    metrics = {"methods": {key: stats}, "n_test": len(test_set)}
    write_text_atomic(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    summary = ", ".join(f"{k} {v:.3g}" for k, v in stats.items() if "/" not in k)
    print(f"{key} on {len(test_set)} test clips: {summary} -> {folder / 'metrics.json'}")
    if config.save_interpretations:
        save_interpretations(task, test_set, folder / "interpretations",
                             config.n_interpretations, device)  # fmt: skip
    return metrics


def load_interpreter_task(model: Path, reference_compatible: bool) -> InterpreterTask:
    """Rebuild the classifier and interpreter of a trained interpreter folder."""
    classifier, classifier_config = load_classifier(model)
    checkpoint = load_checkpoint(model)
    settings = dict(checkpoint.config.get("interpreter") or {})
    name = settings.pop("name", None)
    if name not in INTERPRETERS:
        raise CheckpointError(f"{model}: config.yaml names no known interpreter ({name!r})")
    interpreter = build_interpreter(name, settings, classifier)
    interpreter.load_state_dict(checkpoint.state_dict("interpreter"), strict=True)
    return InterpreterTask(interpreter.eval(), classifier, classifier_config, reference_compatible)


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
    _save_figure(figure, path)
