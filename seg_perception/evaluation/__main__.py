import sys

from seg_perception.evaluation.cli import main

sys.exit(main())
