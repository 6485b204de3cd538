"""Train and test L2I on a frozen classifier (the reference's ``train_l2i.py``).

    python train_l2i.py hparams/l2i_conv2dclassifier.yaml [--data_folder=DIR]
    python train_l2i.py hparams/l2i_cnn14.yaml [--test_only] [--save_interpretations=true]

An empty ``interpreter.nmf_folder`` means the ``train_nmf.py`` default output for this data
and seed (``interpreter.nmf_hparams``), learned first when it is not there yet.
"""

from __future__ import annotations

import sys
from pathlib import Path

from audiointerp.interpreters.nmf import ensure_dictionary
from audiointerp.training.recipe import (
    interpreter_recipe_class,
    load_recipe_config,
    resolve_hparams,
    run_guarded,
    run_interpreter_recipe,
    wants_help,
)

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    if wants_help(argv, interpreter_recipe_class("l2i"), "train_l2i.py"):
        return 0
    dictionary: list[str] = []

    def prepare() -> None:
        config, hparams = load_recipe_config(interpreter_recipe_class("l2i"), argv, HERE)
        if not config.test_only and not config.interpreter.nmf_folder:
            nmf_hparams = resolve_hparams(config.interpreter.nmf_hparams, hparams.parent)
            folder = ensure_dictionary(
                nmf_hparams, config.data_folder, config.splits.train_folds,
                config.splits.valid_folds, config.normalization, config.duration_s,
                config.train.seed,
            )  # fmt: skip
            dictionary.append(f"--interpreter.nmf_folder={folder}")

    status = run_guarded(prepare)
    return status or run_interpreter_recipe("l2i", argv + dictionary, script_dir=HERE)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
