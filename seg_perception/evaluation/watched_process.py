"""Work run in a child process that must keep saying it is alive: a fleet worker's replay.

Fast DDS 3.2 can deadlock while endpoints come and go (eProsima/Fast-DDS#6502). A replay stuck
there never returns, and a fleet worker (a Ray actor) running it in its own process would hold its
bag, and the whole fleet, for ever: no timeout inside the replay can fire from inside a deadlocked
DDS call. So the worker runs the replay, with the nodes it starts, in a child interpreter of its
own process group. The work tells its watcher, through a ``Voice``, that it is alive (the replay
does between its spins, throttled) and that it made progress (a frame answered); when the child is
silent for ``Patience.silence_sec``, its stacks are logged, the child and its nodes are killed, and
the work runs once more. Once the child has said it is done it gets ``Patience.exit_sec`` to exit
before it is killed with its nodes, so a hung teardown costs nothing.

The work is handed over pickled on the child's standard input: this process's own object (a
module-level function or a ``functools.partial`` of one), never a file from elsewhere. Words travel
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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

LOGGER = logging.getLogger(__name__)

ALIVE, PROGRESS, DONE, FAILED = b'alive', b'progress', b'done', b'failed'
ALIVE_EVERY_SEC = 1.0
STACKS_WAIT_SEC = 2.0  # for the child's stack dump before it is killed


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
    """The child said nothing for longer than its patience allowed; it was killed with its group."""


@dataclass(frozen=True)
class Patience:
    """Seconds the child may stay silent while it works, and may take to exit once done."""

    silence_sec: float
    exit_sec: float


def run_watched(work: Work, patience: Patience, on_progress: Callable[[], None] = lambda: None,
                attempts: int = 2) -> list[str]:
    """Run ``work(voice)`` in a child process; ``on_progress`` for each progress not already made in
    an earlier attempt. Returns the stalls survived (a line each). Raises ``Stalled`` when every
    attempt stalled, RuntimeError with the child's one-line reason when ``work`` raised (never run
    again: it failed, it did not hang)."""
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
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, 'rb', buffering=0) as words, \
            tempfile.NamedTemporaryFile(prefix='seg_watched_stacks_', suffix='.txt') as stacks:
        try:
            child = subprocess.Popen([sys.executable, '-m', __name__, str(write_end), stacks.name],
                                     stdin=subprocess.PIPE, pass_fds=(write_end,), start_new_session=True,
                                     env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, sys.path))))
        finally:
            os.close(write_end)  # the child's copy is the only writer: its exit ends the pipe
        try:
            child.stdin.write(pickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL))
            child.stdin.close()
            _listen(child, words, patience.silence_sec, on_progress, Path(stacks.name))
            _wait_or_kill(child, patience.exit_sec)
        finally:
            _kill_group(child)


def _listen(child: subprocess.Popen, words, silence_sec: float, on_progress: Callable[[], None],
            stacks: Path) -> None:
    """Until the child says done: its progress to ``on_progress``; a failure, an exit or a silence raised."""
    pending = b''
    while True:
        ready, _, _ = select.select([words], [], [], silence_sec)
        if not ready:
            raise Stalled(f'the child process said nothing for {silence_sec:.0f} s; killed it and its processes, '
                          f'stuck {_stuck_in(child, stacks)}')
        chunk = words.read(4096)
        if not chunk:
            raise RuntimeError(f'the child process exited with code {child.wait()} without finishing its work')
        pending += chunk
        *lines, pending = pending.split(b'\n')
        for line in lines:
            if line == DONE:
                return
            if line.startswith(FAILED):
                raise RuntimeError(line[len(FAILED):].decode(errors='replace').strip())
            if line == PROGRESS:
                on_progress()


def _stuck_in(child: subprocess.Popen, stacks: Path) -> str:
    """Where the child's main thread is (its stacks, dumped by faulthandler, go to the log)."""
    child.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + STACKS_WAIT_SEC
    while time.monotonic() < deadline and not stacks.stat().st_size:
        time.sleep(0.05)
    time.sleep(0.1)  # the rest of the dump
    dump = stacks.read_text(errors='replace')
    LOGGER.warning('stacks of the stalled child process %d:\n%s', child.pid, dump or '(none written)')
    frames = {thread: (path, line, function) for thread, path, line, function in re.findall(
        r'(Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):\n'
        r'\s+File "([^"]+)", line (\d+) in (\S+)', dump)}
    innermost = frames.get('Current thread') or frames.get('Thread')  # the thread the signal interrupted
    return f'in {innermost[2]} ({Path(innermost[0]).name}:{innermost[1]})' if innermost else 'where its stacks say'


def _wait_or_kill(child: subprocess.Popen, exit_sec: float) -> None:
    try:
        child.wait(timeout=exit_sec)
    except subprocess.TimeoutExpired:
        LOGGER.warning('the child process %d finished its work but did not exit within %.0f s: killed it',
                       child.pid, exit_sec)


def _kill_group(child: subprocess.Popen) -> None:
    """The child and everything it started in its process group (the nodes)."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()


def _main() -> None:
    words = os.fdopen(int(sys.argv[1]), 'wb', buffering=0)
    stacks = open(sys.argv[2], 'w')  # noqa: SIM115 - open for faulthandler until the process ends
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    work = pickle.loads(sys.stdin.buffer.read())
    try:
        work(Voice(words))
    except Exception as error:  # any failure of the work is its one-line reason for the parent
        words.write(FAILED + b' ' + (str(error).splitlines() or [type(error).__name__])[0].encode() + b'\n')
        sys.exit(1)
    words.write(DONE + b'\n')


if __name__ == '__main__':
    _main()
