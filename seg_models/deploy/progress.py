"""Saying what a long first-start step is doing while a person waits: what it is, how long it
usually takes, and every ``HEARTBEAT_SEC`` how long it has taken so far, then the total."""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Iterator

LOGGER = logging.getLogger(__name__)  # shown at INFO even where the rest logs warnings only (seg-models)
HEARTBEAT_SEC = 15.0


@contextmanager
def announced(what: str, usually: str, heartbeat_sec: float = HEARTBEAT_SEC) -> Iterator[None]:
    """Log ``what`` (e.g. 'exporting X to ONNX') with ``usually`` (e.g. 'about 40 s on a 2-core CPU,
    only at the first start'), a line every ``heartbeat_sec`` while it runs, and its duration."""
    started = time.monotonic()
    done = threading.Event()
    LOGGER.info('%s (%s) ...', what, usually)

    def heartbeat() -> None:
        while not done.wait(heartbeat_sec):
            LOGGER.info('... still %s: %.0f s so far', what, time.monotonic() - started)

    thread = threading.Thread(target=heartbeat, name='progress', daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    LOGGER.info('%s: done in %.0f s', what, time.monotonic() - started)
