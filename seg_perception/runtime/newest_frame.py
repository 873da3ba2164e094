"""The newest-frame slot between the subscription callback and the inference worker: nothing queues.

A live camera outruns a slow model; queueing its frames would only add latency. Each camera has
one slot: a frame that arrives while the previous one still waits replaces it, and the replaced
frame is counted as dropped. The worker takes the waiting frames at once (one per camera, up to
the model's batch), so several cameras served by one process share one batched model call. With
more cameras waiting than fit in a batch, cameras take turns: the ones served longest ago go
first, so a camera flooding at 30 Hz cannot crowd out a 1 Hz one (its slot holds one frame).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class PendingFrame:
    source: str  # the input topic: one slot per camera
    msg: Any  # the message as received (serialized); deserialized and converted by the worker
    received: float  # time.monotonic() at arrival


class NewestFrameSlots:
    """Thread-safe: ``put`` from subscription callbacks, ``take`` from the worker thread."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._slots: dict[str, PendingFrame] = {}
        self._last_turn: dict[str, int] = {}  # source -> the take() that last served it
        self._turns = 0
        self._closed = False

    def put(self, source: str, msg: Any) -> bool:
        """Store ``msg`` as the newest frame of ``source``; True when it replaced (dropped) an older one."""
        with self._condition:
            replaced = source in self._slots
            self._slots[source] = PendingFrame(source, msg, time.monotonic())
            self._condition.notify()
            return replaced

    def take(self, timeout: float, limit: Optional[int] = None) -> list[PendingFrame]:
        """The waiting frames (at most ``limit``; oldest arrival first), waiting up to ``timeout`` s
        for one; [] when none came or the slots were closed. Sources served longest ago (never
        served: first of all) are taken first; the others keep their frame for the next take."""
        with self._condition:
            self._condition.wait_for(lambda: self._slots or self._closed, timeout)
            if self._closed:
                return []
            waiting = sorted(self._slots.values(),
                             key=lambda frame: (self._last_turn.get(frame.source, -1), frame.received))
            self._turns += 1
            taken = waiting[:limit]
            for frame in taken:
                del self._slots[frame.source]
                self._last_turn[frame.source] = self._turns
            return sorted(taken, key=lambda frame: frame.received)

    def close(self) -> None:
        """Wake the worker for good; frames still waiting are discarded."""
        with self._condition:
            self._closed = True
            self._slots.clear()
            self._condition.notify_all()

    def reopen(self) -> None:
        with self._condition:
            self._closed = False
