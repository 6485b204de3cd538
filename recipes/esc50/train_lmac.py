"""Train and test L-MAC on a frozen classifier.

python train_lmac.py hparams/lmac_cnn14.yaml [--data_folder=DIR] [--test_only]
[--save_interpretations=true]; hparams/lmac_conv2d.yaml and hparams/lmac_demo.yaml likewise.
"""

import sys
from pathlib import Path

from audiointerp.training.recipes.entry import train

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    return train(argv, HERE, expect="lmac")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
