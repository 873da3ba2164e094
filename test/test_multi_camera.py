"""Several cameras, one node, one model: real node processes over DDS.

Each camera's outputs land in its own namespace with its own header and size and equal, pixel for
pixel, what a single-camera node answers for the same frame; a silent camera stalls nothing; a
30 Hz camera cannot starve a 1 Hz one; a camera nobody listens to is not subscribed (lazy).
"""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import CompressedImage, Image
from seg_perception_msgs.msg import FrameTiming

from camera_encodings import encode_image_msg
from ros_helpers import CameraProbe, NodeProcess
from seg_perception.messages.images import compressed_msg_to_rgb, output_msg_to_array
from seg_perception.runtime.diagnostics import status_values
from shared_data import driving_frames

pytestmark = pytest.mark.ros

SEMANTIC_MODULE = 'seg_perception.nodes.semantic_segmentation'
START_TIMEOUT = 90.0


def semantic_node(tmp_path, name: str, *params: str, remaps: tuple[str, ...] = ()) -> NodeProcess:
    ros_args = ['-r', f'__node:={name}', '-p', 'input_reliability:=reliable', '-p', 'backend:=onnxruntime',
                '-p', 'diagnostics_period_sec:=0.3']
    for remap in remaps:
        ros_args += ['-r', remap]
    for param in params:
        ros_args += ['-p', param]
    return NodeProcess(SEMANTIC_MODULE, ros_args, tmp_path / f'{name}.log')


def jpeg_msg(rgb: np.ndarray) -> CompressedImage:
    ok, data = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return CompressedImage(format='jpeg', data=data.tobytes())


def test_three_cameras_of_different_sizes_and_encodings_equal_single_camera_nodes(tmp_path, deeplabv3plus_checkpoint):
    frames = driving_frames(3)
    cameras = {  # topic -> (message, frame_id, camera size)
        '/front/image_raw': (encode_image_msg(cv2.resize(frames[0], (1280, 720)), 'rgb8'), 'front', (720, 1280)),
        '/left/image_raw': (encode_image_msg(cv2.resize(frames[1], (640, 480)), 'bgr8'), 'left', (480, 640)),
        '/rear/image_raw/compressed': (jpeg_msg(cv2.resize(frames[2], (1024, 512))), 'rear', (512, 1024)),
    }
    network = ('input_height:=96', 'input_width:=128', f'checkpoint:={deeplabv3plus_checkpoint}')
    multi = semantic_node(tmp_path, 'multi', *network, 'max_batch:=3', 'confidence_output:=mono8',
                          'cameras:=[/front/image_raw, /left/image_raw, /rear/image_raw/compressed]')
    single = semantic_node(tmp_path, 'single', *network, remaps=('image:=/single/image_raw', '__ns:=/single'))
    with multi, single:
        probe = CameraProbe('multi_camera_probe', [multi, single])
        try:
            namespaces = {topic: '/' + topic.split('/')[1] for topic in cameras}
            labels = {topic: probe.listen(f'{ns}/segmentation/semantic') for topic, ns in namespaces.items()}
            confidence = probe.listen('/front/segmentation/semantic/confidence')
            colors = probe.listen('/left/multi/color')
            label_sets = {topic: probe.label_info(f'{ns}/segmentation/semantic/label_info')
                          for topic, ns in namespaces.items()}
            timings = probe.listen('/multi/processing_time', FrameTiming)
            reference = probe.listen('/single/segmentation/semantic')
            probe.connect({**{topic: type(msg) for topic, (msg, _, _) in cameras.items()}, '/single/image_raw': Image},
                          START_TIMEOUT)
            probe.wait_for(lambda: all(label_sets.values()), 'a camera has no label_info')
            assert {received[-1].name for received in label_sets.values()} == {'cityscapes'}

            for topic, (msg, frame_id, size) in cameras.items():
                key = probe.send(msg, topic, frame_id)
                probe.wait_for(lambda: key in labels[topic] and key in timings, f'no output for {topic}')
                output = labels[topic][key]
                assert output.header.frame_id == frame_id and (output.height, output.width) == size
                assert timings[key].camera == topic and timings[key].header.frame_id == frame_id
                # The single-camera node gets the same pixels: the decoded JPEG as rgb8.
                rgb = compressed_msg_to_rgb(msg) if isinstance(msg, CompressedImage) else None
                single_msg = encode_image_msg(rgb, 'rgb8') if rgb is not None else msg
                single_key = probe.send(single_msg, '/single/image_raw', frame_id)
                probe.wait_for(lambda: single_key in reference, 'no output from the single-camera node')
                np.testing.assert_array_equal(output_msg_to_array(output), output_msg_to_array(reference[single_key]),
                                              err_msg=f'{topic} differs from a single-camera node')
                if topic == '/front/image_raw':
                    probe.wait_for(lambda: key in confidence, 'no confidence for /front')
                if topic == '/left/image_raw':
                    probe.wait_for(lambda: key in colors, 'no colour view for /left')
                    assert (colors[key].height, colors[key].width) == size

            # All three at 30 Hz: one model serves them, several frames per call.
            sent = [0]

            def publish_all() -> None:
                for topic, (msg, frame_id, _) in cameras.items():
                    probe.send(msg, topic, frame_id)
                sent[0] += 1
            timer = probe.node.create_timer(1 / 30, publish_all)
            probe.spin_for(4.0)
            probe.node.destroy_timer(timer)
            probe.spin_for(2.0)  # the last frames are served
            status = probe.status('multi: inference', cameras='3', **{'max batch': '3'})
            sizes = dict(pair.split(': ') for pair in status_values(status)['batch sizes (size: calls)'].split(', '))
            assert any(int(size) > 1 for size in sizes) and all(int(size) <= 3 for size in sizes), sizes
            for topic in cameras:
                camera_status = probe.status(f'multi: camera pipeline ({topic})')
                values = status_values(camera_status)
                assert values['input topic'] == topic and int(values['frames published']) > 0
                received, dropped = int(values['frames received']), int(values['frames dropped'])
                assert received == int(values['frames published']) + dropped
            assert probe.node.count_publishers('/segmentation/semantic') == 0  # named cameras only
        finally:
            probe.close()


def test_a_silent_camera_stalls_nothing_and_a_30_hz_camera_cannot_starve_a_1_hz_one(
        tmp_path, deeplabv3plus_checkpoint):
    """One frame per model call (max_batch 1) and a model slower than the 30 Hz camera: the cameras
    take turns, so the 1 Hz camera gets an output for every frame; the silent one is reported."""
    node = semantic_node(tmp_path, 'turns', f'checkpoint:={deeplabv3plus_checkpoint}', 'max_batch:=1', 'lazy:=false',
                         'input_height:=0', 'input_width:=0',  # each frame at its own size, 480x360
                         'input_timeout_sec:=1.0', 'cameras:=[/fast/image_raw, /slow/image_raw, /silent/image_raw]')
    with node:
        probe = CameraProbe('turns_probe', [node])
        try:
            fast, slow = probe.listen('/fast/segmentation/semantic'), probe.listen('/slow/segmentation/semantic')
            probe.connect(['/fast/image_raw', '/slow/image_raw'], START_TIMEOUT)
            # The silent camera has no publisher (a matched one that has not sent yet is only waiting)
            probe.wait_for(lambda: probe.subscribed('/silent/image_raw'), 'silent camera not subscribed')
            frame = encode_image_msg(driving_frames(1)[0], 'rgb8')  # 480x360 at its own size: slower than 33 ms
            slow_keys = []

            def fast_camera() -> None:
                probe.send(frame, '/fast/image_raw', 'fast')

            def slow_camera() -> None:
                slow_keys.append(probe.send(frame, '/slow/image_raw', 'slow'))
            timers = [probe.node.create_timer(1 / 30, fast_camera), probe.node.create_timer(1.0, slow_camera)]
            started = time.monotonic()
            probe.spin_until(lambda: time.monotonic() - started > 6.5, 10.0, probe.alive)
            for timer in timers:
                probe.node.destroy_timer(timer)
            probe.wait_for(lambda: all(key in slow for key in slow_keys), f'1 Hz frames without output: '
                           f'{[key for key in slow_keys if key not in slow]}', timeout=10.0)
            assert len(slow_keys) >= 5 and len(fast) >= 5
            fast_status = status_values(probe.status('turns: camera pipeline (/fast/image_raw)'))
            assert int(fast_status['frames dropped']) > 0, 'the model kept up with 30 Hz: turns were not tested'
            silent = probe.status('turns: camera pipeline (/silent/image_raw)')
            assert silent.level == DiagnosticStatus.WARN and 'no images on /silent/image_raw' in silent.message
            assert 'no images on /silent/image_raw' in node.output()
            inference = status_values(probe.status('turns: inference'))
            assert inference['batch sizes (size: calls)'].startswith('1: ') and ',' not in \
                inference['batch sizes (size: calls)']
        finally:
            probe.close()


def test_a_camera_nobody_listens_to_is_not_subscribed_while_the_others_run(tmp_path, deeplabv3plus_checkpoint):
    node = semantic_node(tmp_path, 'lazy_cameras', 'input_height:=64', 'input_width:=96',
                         f'checkpoint:={deeplabv3plus_checkpoint}',
                         'cameras:=[/watched/image_raw, /ignored/image_raw]')
    with node:
        probe = CameraProbe('lazy_cameras_probe', [node])
        try:
            labels = probe.listen('/watched/segmentation/semantic')
            probe.connect(['/watched/image_raw'], START_TIMEOUT)
            frame = encode_image_msg(driving_frames(1)[0], 'rgb8')
            for _ in range(3):
                key = probe.send(frame, '/watched/image_raw', 'watched')
                probe.send(frame, '/ignored/image_raw', 'ignored')
                probe.wait_for(lambda: key in labels, 'no output for the watched camera')
            assert probe.node.count_subscribers('/ignored/image_raw') == 0
            assert status_values(probe.status('lazy_cameras: camera pipeline (/ignored/image_raw)'))['state'] == 'idle'
            status_values(probe.status('lazy_cameras: camera pipeline (/watched/image_raw)', state='active'))
            # A listener on the ignored camera's overlay wakes that camera alone.
            probe.listen('/ignored/lazy_cameras/overlay')
            probe.wait_for(lambda: probe.subscribed('/ignored/image_raw'), 'ignored never woke up')
        finally:
            probe.close()


def test_cameras_sharing_a_namespace_are_refused_in_one_line(tmp_path):
    node = semantic_node(tmp_path, 'clash', 'cameras:=[/cam/left, /cam/right]')
    with node:
        assert node.wait(timeout=60) == 2  # a parameter value: a usage error
        assert "cameras '/cam/left' and '/cam/right' would publish their outputs into the same namespace /cam" \
            in node.output()


def test_image_source_publishes_one_sequence_on_several_camera_topics(tmp_path):
    source = NodeProcess('seg_perception.nodes.image_source',
                         ['-p', 'cameras:=[/src_a/image_raw, /src_b/image_raw]', '-p', 'rate_hz:=20.0',
                          '-p', 'max_frames:=3'], tmp_path / 'image_source.log')
    with source:
        probe = CameraProbe('image_source_probe', [source])
        try:
            first, second = probe.listen('/src_a/image_raw'), probe.listen('/src_b/image_raw')
            probe.wait_for(lambda: len(set(first) & set(second)) >= 3, 'no frames on both topics', START_TIMEOUT)
            key = sorted(set(first) & set(second))[0]
            assert (first[key].header.frame_id, second[key].header.frame_id) == ('camera_0', 'camera_1')
            np.testing.assert_array_equal(output_msg_to_array(first[key]), output_msg_to_array(second[key]))
        finally:
            probe.close()
