import sys

from audiointerp.cli import main

sys.exit(main())
