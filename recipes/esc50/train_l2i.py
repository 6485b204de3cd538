"""Train and test L2I on a frozen classifier (the reference's ``train_l2i.py``).

    python train_l2i.py hparams/l2i_conv2dclassifier.yaml [--data_folder=DIR]
    python train_l2i.py hparams/l2i_cnn14.yaml [--test_only] [--save_interpretations=true]

An empty ``interpreter.nmf_folder`` means the ``train_nmf.py`` default output for this data
and seed (``interpreter.nmf_hparams``), learned first when it is not there yet.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from audiointerp.config import from_dict, load_yaml
from audiointerp.interpreters.nmf import NMFRecipeConfig, resolve_folders, train_nmf_recipe
from audiointerp.training.recipe import (
    interpreter_recipe_class,
    load_recipe_config,
    resolve_hparams,
    run_guarded,
    run_interpreter_recipe,
    wants_help,
)

HERE = Path(__file__).resolve().parent


def dictionary_folder(config: Any, hparams_dir: Path) -> Path:
    """The NMF dictionary of an L2I run: its ``nmf_folder``, or the default one (trained
    first when absent) on the same clips and seed."""
    if config.interpreter.nmf_folder:
        return Path(config.interpreter.nmf_folder)
    hparams = resolve_hparams(config.interpreter.nmf_hparams, hparams_dir)
    nmf = from_dict(NMFRecipeConfig, load_yaml(hparams))
    nmf = resolve_folders(
        dataclasses.replace(
            nmf,
            data_folder=config.data_folder,
            train_folds=config.splits.train_folds,
            valid_folds=config.splits.valid_folds,
            normalization=config.normalization,
            duration_s=config.duration_s,
            nmf=dataclasses.replace(nmf.nmf, seed=config.train.seed),
        )
    )
    model = Path(nmf.output_folder) / "model"
    if not (model / "model.safetensors").is_file():
        print(f"no NMF dictionary at {model}: learning one with {hparams} first")
        train_nmf_recipe(nmf)
    return model


def main(argv: list[str]) -> int:
    if wants_help(argv, interpreter_recipe_class("l2i"), "train_l2i.py"):
        return 0
    dictionary: list[str] = []

    def prepare() -> None:
        config, hparams = load_recipe_config(interpreter_recipe_class("l2i"), argv, HERE)
        if not config.test_only:
            dictionary.append(str(dictionary_folder(config, hparams.parent)))

    status = run_guarded(prepare)
    if status:
        return status
    extra = [f"--interpreter.nmf_folder={folder}" for folder in dictionary]
    return run_interpreter_recipe("l2i", argv + extra, script_dir=HERE)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
