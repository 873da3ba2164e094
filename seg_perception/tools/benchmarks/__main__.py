"""``python -m seg_perception.tools.benchmarks NAME``: every benchmark behind one entry, each with its own flags."""
from __future__ import annotations

import argparse
from typing import Optional

from seg_perception.tools import benchmarks
from seg_perception.tools.benchmarks import cameras, conversion, fleet, latency, postprocess, versus

# name -> module with add_arguments(parser) and run(args)
BENCHMARKS = {'latency': latency, 'conversion': conversion, 'postprocess': postprocess, 'cameras': cameras,
              'fleet': fleet, 'versus': versus}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m seg_perception.tools.benchmarks', description=benchmarks.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    names = parser.add_subparsers(dest='what', required=True)
    for name, module in BENCHMARKS.items():
        module.add_arguments(names.add_parser(name, description=module.__doc__,
                                              formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    BENCHMARKS[args.what].run(args)


if __name__ == '__main__':
    main()
