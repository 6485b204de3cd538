"""Train and test PIQ on the frozen conv2d classifier (the reference's ``train_piq.py``).

    python train_piq.py hparams/piq.yaml [--data_folder=DIR] [--classifier_folder=DIR]
    python train_piq.py hparams/piq.yaml --test_only [--save_interpretations=true]

An empty ``classifier_folder`` means the ``train_classifier.py`` default output for this
data and seed (``classifier_hparams``), trained first when it is not there yet.
"""

import sys
from pathlib import Path

from audiointerp.training.recipes.entry import train

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    return train(argv, HERE, expect="piq")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
