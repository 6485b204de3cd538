"""Train and test an ESC-50 classifier (conv2d or CNN14, by hparams file).

python train_classifier.py hparams/conv2d.yaml [--data_folder=DIR] [--test_only]
"""

import sys
from pathlib import Path

from audiointerp.training.recipe import run_classifier_recipe

if __name__ == "__main__":
    sys.exit(run_classifier_recipe(sys.argv[1:], script_dir=Path(__file__).resolve().parent))
