"""``audiointerp train lmac --classifier SPEC --data DATA --out DIR [--epochs N]``: an
interpreter trained for your own classifier on your own labelled audio.

``SPEC`` is what :func:`~audiointerp.models.loading.load_external` reads (``file.py:factory``,
a TorchScript file, ``hf:FOLDER``); ``DATA`` a folder of class sub-folders, a
``path,label[,fold]`` CSV or an ESC-50 folder (:mod:`audiointerp.data.labelled`). Clips of
classes the model does not have and unreadable files are reported on stderr and skipped.
The settings are the packaged ``base/<method>.yaml`` (the interpreter recipe's typed
config; any ``--key=value`` overrides them) with, for this case, a constant learning rate
of 1e-3, 20 epochs and no normalisation (the model hears the audio as given). The one
:class:`~audiointerp.training.loop.Trainer` runs it: progress bars, atomic checkpoints, and
the same command resumes a killed run. ``DIR/model`` is then an interpreter folder that
``audiointerp interpret DIR/model`` and ``Explainer.from_pretrained`` load with the
classifier it references (or one given with ``--classifier``).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from dataclasses import field
from pathlib import Path
from typing import Any

from torch.utils.data import Subset

from audiointerp.config import (
    PACKAGED,
    ConfigError,
    apply_overrides,
    from_dict,
    load_hparams,
    parse_overrides,
    save_config,
)
from audiointerp.data.labelled import LabelledClips, read_labelled, train_valid_split
from audiointerp.interpreters.registry import INTERPRETERS, build_interpreter
from audiointerp.models.loading import load_external
from audiointerp.training import ddp
from audiointerp.training.loop import Trainer, seed_everything
from audiointerp.training.recipes.common import input_meta
from audiointerp.training.recipes.interpreter import interpreter_recipe_class, interpreter_settings
from audiointerp.training.tasks import InterpreterTask

SHORT_KEYS = {
    "data": "data_folder",
    "out": "output_folder",
    "epochs": "train.epochs",
    "seed": "train.seed",
    "device": "train.device",
}
DEFAULTS = {
    "normalization": "none",
    "train": {"epochs": 20, "lr": 1e-3, "scheduler": {"name": "none"}},
}


@functools.cache
def external_recipe_class(method: str) -> type:
    """The interpreter recipe's config of ``method`` plus ``classifier`` (the spec)."""
    return dataclasses.make_dataclass(
        f"External{interpreter_recipe_class(method).__name__}",
        [("classifier", str, field(default=""))],
        bases=(interpreter_recipe_class(method),),
        namespace={"__module__": __name__},
    )


def load_external_recipe(argv: list[str]) -> Any:
    """``[METHOD, --classifier SPEC, --data DATA, --out DIR, --key=value ...]`` -> config."""
    method = argv[0]
    base = PACKAGED / "base" / f"{method}.yaml"
    if method not in INTERPRETERS or not INTERPRETERS[method].capabilities.needs_training:
        trainable = sorted(k for k, v in INTERPRETERS.items() if v.capabilities.needs_training)
        raise ConfigError(f"{method!r} is not a trainable method; one of {', '.join(trainable)}")
    data = load_hparams(base) if base.is_file() else {"interpreter": {"name": method}}
    for key, value in DEFAULTS.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    overrides = parse_overrides(argv[1:])
    overrides = {SHORT_KEYS.get(key, key): value for key, value in overrides.items()}
    config = apply_overrides(from_dict(external_recipe_class(method), data), overrides)
    missing = [flag for flag, key in (("--classifier", "classifier"), ("--data", "data_folder"),
               ("--out", "output_folder")) if not getattr(config, key)]  # fmt: skip
    if missing:
        raise ConfigError(
            f"usage: audiointerp train {method} --classifier SPEC --data DATA --out DIR "
            f"[--epochs N] [--key=value ...]; missing {', '.join(missing)}"
        )
    return config


def train_external(config: Any) -> Path:
    """Train the interpreter ``config`` names for its classifier; returns ``out/model``."""
    classifier = load_external(config.classifier)
    sample_rate = classifier.feature_config.sample_rate
    clips = LabelledClips(
        read_labelled(config.data_folder), classifier.class_names, sample_rate,
        config.duration_s, config.normalization,
    )  # fmt: skip
    for line in clips.problems:
        print(f"{config.data_folder}: {line}", file=sys.stderr)
    train_rows, valid_rows = train_valid_split(clips)
    print(
        f"{len(clips)} clips of {len(set(clips.labels))} classes: {len(train_rows)} train, "
        f"{len(valid_rows)} valid",
        file=sys.stderr,
    )
    method, settings = interpreter_settings(config.interpreter)
    seed_everything(config.train.seed)
    interpreter = build_interpreter(method, settings, classifier)
    task = InterpreterTask(
        interpreter, classifier, None, config.reference_compatible, config.mixing
    )
    folder = Path(config.output_folder)
    trainer = Trainer(task, config.train, folder, input_meta(config))
    if trainer.env.is_main:
        save_config(config, folder / "config.yaml")
    result = trainer.fit(Subset(clips, train_rows), Subset(clips, valid_rows))
    ddp.shutdown()
    print(f"best epoch {result.best_epoch} ({config.train.select_metric} "
          f"{result.best_value:.4g}): {folder / 'model'}")  # fmt: skip
    return folder / "model"
