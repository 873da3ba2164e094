"""``python -m seg_perception.evaluation``: the same CLI as the ``seg_bag`` console script."""
import sys

from seg_perception.evaluation.cli import main

sys.exit(main())
