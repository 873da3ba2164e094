"""Work run in a child process that must keep saying it is alive: a fleet worker's replay.

Fast DDS 3.2 can deadlock while endpoints come and go (eProsima/Fast-DDS#6502). A replay stuck
there never returns, and a fleet worker (a Ray actor) running it in its own process would hold its
bag, and the whole fleet, for ever: no timeout inside the replay can fire from inside a deadlocked
DDS call. So the worker runs the replay, with the nodes it starts, in a child interpreter of its
own process group. The work tells its watcher, through a ``Voice``, that it is alive (the replay
does between its spins, throttled) and that it made progress (a frame answered); when the child is
silent for ``Patience.silence_sec``, its stacks are logged, the child and its nodes are killed, and
the work runs once more; so it does when a signal killed the child (a crash inside DDS). Once the
child has said it is done it gets ``Patience.exit_sec`` to exit before it is killed with its nodes,
so a hung teardown costs nothing.

The work is handed over pickled on the child's standard input, after this process's ``sys.path``:
this process's own objects (a module-level function or a ``functools.partial`` of one), never a file
from elsewhere; the environment the nodes inherit is left as it is. The standard input then stays
open: when this process dies, the child sees it close and kills itself and its nodes. Words travel
on a pipe of their own: the nodes the child starts share its stdout and stderr, never the pipe.
"""
from __future__ import annotations

import faulthandler
import logging
import os
import pickle
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

LOGGER = logging.getLogger(__name__)

ALIVE, PROGRESS, DONE, FAILED = b'alive', b'progress', b'done', b'failed'
ALIVE_EVERY_SEC = 1.0
STACKS_WAIT_SEC = 2.0  # for the child's stack dump before it is killed
# The child's start: read the parent's sys.path, then import this module from it and run _main.
CHILD_START = ('import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); '
               'from seg_perception.evaluation.watched_process import _main; _main()')


class Voice:
    """What the work tells its watcher: that it is alive (at most once a second), that it made progress."""

    def __init__(self, pipe) -> None:
        self._pipe = pipe
        self._last_alive = 0.0

    def alive(self) -> None:
        if time.monotonic() - self._last_alive >= ALIVE_EVERY_SEC:
            self._last_alive = time.monotonic()
            self._pipe.write(ALIVE + b'\n')

    def progress(self) -> None:
        self._pipe.write(PROGRESS + b'\n')


Work = Callable[[Voice], None]


class Stalled(RuntimeError):
    """The child said nothing for longer than its patience allowed, or a signal killed it: it was
    killed with its group, and the work may run again."""


class WorkFailed(RuntimeError):
    """The work raised in the child: its type and message, in one line."""


@dataclass(frozen=True)
class Patience:
    """Seconds the child may stay silent while it works, and may take to exit once done."""

    silence_sec: float
    exit_sec: float


def run_watched(work: Work, patience: Patience, on_progress: Callable[[], None] = lambda: None,
                attempts: int = 2) -> list[str]:
    """Run ``work(voice)`` in a child process; ``on_progress`` for each progress not already made in
    an earlier attempt. Returns the stalls survived (a line each). Raises ``Stalled`` when every
    attempt stalled, ``WorkFailed`` when ``work`` raised and RuntimeError when the child exited
    without a word (neither run again: the work failed, it did not hang)."""
    heard_before, stalls = 0, []
    for attempt in range(1, attempts + 1):
        heard = 0

        def on_this_progress() -> None:
            nonlocal heard
            heard += 1
            if heard > heard_before:
                on_progress()

        try:
            _run_once(work, patience, on_this_progress)
            return stalls
        except Stalled as stalled:
            if attempt == attempts:
                raise
            stalls.append(f'{stalled}; ran it again')
            LOGGER.warning('%s; running it again (attempt %d of %d)', stalled, attempt + 1, attempts)
        finally:
            heard_before = max(heard_before, heard)


def _run_once(work: Work, patience: Patience, on_progress: Callable[[], None]) -> None:
    with tempfile.NamedTemporaryFile(prefix='seg_watched_stacks_', suffix='.txt') as stacks:
        read_end, write_end = os.pipe()
        with os.fdopen(read_end, 'rb', buffering=0) as words:
            try:
                child = subprocess.Popen([sys.executable, '-c', CHILD_START, str(write_end), stacks.name],
                                         stdin=subprocess.PIPE, pass_fds=(write_end,), start_new_session=True)
            finally:
                os.close(write_end)  # the child's copy is the only writer: its exit ends the pipe
            try:
                pickle.dump(sys.path, child.stdin)
                pickle.dump(work, child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                child.stdin.flush()
                _listen(child, words, patience.silence_sec, on_progress, Path(stacks.name))
                if _exit_status(child, patience.exit_sec) is None:
                    LOGGER.warning('the child process %d finished its work but did not exit within %.0f s: '
                                   'killing it', child.pid, patience.exit_sec)
            finally:
                _kill_group(child)


def _listen(child: subprocess.Popen, words, silence_sec: float, on_progress: Callable[[], None],
            stacks: Path) -> None:
    """Until the child says done: its progress to ``on_progress``; a failure, an exit or a silence raised."""
    poller = select.poll()
    poller.register(words, select.POLLIN)
    pending = b''
    while True:
        if not poller.poll(silence_sec * 1000):
            raise Stalled(f'the child process said nothing for {silence_sec:.0f} s; killed it and its processes, '
                          f'stuck {_stuck_in(child, stacks)}')
        chunk = words.read(4096)
        if not chunk:
            status = _exit_status(child, STACKS_WAIT_SEC)
            if status is None:
                raise RuntimeError('the child process closed its pipe without finishing its work')
            if status < 0:
                raise Stalled(f'the child process died of {signal.Signals(-status).name} without finishing its work')
            raise RuntimeError(f'the child process exited with code {status} without finishing its work')
        pending += chunk
        *lines, pending = pending.split(b'\n')
        for line in lines:
            if line == DONE:
                return
            if line.startswith(FAILED):
                raise WorkFailed(line[len(FAILED):].decode(errors='replace').strip())
            if line == PROGRESS:
                on_progress()


def _stuck_in(child: subprocess.Popen, stacks: Path) -> str:
    """Where the child's main thread is (its stacks, dumped by faulthandler, go to the log)."""
    child.send_signal(signal.SIGUSR1)
    deadline, size = time.monotonic() + STACKS_WAIT_SEC, -1
    while time.monotonic() < deadline and (size <= 0 or stacks.stat().st_size != size):  # until the dump ends
        size = stacks.stat().st_size
        time.sleep(0.1)
    dump = stacks.read_text(errors='replace')
    LOGGER.warning('stacks of the stalled child process %d:\n%s', child.pid, dump or '(none written)')
    for thread in re.split(r'\n(?=(?:Current thread|Thread) 0x)', dump):
        frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', thread)
        if frames and frames[-1][2] == '<module>':  # the main thread: the one that started in the module
            path, line, function = frames[0]
            return f'in {function} ({Path(path).name}:{line})'
    return 'where its stacks say'


def _exit_status(child: subprocess.Popen, timeout_sec: float) -> Optional[int]:
    """The child's exit status as Popen words it (negative: killed by that signal), once it exits
    within ``timeout_sec``; None if it does not. The child stays unreaped: while it is a zombie its
    process group id cannot be reused, so ``_kill_group`` kills nothing else."""
    deadline = time.monotonic() + timeout_sec
    while True:
        exited = os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if exited is not None:
            return exited.si_status if exited.si_code == os.CLD_EXITED else -exited.si_status
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def _kill_group(child: subprocess.Popen) -> None:
    """The child and everything it started in its process group (the nodes), then the child reaped."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.stdin.close()
    child.wait()


def _die_with_the_parent() -> None:
    """Kill this process group (the child and its nodes) once the parent's end of stdin closes."""
    sys.stdin.buffer.read()
    os.killpg(0, signal.SIGKILL)


def _main() -> None:
    words = os.fdopen(int(sys.argv[1]), 'wb', buffering=0)
    stacks = open(sys.argv[2], 'w')  # noqa: SIM115 - open for faulthandler until the process ends
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    voice = Voice(words)
    voice.alive()  # started: the imports behind it take the first seconds of its patience
    work = pickle.load(sys.stdin.buffer)
    threading.Thread(target=_die_with_the_parent, daemon=True).start()
    try:
        work(voice)
    except Exception as error:  # any failure of the work is its one-line reason for the parent
        words.write(FAILED + b' ' + f'{type(error).__name__}: {error}'.splitlines()[0].encode() + b'\n')
        sys.exit(1)
    words.write(DONE + b'\n')
