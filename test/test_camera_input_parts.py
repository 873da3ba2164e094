"""The camera input's plain parts: newest-frame slots, statistics windows, diagnostics status."""
import threading

import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from seg_perception.runtime.camera_statistics import WINDOW_SEC, CameraStatistics, PublicationGaps
from seg_perception.runtime.diagnostics import CameraInputState, camera_input_status, status_values
from seg_perception.runtime.newest_frame import NewestFrameSlots


def test_a_newer_frame_replaces_the_waiting_one_and_says_so():
    slots = NewestFrameSlots()
    assert slots.put('/cam', 'frame 1') is False
    assert slots.put('/cam', 'frame 2') is True
    assert slots.put('/other_cam', 'frame A') is False
    taken = slots.take(timeout=0.0)
    assert [(frame.source, frame.msg) for frame in taken] == [('/cam', 'frame 2'), ('/other_cam', 'frame A')]
    assert slots.take(timeout=0.01) == []


def test_close_wakes_a_waiting_worker_and_discards_frames():
    slots = NewestFrameSlots()
    results = []
    worker = threading.Thread(target=lambda: results.append(slots.take(timeout=30)))
    worker.start()
    slots.close()
    worker.join(timeout=5)
    assert not worker.is_alive() and results == [[]]
    slots.put('/cam', 'late')
    assert slots.take(timeout=0) == []
    slots.reopen()
    assert [frame.msg for frame in slots.take(timeout=0)] == ['late']


def test_statistics_rates_percentiles_and_totals():
    stats = CameraStatistics(now=0.0)
    for index in range(30):  # 30 frames over 3 s, every third one processed
        now = index * 0.1
        stats.frame_received(now, dropped_older=index % 3 != 0)
        if index % 3 == 0:
            stats.frame_published(now, latency_ms=100.0 + index, processing_ms=50.0)
    stats.input_error(2.9, 'encoding')
    snapshot = stats.snapshot(now=3.0)
    assert snapshot.input_rate_hz == pytest.approx(10.0)
    assert snapshot.output_rate_hz == pytest.approx(10.0 / 3)
    assert snapshot.latency_p50_ms == pytest.approx(113.5)
    assert snapshot.processing_p50_ms == 50.0
    assert (snapshot.frames_received, snapshot.frames_published, snapshot.frames_dropped) == (30, 10, 20)
    assert snapshot.recent_errors == {'encoding': 1} and snapshot.seconds_since_input == pytest.approx(0.1)
    later = stats.snapshot(now=3.0 + WINDOW_SEC)
    assert later.input_rate_hz == 0 and later.latency_p50_ms is None and later.recent_errors == {}
    assert later.frames_received == 30  # totals outlive the window


def _status(serving='active', silence=0.5, trained=True, errors=None, output=5.0, now=1.0, lost=0, **state_fields):
    stats = CameraStatistics(now=0.0)
    for index in range(10):
        stats.frame_received(index * 0.1, dropped_older=False)
        if output:
            stats.frame_published(index * 0.1, latency_ms=80.0, processing_ms=40.0)
    for kind in errors or []:
        stats.input_error(0.9, kind)
    if lost:
        stats.frames_lost(0.9, lost)
    state = CameraInputState(serving=serving, input_topic='/cam/image', input_silence_sec=silence,
                          input_timeout_sec=5.0, trained=trained,
                          model={'backend': 'onnxruntime', 'precision': 'fp32', 'model': 'deeplab'}, **state_fields)
    return camera_input_status('seg: camera pipeline', 'cpu', stats.snapshot(now=now), state)


def test_status_carries_rates_latency_drops_and_model():
    status = _status()
    values = status_values(status)
    assert status.level == DiagnosticStatus.OK and status.hardware_id == 'cpu'
    assert values['backend'] == 'onnxruntime' and values['precision'] == 'fp32' and values['model'] == 'deeplab'
    assert values['latency p50 (ms)'] == '80.0' and values['latency p95 (ms)'] == '80.0'
    assert values['frames dropped'] == '0' and values['input rate (Hz)'] == '10.00'


@pytest.mark.parametrize('kwargs, level, words', [
    ({'silence': 6.0}, DiagnosticStatus.WARN, 'no images on /cam/image for 6 s'),
    ({'errors': ['encoding', 'encoding']}, DiagnosticStatus.WARN, 'encoding x2'),
    ({'errors': ['step'], 'output': 0}, DiagnosticStatus.ERROR, 'images not answered (step x1)'),
    # Whatever the cause (a worker stuck or dead, every batch failing), frames unanswered for longer than
    # the input timeout are an error, also with untrained weights.
    ({'output': 0, 'now': 6.0, 'trained': False}, DiagnosticStatus.ERROR, 'none was answered for 6 s (see the log)'),
    ({'errors': ['inference'], 'output': 0, 'now': 6.0}, DiagnosticStatus.ERROR, '(not answered: inference x1)'),
    ({'trained': False}, DiagnosticStatus.WARN, 'UNTRAINED'),
    ({'silence': 6.0, 'silence_cause': 'large images'}, DiagnosticStatus.WARN, 'for 6 s (large images)'),
    ({'qos_problem': 'incompatible QoS (RELIABILITY)'}, DiagnosticStatus.ERROR, 'incompatible QoS (RELIABILITY)'),
    ({'lost': 3}, DiagnosticStatus.WARN, '3 frames lost before reaching the node in the last 10 s (large images over'),
    ({'serving': 'idle', 'silence': None}, DiagnosticStatus.OK, 'idle'),
    ({'serving': 'inactive', 'silence': None}, DiagnosticStatus.OK, 'inactive'),
])
def test_status_level_names_the_problem(kwargs, level, words):
    status = _status(**kwargs)
    assert status.level == level and words in status.message


def test_publication_gaps_count_per_publisher_and_only_where_the_rmw_reports_numbers():
    gaps = PublicationGaps()
    first, second = {'data': b'\x01' * 16}, {'data': b'\x02' * 16}
    assert gaps.missed({'publication_sequence_number': None, 'publisher_gid': first}) == 0
    assert not gaps.reported  # an RMW without sequence numbers: message_lost events count instead
    counts = [gaps.missed({'publication_sequence_number': number, 'publisher_gid': publisher})
              for number, publisher in ((7, first), (40, second), (8, first), (12, first), (41, second))]
    assert gaps.reported and counts == [0, 0, 0, 3, 0]  # each publisher's own numbers; none before its first
