"""``python -m seg_models``: the same CLI as the ``seg-models`` console script."""
import sys

from seg_models.cli import main

sys.exit(main())
