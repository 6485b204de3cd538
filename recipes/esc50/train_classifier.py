"""Train and test an ESC-50 classifier (conv2d or CNN14, by hparams file).

python train_classifier.py hparams/conv2d.yaml [--data_folder=DIR] [--test_only]
"""

import sys
from pathlib import Path

from audiointerp.training.recipes.entry import train

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    return train(argv, HERE, expect="classifier")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
