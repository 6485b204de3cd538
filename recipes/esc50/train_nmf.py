"""Learn the NMF dictionary L2I explains with (the reference's ``train_nmf.py``).

    python train_nmf.py hparams/nmf.yaml [--data_folder=DIR] [--nmf.solver=gradient] ...

No data folder: the embedded synthetic set. Writes ``results/train_nmf/<seed>/model``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from audiointerp.config import load_config
from audiointerp.interpreters.nmf import NMFRecipeConfig, train_nmf_recipe
from audiointerp.training.recipe import resolve_hparams, run_guarded, wants_help

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    def run() -> None:
        hparams = resolve_hparams(argv[0] if argv else "hparams/nmf.yaml", HERE)
        train_nmf_recipe(load_config(NMFRecipeConfig, hparams, argv[1:]))

    if wants_help(argv, NMFRecipeConfig, "train_nmf.py"):
        return 0
    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
