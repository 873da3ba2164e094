"""Run an ONNX export in a child Python process, so the caller's memory stays its own.

Tracing, onnxslim's folding and the ONNX checker leave about 400 MB of native memory (allocator
arenas, not Python objects: ``malloc_trim`` does not return it) in the process that runs them. A
node that exported its graph at its first start carried that for its whole life (issue 17: 1700 MB
against 980 MB once the export was cached). Here the export runs in a fresh interpreter that exits
when the file is written.

The export is handed over pickled on the child's standard input: it is this process's own object
(a function or ``functools.partial`` of one, with the module and its weights), never a file from
elsewhere, so nothing outside the program is unpickled.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Callable

Export = Callable[[Path], object]


class ExportProcessError(RuntimeError):
    """The child process failed: its last line of output says why."""


def export_in_child_process(export: Export, path: Path) -> None:
    """Write ``path`` by calling ``export(path)`` in a child interpreter; ``export`` must pickle
    (a module-level function or a ``functools.partial`` of one, not a lambda)."""
    payload = pickle.dumps(export, protocol=pickle.HIGHEST_PROTOCOL)
    # The child sees the modules this process sees, however its path was put together (pytest, colcon).
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(entry for entry in sys.path if entry))
    completed = subprocess.run([sys.executable, '-m', __name__, str(path)], input=payload, env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if completed.returncode != 0:
        lines = completed.stderr.decode(errors='replace').strip().splitlines()
        raise ExportProcessError(f'exporting {Path(path).name} failed in its child process '
                                 f'(exit {completed.returncode}): {lines[-1] if lines else "no output"}')


def _main() -> None:
    export = pickle.loads(sys.stdin.buffer.read())
    export(Path(sys.argv[1]))


if __name__ == '__main__':
    _main()
