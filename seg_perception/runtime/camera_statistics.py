"""Counters and sliding windows behind a camera input's diagnostics (rates, latency percentiles, drops).

Updated from the subscription callback and the inference worker, read by the diagnostics timer;
every method takes the time explicitly so the arithmetic is testable without sleeping.
"""
from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

WINDOW_SEC = 10.0


@dataclass(frozen=True)
class StatisticsSnapshot:
    """What the last ``WINDOW_SEC`` seconds looked like, plus totals since start."""

    input_rate_hz: float
    output_rate_hz: float
    latency_p50_ms: Optional[float]  # image stamp -> outputs published; None before the first output
    latency_p95_ms: Optional[float]
    processing_p50_ms: Optional[float]  # conversion + inference + publishing, per frame
    frames_received: int
    frames_published: int
    frames_dropped: int  # replaced in the newest-frame slot before the worker was free
    frames_lost: int  # sent but never seen by the node (PublicationGaps; DDS message_lost events)
    input_errors: int  # frames not answered: refused images (bad encoding, size, data ...), failed batches
    recent_errors: dict[str, int] = field(default_factory=dict)  # not answered in the window, by kind
    seconds_since_input: Optional[float] = None  # None: no image yet
    seconds_since_output: Optional[float] = None  # None: nothing answered yet
    seconds_since_error: Optional[float] = None  # since the last frame not answered (refused, failed); None: none
    seconds_unanswered: Optional[float] = None  # frames arrived and none was answered for this long; None: all were
    recent_lost: int = 0  # lost before the node in the window
    implausible_stamps: int = 0  # answered frames whose stamp is not from the node's clock: no latency


class _Window:
    """(time, value) pairs of the last ``WINDOW_SEC`` seconds."""

    def __init__(self) -> None:
        self.entries: deque[tuple[float, float]] = deque()

    def add(self, now: float, value: float = 0.0) -> None:
        self.entries.append((now, value))

    def trim(self, now: float) -> None:
        while self.entries and self.entries[0][0] < now - WINDOW_SEC:
            self.entries.popleft()

    def rate(self, now: float, started: float) -> float:
        return len(self.entries) / max(min(WINDOW_SEC, now - started), 1e-3)

    def percentile(self, q: float) -> Optional[float]:
        return float(np.percentile([value for _, value in self.entries], q)) if self.entries else None


class PublicationGaps:
    """Frames a publisher sent that never reached the subscription: gaps in each publisher's
    publication sequence numbers, which a subscription callback's message info carries where the
    RMW reports them (rmw_fastrtps does). They count what DDS' own ``message_lost`` events miss:
    frames the reader's history (keep last 1) overwrote before the executor took them. Only gaps
    between frames this subscription saw count, never what a publisher sent before it joined."""

    def __init__(self) -> None:
        self._last: dict[bytes, int] = {}
        self.reported = False  # the RMW gave sequence numbers: message_lost events are counted here too

    def missed(self, info: Mapping[str, Any]) -> int:
        """Frames of this message's publisher missed since its previous message (0 for its first)."""
        number, publisher = info.get('publication_sequence_number'), info.get('publisher_gid')
        if number is None or not publisher or number >= 2**63:  # rmw: UINT64_MAX = unsupported
            return 0
        self.reported = True
        key = bytes(publisher['data'])
        last, self._last[key] = self._last.get(key), number
        return max(0, number - last - 1) if last is not None else 0


class CameraStatistics:
    def __init__(self, now: float) -> None:
        self._lock = threading.Lock()
        self._started = now
        self._inputs, self._outputs = _Window(), _Window()
        self._latencies_ms, self._processing_ms = _Window(), _Window()
        self._lost = _Window()
        self._errors: deque[tuple[float, str]] = deque()
        self._totals = Counter()
        self._last_input: Optional[float] = None
        self._last_output: Optional[float] = None
        self._last_error: Optional[float] = None
        self._unanswered_since: Optional[float] = None  # first frame received after the last one answered

    def frame_received(self, now: float, dropped_older: bool) -> None:
        with self._lock:
            self._inputs.add(now)
            self._last_input = now
            if self._unanswered_since is None:
                self._unanswered_since = now
            self._totals['received'] += 1
            self._totals['dropped'] += int(dropped_older)

    def frames_lost(self, now: float, count: int) -> None:
        with self._lock:
            self._totals['lost'] += count
            self._lost.add(now, count)

    def input_error(self, now: float, kind: str) -> None:
        """A frame not answered: a refused image, or a frame of a failed batch."""
        with self._lock:
            self._last_error = now
            self._errors.append((now, kind))
            self._totals['errors'] += 1

    def frame_published(self, now: float, latency_ms: Optional[float], processing_ms: float,
                        implausible_stamp: bool = False) -> None:
        """A frame answered; ``latency_ms`` None where the image stamp gives none (before the epoch,
        or ``implausible_stamp``: from another clock, counted apart)."""
        with self._lock:
            self._outputs.add(now)
            self._last_output = now
            self._unanswered_since = None
            if latency_ms is not None:
                self._latencies_ms.add(now, latency_ms)
            elif implausible_stamp:
                self._totals['implausible_stamps'] += 1
            self._processing_ms.add(now, processing_ms)
            self._totals['published'] += 1

    def totals(self) -> tuple[int, int]:
        """(frames received, frames dropped) since start."""
        with self._lock:
            return self._totals['received'], self._totals['dropped']

    def restart_windows(self, now: float) -> None:
        """Forget the windows (not the totals), e.g. when a lifecycle node is activated again."""
        with self._lock:
            self._started = now
            self._unanswered_since = None
            for window in (self._inputs, self._outputs, self._latencies_ms, self._processing_ms, self._lost):
                window.entries.clear()
            self._errors.clear()

    def snapshot(self, now: float) -> StatisticsSnapshot:
        with self._lock:
            for window in (self._inputs, self._outputs, self._latencies_ms, self._processing_ms, self._lost):
                window.trim(now)
            while self._errors and self._errors[0][0] < now - WINDOW_SEC:
                self._errors.popleft()
            return StatisticsSnapshot(
                input_rate_hz=self._inputs.rate(now, self._started),
                output_rate_hz=self._outputs.rate(now, self._started),
                latency_p50_ms=self._latencies_ms.percentile(50), latency_p95_ms=self._latencies_ms.percentile(95),
                processing_p50_ms=self._processing_ms.percentile(50),
                frames_received=self._totals['received'], frames_published=self._totals['published'],
                frames_dropped=self._totals['dropped'], frames_lost=self._totals['lost'],
                input_errors=self._totals['errors'], recent_errors=dict(Counter(kind for _, kind in self._errors)),
                seconds_since_input=None if self._last_input is None else now - self._last_input,
                seconds_since_output=None if self._last_output is None else now - self._last_output,
                seconds_since_error=None if self._last_error is None else now - self._last_error,
                seconds_unanswered=None if self._unanswered_since is None else now - self._unanswered_since,
                recent_lost=int(sum(count for _, count in self._lost.entries)),
                implausible_stamps=self._totals['implausible_stamps'])

    def forget_unanswered(self) -> None:
        """Frames received before a new subscription are not waiting for an answer any more."""
        with self._lock:
            self._unanswered_since = None
