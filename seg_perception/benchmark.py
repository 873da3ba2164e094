"""``python -m seg_perception.benchmark``: the same as ``python -m seg_perception.tools.benchmark``."""
from seg_perception.tools.benchmark import main

if __name__ == '__main__':
    main()
