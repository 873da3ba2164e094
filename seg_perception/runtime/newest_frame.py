"""The newest-frame slot between the subscription callback and the inference worker: nothing queues.

A live camera outruns a slow model; queueing its frames would only add latency. Each camera has
one slot: a frame that arrives while the previous one still waits replaces it, and the replaced
frame is counted as dropped. The worker takes every waiting frame at once (one per camera), so
several cameras served by one process share one batched model call.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PendingFrame:
    source: str  # the input topic: one slot per camera
    msg: Any  # the message as received; converted by the worker, off the executor thread
    received: float  # time.monotonic() at arrival


class NewestFrameSlots:
    """Thread-safe: ``put`` from subscription callbacks, ``take`` from the worker thread."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._slots: dict[str, PendingFrame] = {}
        self._closed = False

    def put(self, source: str, msg: Any) -> bool:
        """Store ``msg`` as the newest frame of ``source``; True when it replaced (dropped) an older one."""
        with self._condition:
            replaced = source in self._slots
            self._slots[source] = PendingFrame(source, msg, time.monotonic())
            self._condition.notify()
            return replaced

    def take(self, timeout: float) -> list[PendingFrame]:
        """Every waiting frame (oldest arrival first), waiting up to ``timeout`` s for one; [] when
        none came or the slots were closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._slots or self._closed, timeout)
            if self._closed:
                return []
            frames = sorted(self._slots.values(), key=lambda frame: frame.received)
            self._slots.clear()
            return frames

    def close(self) -> None:
        """Wake the worker for good; frames still waiting are discarded."""
        with self._condition:
            self._closed = True
            self._slots.clear()
            self._condition.notify_all()

    def reopen(self) -> None:
        with self._condition:
            self._closed = False
