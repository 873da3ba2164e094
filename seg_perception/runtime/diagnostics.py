"""The /diagnostics status of a node's camera input, computed from its statistics (no ROS timing).

One ``diagnostic_msgs/DiagnosticStatus`` per node, named "<node>: <task>" as diagnostic_updater
names tasks, so robot monitors and ``ros2 topic echo /diagnostics`` read it like any other
driver's status.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from seg_perception.runtime.camera_statistics import WINDOW_SEC, StatisticsSnapshot

# Matched publishers whose frames never arrive, or frames lost before the node: the usual cause.
LARGE_IMAGES_HINT = ('large images over best-effort Fast DDS are dropped with the default 512 KiB shared-memory '
                     'segments: see docs/cameras_and_dds.md, "Large images over DDS"')


@dataclass(frozen=True)
class CameraInputState:
    """What the node is doing, besides its numbers."""

    serving: str  # 'active', 'idle' (lazy: nothing subscribes to the outputs) or 'inactive' (lifecycle)
    input_topic: str
    input_silence_sec: Optional[float]  # subscribed and no image for this long; None: not subscribed
    input_timeout_sec: float  # silence, or frames arriving unanswered, for longer than this is reported
    trained: bool
    model: dict[str, str]  # backend, model, precision, label set ...
    qos_problem: Optional[str] = None  # a publisher with incompatible QoS, and no image since it appeared
    silence_cause: Optional[str] = None  # the likely reason for a silence (publishers matched, no frames)


def input_silence_sec(now: float, subscribed_since: float, snapshot: StatisticsSnapshot) -> float:
    """Seconds a camera has been really silent: since the subscription, its last image or the node's
    last answer, whichever came last; none while a frame still awaits the node's answer (one came
    after the last answer or refusal: a publisher that sends its next frame once answered, as replay
    does, is waiting for us, not silent)."""
    settled = [seconds for seconds in (snapshot.seconds_since_output, snapshot.seconds_since_error)
               if seconds is not None]
    if snapshot.seconds_since_input is not None and (not settled or snapshot.seconds_since_input < min(settled)):
        return 0.0
    return min([now - subscribed_since] + [seconds for seconds in (snapshot.seconds_since_input,
                                                                   snapshot.seconds_since_output)
                                           if seconds is not None])


def silence_report(input_topic: str, silence: float, settings, publishers: int, had_publisher: bool,
                   snapshot: StatisticsSnapshot) -> tuple[float, Optional[str], Optional[str]]:
    """(silence as /diagnostics reports it, the warning to log or None, its likely cause or None).
    A camera whose publisher went away has stopped: no warning. A publisher matched that has not
    sent its first frame yet is waiting (a replay or the pipeline runner waits for every node to be
    up), unless frames were counted lost on the way. The large-images hint only comes with evidence
    of loss (sequence gaps or DDS message_lost events counted before the node)."""
    if silence <= settings.input_timeout_sec:
        return silence, None, None
    lost = snapshot.frames_lost or snapshot.recent_lost
    if (not publishers and had_publisher) or (publishers and not snapshot.frames_received and not lost):
        return 0.0, None, None
    warning = f'no images on {input_topic} for {silence:.0f} s ({publishers} publishers on it)'
    if publishers and lost and settings.input_reliability == 'best_effort':
        return silence, f'{warning}; {lost} frames lost before the node: {LARGE_IMAGES_HINT}', LARGE_IMAGES_HINT
    return silence, warning, None


def format_ms(value: Optional[float]) -> str:
    """A milliseconds figure for a /diagnostics value ('' where there is none yet)."""
    return '' if value is None else f'{value:.1f}'


def _level_and_message(snapshot: StatisticsSnapshot, state: CameraInputState) -> tuple[bytes, str]:
    rates = f'{snapshot.input_rate_hz:.1f} Hz in, {snapshot.output_rate_hz:.1f} Hz out'
    if state.serving == 'inactive':
        return DiagnosticStatus.OK, 'inactive (lifecycle): not subscribed, model released'
    if state.serving == 'idle':
        return DiagnosticStatus.OK, 'idle: nothing subscribes to the outputs (lazy mode)'
    if state.qos_problem is not None:
        return DiagnosticStatus.ERROR, f'{state.qos_problem}; {rates}'
    if state.input_silence_sec is not None and state.input_silence_sec > state.input_timeout_sec:
        cause = f' ({state.silence_cause})' if state.silence_cause else ''
        return DiagnosticStatus.WARN, f'no images on {state.input_topic} for {state.input_silence_sec:.0f} s{cause}'
    kinds = ', '.join(f'{kind} x{count}' for kind, count in sorted(snapshot.recent_errors.items()))
    if snapshot.seconds_unanswered is not None and snapshot.seconds_unanswered > state.input_timeout_sec:
        cause = f'not answered: {kinds}' if kinds else 'see the log'
        return DiagnosticStatus.ERROR, (f'images arrive but none was answered for {snapshot.seconds_unanswered:.0f} s '
                                        f'({cause}); {rates}')
    if kinds:
        level = DiagnosticStatus.ERROR if snapshot.output_rate_hz == 0 else DiagnosticStatus.WARN
        return level, f'images not answered ({kinds}); {rates}'
    if snapshot.recent_lost:
        return DiagnosticStatus.WARN, (f'{snapshot.recent_lost} frames lost before reaching the node in the last '
                                       f'{WINDOW_SEC:.0f} s ({LARGE_IMAGES_HINT}); {rates}')
    if not state.trained:
        return DiagnosticStatus.WARN, f'UNTRAINED weights, outputs are meaningless; {rates}'
    return DiagnosticStatus.OK, rates


def camera_input_status(name: str, hardware_id: str, snapshot: StatisticsSnapshot,
                    state: CameraInputState) -> DiagnosticStatus:
    level, message = _level_and_message(snapshot, state)
    values = {
        'state': state.serving,
        'input topic': state.input_topic,
        'input rate (Hz)': f'{snapshot.input_rate_hz:.2f}',
        'output rate (Hz)': f'{snapshot.output_rate_hz:.2f}',
        'latency p50 (ms)': format_ms(snapshot.latency_p50_ms),
        'latency p95 (ms)': format_ms(snapshot.latency_p95_ms),
        'processing p50 (ms)': format_ms(snapshot.processing_p50_ms),
        'frames received': str(snapshot.frames_received),
        'frames published': str(snapshot.frames_published),
        'frames dropped': str(snapshot.frames_dropped),
        'frames lost before the node': str(snapshot.frames_lost),
        'images not answered': str(snapshot.input_errors),
        'implausible stamps (no latency)': str(snapshot.implausible_stamps),
        'trained weights': str(state.trained).lower(),
        **state.model,
    }
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=key, value=value) for key, value in values.items()])


def status_values(status: DiagnosticStatus) -> dict[str, str]:
    """The key/value pairs of ``status`` as a dict, for tools and tests reading /diagnostics."""
    return {pair.key: pair.value for pair in status.values}


def batch_size_summary(batch_sizes: dict[int, int]) -> str:
    """'1: 3, 2: 40' (batch size: model calls), smallest batch first; '' before the first call."""
    return ', '.join(f'{size}: {count}' for size, count in sorted(batch_sizes.items()))


def inference_status(name: str, batch_sizes: dict[int, int], max_batch: int, cameras: int, active: bool,
                     trained: bool, model: dict[str, str]) -> DiagnosticStatus:
    """The status of the model every camera of a node shares: how full its batches are."""
    calls = sum(batch_sizes.values())
    mean = sum(size * count for size, count in batch_sizes.items()) / calls if calls else 0.0
    summary = f'{calls} model calls, mean batch {mean:.2f} (max {max_batch}) for {cameras} cameras'
    if not active:
        level, message = DiagnosticStatus.OK, 'inactive (lifecycle): model released'
    elif not trained:
        level, message = DiagnosticStatus.WARN, f'UNTRAINED weights, outputs are meaningless; {summary}'
    else:
        level, message = DiagnosticStatus.OK, summary
    values = {'cameras': str(cameras), 'max batch': str(max_batch), 'model calls': str(calls),
              'mean batch size': f'{mean:.2f}', 'batch sizes (size: calls)': batch_size_summary(batch_sizes),
              'trained weights': str(trained).lower(), **model}
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=model.get('device', ''),
                            values=[KeyValue(key=key, value=value) for key, value in values.items()])
