"""Train and test L2I on a frozen classifier (the reference's ``train_l2i.py``).

    python train_l2i.py hparams/l2i_conv2dclassifier.yaml [--data_folder=DIR]
    python train_l2i.py hparams/l2i_cnn14.yaml [--test_only] [--save_interpretations=true]

An empty ``interpreter.nmf_folder`` means the ``train_nmf.py`` default output for this data
and seed (``interpreter.nmf_hparams``), learned first when it is not there yet.
"""

import sys
from pathlib import Path

from audiointerp.training.recipes.entry import train

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    return train(argv, HERE, expect="l2i")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
