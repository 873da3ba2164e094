"""``run_watched``: work in a child process that goes silent (as a replay stuck in a Fast DDS
deadlock does) or is killed by a signal is killed with everything it started and run again; a
failure is reported, not retried; a child that finished but cannot exit is killed without a retry;
a child whose parent dies kills itself and what it started. Real child processes."""
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest

from seg_perception.evaluation.watched_process import Patience, Stalled, Voice, WorkFailed, run_watched

QUICK = Patience(silence_sec=5.0, exit_sec=2.0)  # for the stall tests
PATIENT = Patience(silence_sec=60.0, exit_sec=2.0)  # for the others: a slow start is never a stall


def attempt_number(folder: Path) -> int:
    """Counts this attempt in ``folder`` (a file per attempt) and returns its number."""
    number = len(list(folder.glob('attempt_*'))) + 1
    (folder / f'attempt_{number}').touch()
    return number


def start_sleeper(folder: Path, number: int) -> None:
    """A process the work starts and never stops, as the replay starts its nodes."""
    sleeper = subprocess.Popen(['sleep', '300'])
    (folder / f'sleeper_{number}').write_text(str(sleeper.pid))


def deadlocked_call() -> None:
    while True:
        time.sleep(3600)


def stalls_the_first_time(folder: Path, voice: Voice) -> None:
    number = attempt_number(folder)
    start_sleeper(folder, number)
    for _ in range(2 if number == 1 else 3):
        voice.alive()
        voice.progress()
    if number == 1:
        deadlocked_call()


def always_stalls(folder: Path, voice: Voice) -> None:
    attempt_number(folder)
    deadlocked_call()


def killed_by_a_signal_the_first_time(folder: Path, voice: Voice) -> None:
    number = attempt_number(folder)
    voice.progress()
    if number == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # as a segfault inside DDS would end it


def stalls_quietly_for_ever(folder: Path, voice: Voice) -> None:
    start_sleeper(folder, attempt_number(folder))
    voice.progress()
    deadlocked_call()


def watch_for_ever(folder: Path) -> None:
    """The parent of a child that never finishes (run by a test as a process of its own, then killed)."""
    run_watched(partial(stalls_quietly_for_ever, folder), Patience(silence_sec=600.0, exit_sec=2.0),
                lambda: (folder / 'progressed').touch())


def fails(folder: Path, voice: Voice) -> None:
    attempt_number(folder)
    voice.progress()
    raise ValueError('the bag is broken\nand a second line nobody needs')


def cannot_exit(folder: Path, voice: Voice) -> None:
    attempt_number(folder)
    voice.progress()
    threading.Thread(target=deadlocked_call).start()  # not a daemon: the interpreter waits for it at exit


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ('Z', 'X')


def progress_counter():
    heard = []
    return heard, lambda: heard.append(time.monotonic())


def test_a_silent_child_is_killed_with_what_it_started_and_its_work_runs_again(tmp_path, caplog):
    heard, on_progress = progress_counter()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        stalls = run_watched(partial(stalls_the_first_time, tmp_path), QUICK, on_progress)
    assert time.monotonic() - started < 30
    assert len(stalls) == 1 and stalls[0].endswith('; ran it again'), stalls
    assert len(list(tmp_path.glob('attempt_*'))) == 2
    assert len(heard) == 3  # the first attempt's two progresses are not counted again
    sleepers = [int((tmp_path / f'sleeper_{number}').read_text()) for number in (1, 2)]
    deadline = time.monotonic() + 5
    while any(running(pid) for pid in sleepers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(running(pid) for pid in sleepers)  # the stalled attempt's and the finished one's
    retried = [record.getMessage() for record in caplog.records if 'running it again' in record.getMessage()]
    assert len(retried) == 1 and 'stuck in deadlocked_call (test_watched_process.py' in retried[0], retried
    assert any('stacks of the stalled child process' in record.getMessage() and 'stalls_the_first_time' in
               record.getMessage() for record in caplog.records)


def test_a_child_that_stays_silent_every_time_raises_stalled(tmp_path):
    with pytest.raises(Stalled, match=r'said nothing for 5 s; killed it .* stuck in deadlocked_call'):
        run_watched(partial(always_stalls, tmp_path), QUICK, attempts=2)
    assert len(list(tmp_path.glob('attempt_*'))) == 2


def test_a_failing_work_is_reported_in_one_line_and_not_run_again(tmp_path):
    heard, on_progress = progress_counter()
    with pytest.raises(WorkFailed, match=r'^ValueError: the bag is broken$'):
        run_watched(partial(fails, tmp_path), PATIENT, on_progress)
    assert len(list(tmp_path.glob('attempt_*'))) == 1 and len(heard) == 1


def test_a_child_that_finished_but_cannot_exit_is_killed_without_running_again(tmp_path, caplog):
    heard, on_progress = progress_counter()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert run_watched(partial(cannot_exit, tmp_path), PATIENT, on_progress) == []
    assert time.monotonic() - started < 15
    assert len(list(tmp_path.glob('attempt_*'))) == 1 and len(heard) == 1
    assert any('did not exit within 2 s: killing it' in record.getMessage() for record in caplog.records)


def test_a_child_killed_by_a_signal_runs_again(tmp_path):
    heard, on_progress = progress_counter()
    stalls = run_watched(partial(killed_by_a_signal_the_first_time, tmp_path), PATIENT, on_progress)
    assert stalls == ['the child process died of SIGKILL without finishing its work; ran it again']
    assert len(list(tmp_path.glob('attempt_*'))) == 2 and len(heard) == 1


def test_a_child_whose_parent_dies_kills_itself_and_what_it_started(tmp_path):
    parent = subprocess.Popen([sys.executable, '-c', f'from test_watched_process import watch_for_ever; '
                               f'from pathlib import Path; watch_for_ever(Path({str(tmp_path)!r}))'],
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, sys.path))))
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / 'progressed').exists() and time.monotonic() < deadline:
            assert parent.poll() is None, 'the watching process ended early'
            time.sleep(0.1)
        sleeper = int((tmp_path / 'sleeper_1').read_text())
        assert running(sleeper)
    finally:
        parent.kill()  # as a Ray worker is killed
        parent.wait()
    deadline = time.monotonic() + 10
    while running(sleeper) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(sleeper)
