"""The interpreter recipe (``train_piq.py``, ``train_l2i.py``, ``train_lmac.py``): the
classifier to explain (trained first when absent), L2I's dictionary (learned first when
absent), training, then testing on the test folds."""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import audiointerp.interpreters  # noqa: F401  (registers the interpreters)
from audiointerp.checkpoints import CheckpointError, is_checkpoint
from audiointerp.config import ConfigError, find_config, from_dict, load_hparams, to_dict
from audiointerp.data.mixtures import MixingConfig
from audiointerp.interpreters.registry import INTERPRETERS, build_interpreter
from audiointerp.io import write_text_atomic
from audiointerp.models import load_classifier
from audiointerp.pretrained import load_model
from audiointerp.training import ddp
from audiointerp.training.loop import evaluate, seed_everything
from audiointerp.training.recipes.classifier import ClassifierRecipeConfig, train_classifier
from audiointerp.training.recipes.common import RecipeConfig, dataset, fit, saved_model
from audiointerp.training.recipes.interpretations import save_interpretations
from audiointerp.training.recipes.nmf import ensure_dictionary
from audiointerp.training.tasks import InterpreterTask


@functools.cache
def interpreter_recipe_class(method_name: str) -> type:
    """The typed config of ``method_name``'s recipe: the shared fields + an ``interpreter``
    section of its ``config_class`` whose ``name`` must be ``method_name``."""
    if method_name not in INTERPRETERS:
        raise ConfigError(f"unknown interpreter {method_name!r}; known: {sorted(INTERPRETERS)}")
    settings = INTERPRETERS[method_name].config_class
    if settings is None:
        raise ConfigError(f"interpreter {method_name!r} declares no config_class")
    section = dataclasses.make_dataclass(
        f"{settings.__name__}Section",
        [("name", Literal[method_name], field(default=method_name))],  # type: ignore[valid-type]
        bases=(settings,),
        namespace={"__module__": __name__},
    )
    return dataclasses.make_dataclass(
        f"{settings.__name__}Recipe",
        [
            ("interpreter", section, field(default_factory=section)),
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


def interpreter_settings(section: Any) -> tuple[str, dict[str, Any]]:
    """An ``interpreter`` section -> (method name, the mapping its ``from_config`` takes)."""
    settings = to_dict(section)
    return settings.pop("name"), settings


def with_dictionary(config: Any, hparams_dir: Path) -> Any:
    """L2I with an empty ``interpreter.nmf_folder``: the ``train_nmf.py`` default output of
    ``interpreter.nmf_hparams`` for this data and seed (learned first when absent)."""
    section = config.interpreter
    if config.test_only or section.name != "l2i" or section.nmf_folder:
        return config
    folder = ensure_dictionary(
        find_config(section.nmf_hparams, [Path.cwd(), hparams_dir]), config.data_folder,
        config.splits.train_folds, config.splits.valid_folds, config.normalization,
        config.duration_s, config.train.seed,
    )  # fmt: skip
    return dataclasses.replace(
        config, interpreter=dataclasses.replace(section, nmf_folder=str(folder))
    )


def classifier_folder(config: Any, hparams_dir: Path) -> Path:
    """The classifier to explain; trains it first when the default one does not exist."""
    if config.classifier_folder:
        return Path(config.classifier_folder)
    hparams = find_config(config.classifier_hparams, [Path.cwd(), hparams_dir])
    classifier_config = from_dict(ClassifierRecipeConfig, load_hparams(hparams))
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
    if not is_checkpoint(model):
        print(f"no trained classifier at {model}: training one with {hparams} first")
        train_classifier(classifier_config)
    return model


def train_interpreter(config: Any, hparams_dir: Path) -> dict | None:
    """Train (unless ``test_only``) and test the interpreter ``config.interpreter.name``;
    returns the metrics (None off rank 0)."""
    folder = Path(config.output_folder)
    method_name, settings = interpreter_settings(config.interpreter)
    trainable = INTERPRETERS[method_name].capabilities.needs_training
    if not config.test_only and trainable:
        classifier, classifier_config = load_classifier(classifier_folder(config, hparams_dir))
        seed_everything(config.train.seed)
        interpreter = build_interpreter(method_name, settings, classifier)
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
        interpreter = build_interpreter(method_name, settings, classifier)
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
    """Rebuild the classifier and interpreter of a trained interpreter folder
    (:func:`~audiointerp.pretrained.load_model`: the folder is read once, keys checked)."""
    loaded = load_model(model)
    if loaded.interpreter is None:
        raise CheckpointError(f"{model}: config.yaml names no interpreter")
    return InterpreterTask(
        loaded.interpreter, loaded.classifier, loaded.classifier_config, reference_compatible
    )
