"""Learn the NMF dictionary L2I explains with (the reference's ``train_nmf.py``).

    python train_nmf.py hparams/nmf.yaml [--data_folder=DIR] [--nmf.solver=gradient] ...

No hparams file: hparams/nmf.yaml. No data folder: the embedded synthetic set. Writes
``results/train_nmf/<seed>/model``.
"""

import sys
from pathlib import Path

from audiointerp.training.recipes.entry import train

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        argv = ["hparams/nmf.yaml", *argv]
    return train(argv, HERE, expect="nmf")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
