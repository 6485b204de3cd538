"""Train and test L-MAC on a frozen classifier.

python train_lmac.py hparams/lmac_cnn14.yaml [--data_folder=DIR] [--test_only]
[--save_interpretations=true]; hparams/lmac_conv2d.yaml and hparams/lmac_demo.yaml likewise.
"""

import sys
from pathlib import Path

from audiointerp.training.recipe import run_interpreter_recipe

if __name__ == "__main__":
    sys.exit(
        run_interpreter_recipe("lmac", sys.argv[1:], script_dir=Path(__file__).resolve().parent)
    )
