"""The instance node in its own process over real DDS: what a subscriber rebuilds from
/segmentation/instances equals the backend's own pasted masks, filters and thresholds act as set,
frames without instances still get a (empty) message, stamps are kept, bad images are refused."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from lifecycle_msgs.msg import State, Transition
from rclpy.serialization import serialize_message
from seg_perception_msgs.msg import InstanceMaskArray
from std_msgs.msg import Header

from ros_helpers import CameraProbe, LifecycleClient, NodeProcess, ProbeNode
from seg_models.configs import InstanceFilter, InstanceModelConfig, build_config
from seg_models.segmenters.instance import create_instance_segmenter
from seg_models.segmenters.instance_postprocess import Instance, InstanceResult
from seg_models.data.labels import cityscapes_things
from seg_models.data.visualize import draw_instances
from seg_perception.messages.images import array_to_image_msg, output_msg_to_array
from seg_perception.messages.instances import full_frame_masks, instances_to_msg
from seg_perception.messages.topics import OUTPUT_QOS
from shared_data import driving_frames

pytestmark = pytest.mark.ros

INPUT_SIZE = (256, 512)
FRAME_TIMEOUT = 60.0
START_TIMEOUT = 120.0


def segmenter_like_the_node(checkpoint, output_filter: InstanceFilter):
    return create_instance_segmenter(build_config(InstanceModelConfig, dict(
        checkpoint=str(checkpoint), input_size=INPUT_SIZE, output_filter=output_filter, backend='onnxruntime')))


def instance_probe(name: str, node: NodeProcess, namespace: str) -> CameraProbe:
    """A probe on the camera of one instance node (in ``namespace``); ``instances``, ``overlays`` keep its
    outputs by stamp, ``label_sets`` its label sets."""
    probe = CameraProbe(name, node, camera=f'{namespace}/camera', timeout=FRAME_TIMEOUT)
    probe.instances = probe.listen(f'{namespace}/segmentation/instances', InstanceMaskArray)
    probe.overlays = probe.listen(f'{namespace}/instance_segmentation/overlay')
    probe.label_sets = probe.label_info(f'{namespace}/segmentation/instances/label_info')
    return probe


def instance_node(tmp_path_factory, namespace: str, checkpoint, *params: str):
    ros_args = ['-r', f'__ns:={namespace}', '-r', f'image:={namespace}/camera', '-p', f'checkpoint:={checkpoint}',
                '-p', f'input_height:={INPUT_SIZE[0]}', '-p', f'input_width:={INPUT_SIZE[1]}',
                '-p', 'backend:=onnxruntime', '-p', 'input_reliability:=reliable']
    for param in params:
        ros_args += ['-p', param]
    return NodeProcess('seg_perception.nodes.instance_segmentation', ros_args,
                       tmp_path_factory.mktemp('logs') / f'{namespace.strip("/")}.log')


@pytest.fixture(scope='module')
def all_instances(tmp_path_factory, maskrcnn_checkpoint):
    """A node keeping every detection (score threshold 0, at most 20)."""
    with instance_node(tmp_path_factory, '/inst_all', maskrcnn_checkpoint, 'score_threshold:=0.0',
                       'max_instances:=20') as node:
        probe = instance_probe('instance_all_probe', node, '/inst_all')
        try:
            probe.connect(timeout=START_TIMEOUT)
            yield probe
        finally:
            probe.close()


def assert_message_equals_result(msg: InstanceMaskArray, result: InstanceResult) -> None:
    assert (msg.image_height, msg.image_width) == result.image_size
    assert [i.instance_id for i in msg.instances] == list(range(len(result.instances)))
    assert [i.track_id for i in msg.instances] == [i.track_id for i in result.instances]
    assert [(i.class_id, i.class_name) for i in msg.instances] == [(i.class_id, i.class_name)
                                                                    for i in result.instances]
    np.testing.assert_allclose([i.score for i in msg.instances], [i.score for i in result.instances], atol=1e-6)
    assert [(i.box.x_offset, i.box.y_offset, i.box.width, i.box.height) for i in msg.instances] == \
        [i.roi for i in result.instances]
    for instance in msg.instances:
        mask = instance.mask
        assert (mask.encoding, mask.height, mask.width, mask.step) == ('mono8', instance.box.height,
                                                                       instance.box.width, instance.box.width)
        assert set(np.unique(output_msg_to_array(mask))) <= {0, 255}
    np.testing.assert_array_equal(full_frame_masks(msg), result.full_frame_masks())


def test_subscriber_rebuilds_the_backends_masks_pixel_for_pixel(all_instances, maskrcnn_checkpoint):
    frame = driving_frames(1)[0]
    key = all_instances.send(array_to_image_msg(frame, 'rgb8', Header()))
    msg = all_instances.result(key)
    expected = segmenter_like_the_node(maskrcnn_checkpoint, InstanceFilter(0.0, 0.5, 20)).segment([frame])[0]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (*key, 'front_camera')
    assert msg.label_set == 'cityscapes_things' and len(msg.instances) == len(expected.instances) > 1
    assert_message_equals_result(msg, expected)
    masks = full_frame_masks(msg)
    overlapping = [(a, b) for a, b in itertools.combinations(range(len(masks)), 2) if (masks[a] & masks[b]).any()]
    assert overlapping, 'no overlapping instances in this frame: the overlap check would prove nothing'
    a, b = overlapping[0]
    assert masks[a].sum() > (masks[a] & masks[b]).sum() > 0  # both kept their own mask
    assert all(i.mask.header.stamp == msg.header.stamp for i in msg.instances)


def test_overlay_draws_the_published_instances(all_instances, maskrcnn_checkpoint):
    frame = driving_frames(2)[1]
    key = all_instances.send(array_to_image_msg(frame, 'rgb8', Header()))
    overlay = all_instances.result(key, all_instances.overlays)
    expected = segmenter_like_the_node(maskrcnn_checkpoint, InstanceFilter(0.0, 0.5, 20)).segment([frame])[0]
    np.testing.assert_array_equal(output_msg_to_array(overlay),
                                  draw_instances(frame, expected.instances, cityscapes_things()))


def test_objects_keep_their_track_id_from_frame_to_frame(all_instances):
    """Default tracking (min_hits 2, high score 0.6): a frame's sure detections get ids from their second
    frame on and keep them; a stamp going back resets the tracks, with a warning, and ids are not reused."""
    frame = driving_frames(1)[0]

    def track_ids(sec: int, nanosec: int) -> list[tuple[float, int]]:
        key = all_instances.send(array_to_image_msg(frame, 'rgb8', Header()), stamp=Time(sec=sec, nanosec=nanosec))
        return [(i.score, i.track_id) for i in all_instances.result(key).instances]

    first = track_ids(20000, 0)  # far from the other tests' stamps: the camera's tracks start over
    assert all(track == 0 for _, track in first)  # not confirmed yet
    second, third = track_ids(20000, 100_000_000), track_ids(20000, 200_000_000)
    sure = [track for score, track in second if score >= 0.6]
    assert len(sure) >= 2 and all(track > 0 for track in sure) and len(set(sure)) == len(sure)
    assert all(track == 0 for score, track in second if score < 0.6)  # less sure ones never start a track
    assert third == second  # the same frame again: the same objects, the same ids
    back = track_ids(19000, 0)
    all_instances.wait_for(lambda: 'the stamp went back from 20000.200 s to 19000.000 s: tracks reset'
                           in all_instances.logs(), 'no reset warning')
    assert all(track == 0 for _, track in back)
    again = [track for score, track in track_ids(19000, 100_000_000) if score >= 0.6]
    assert len(again) == len(sure) and min(again) > max(sure)  # new tracks, new ids


def test_label_set_is_announced_with_the_score_threshold(all_instances):
    all_instances.wait_for(lambda: all_instances.label_sets, 'no label set', 10)
    label_set = all_instances.label_sets[0]
    assert label_set.name == 'cityscapes_things' and [c.name for c in label_set.classes] == cityscapes_things().names
    assert label_set.threshold == 0.0


def test_bad_images_are_refused_and_the_node_keeps_serving(all_instances):
    frame = driving_frames(1)[0]
    truncated = array_to_image_msg(frame, 'rgb8', Header())
    truncated.data = bytes(truncated.data[:1000])
    unknown = array_to_image_msg(frame, 'rgb8', Header())
    unknown.encoding = '64FC1'
    for problem, msg in {'data holds 1000 bytes': truncated, "unsupported encoding '64FC1'": unknown}.items():
        key = all_instances.send(msg)
        all_instances.wait_for(lambda: problem in all_instances.logs(), f'no error naming {problem!r}')
        all_instances.result(all_instances.send(array_to_image_msg(frame, 'rgb8', Header())))
        assert key not in all_instances.instances


def test_score_threshold_class_filter_and_max_instances(tmp_path_factory, maskrcnn_checkpoint):
    frame = driving_frames(1)[0]
    every = segmenter_like_the_node(maskrcnn_checkpoint, InstanceFilter(0.0, 0.5, 100)).segment([frame])[0]
    threshold = round(float(np.median([i.score for i in every.instances])), 6)
    counts = {}
    for instance in every.instances:
        if instance.score >= threshold:
            counts[instance.class_name] = counts.get(instance.class_name, 0) + 1
    wanted = max(counts, key=counts.get)  # the class with most detections above the threshold
    output_filter = InstanceFilter(threshold, 0.5, 2, (cityscapes_things().names.index(wanted),))
    expected = segmenter_like_the_node(maskrcnn_checkpoint, output_filter).segment([frame])[0]
    with instance_node(tmp_path_factory, '/inst_filtered', maskrcnn_checkpoint, f'score_threshold:={threshold}',
                       f'class_filter:=[{wanted}]', 'max_instances:=2') as node:
        probe = instance_probe('instance_filtered_probe', node, '/inst_filtered')
        try:
            probe.connect(timeout=START_TIMEOUT)
            msg = probe.result(probe.send(array_to_image_msg(frame, 'rgb8', Header())))
        finally:
            probe.close()
    assert 0 < len(msg.instances) <= 2 and len(msg.instances) == min(2, counts[wanted])
    assert {i.class_name for i in msg.instances} == {wanted} and min(i.score for i in msg.instances) >= threshold
    assert_message_equals_result(msg, expected)


def test_frames_without_instances_get_an_empty_message(tmp_path_factory, maskrcnn_checkpoint):
    frames = driving_frames(2)
    every = segmenter_like_the_node(maskrcnn_checkpoint, InstanceFilter(0.0, 0.5, 100)).segment(frames)
    assert max(i.score for result in every for i in result.instances) < 1.0  # so threshold 1.0 keeps nothing
    with instance_node(tmp_path_factory, '/inst_empty', maskrcnn_checkpoint, 'score_threshold:=1.0') as node:
        probe = instance_probe('instance_empty_probe', node, '/inst_empty')
        try:
            probe.connect(timeout=START_TIMEOUT)
            for frame in frames:
                key = probe.send(array_to_image_msg(frame, 'rgb8', Header()))
                msg = probe.result(key)
                assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (*key, 'front_camera')
                assert msg.instances == [] and (msg.image_height, msg.image_width) == frame.shape[:2]
                assert msg.label_set == 'cityscapes_things'
        finally:
            probe.close()


def test_lifecycle_variant_serves_only_while_active(tmp_path_factory, maskrcnn_checkpoint):
    with instance_node(tmp_path_factory, '/inst_managed', maskrcnn_checkpoint, 'score_threshold:=0.0',
                       'autostart:=false') as node:
        probe = instance_probe('instance_managed_probe', node, '/inst_managed')
        try:
            lifecycle = LifecycleClient(probe, node, '/inst_managed/instance_segmentation', START_TIMEOUT)
            assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
            assert lifecycle.change(Transition.TRANSITION_CONFIGURE)
            assert lifecycle.change(Transition.TRANSITION_ACTIVATE)
            probe.connect(timeout=START_TIMEOUT)
            msg = probe.result(probe.send(array_to_image_msg(driving_frames(1)[0], 'rgb8', Header())))
            assert msg.instances and msg.label_set == 'cityscapes_things'
            assert lifecycle.change(Transition.TRANSITION_DEACTIVATE)
            probe.wait_for(lambda: probe.camera().get_subscription_count() == 0, 'still subscribed', 30)
            assert lifecycle.state() == State.PRIMARY_STATE_INACTIVE
        finally:
            probe.close()


def test_example_listener_rebuilds_full_frame_masks(tmp_path):
    """The README's example subscriber, run as a node, reads a published InstanceMaskArray."""
    mask = np.zeros((20, 30), bool)
    mask[5:15, 10:20] = True
    result = InstanceResult((120, 160), [Instance(class_id=2, class_name='car', score=0.75, box=(40, 30, 70, 50),
                                                  roi=(40, 30, 30, 20), mask=mask)])
    msg = instances_to_msg(result, Header(stamp=Time(sec=77, nanosec=5), frame_id='cam'), 'cityscapes_things')
    with NodeProcess('seg_perception.nodes.instance_listener', ['-r', 'segmentation/instances:=/listener_check'],
                     tmp_path / 'listener.log') as listener:
        probe = ProbeNode('listener_probe')
        try:
            publisher = probe.node.create_publisher(InstanceMaskArray, '/listener_check', OUTPUT_QOS)
            assert probe.spin_until(lambda: publisher.get_subscription_count() > 0, 60)
            publisher.publish(msg)
            assert probe.spin_until(lambda: 'cam: car 0.75 (100 px)' in listener.output(), 30), listener.output()
            assert '77.000000005' in listener.output()
        finally:
            probe.close()


def test_unknown_class_filter_name_stops_start_up_naming_the_known_classes(tmp_path):
    with NodeProcess('seg_perception.nodes.instance_segmentation', ['-p', 'class_filter:=[car, spaceship]'],
                     tmp_path / 'log') as node:
        assert node.wait(timeout=120) == 2  # a parameter value: a usage error
        assert "class_filter names ['spaceship'] are not in label set cityscapes_things" in node.output()


def test_message_size_for_20_instances_at_1024x2048():
    """A typical busy Cityscapes frame: 20 instances from distant pedestrians to a close car."""
    rng = np.random.default_rng(0)
    sizes = [(30, 70)] * 8 + [(90, 60)] * 6 + [(220, 140)] * 4 + [(520, 330)] * 2  # (width, height)
    instances = []
    for index, (width, height) in enumerate(sizes):
        x, y = int(rng.integers(0, 2048 - width)), int(rng.integers(300, 1024 - height))
        mask = np.zeros((height, width), bool)
        mask[height // 8:-height // 8, width // 10:-width // 10] = True
        instances.append(Instance(class_id=index % 8, class_name=cityscapes_things().names[index % 8], score=0.9,
                                  box=(x, y, x + width, y + height), roi=(x, y, width, height), mask=mask))
    msg = instances_to_msg(InstanceResult((1024, 2048), instances), Header(frame_id='cam'), 'cityscapes_things')
    size = len(serialize_message(msg))
    mask_pixels = sum(width * height for width, height in sizes)
    full_frame = 20 * 1024 * 2048
    print(f'\nInstanceMaskArray, 20 instances at 1024x2048: {size / 1024:.0f} KiB serialized '
          f'({mask_pixels} mask pixels in boxes; full-frame masks would be {full_frame / 2**20:.0f} MiB)')
    assert mask_pixels < size < mask_pixels + 20 * 200  # mask bytes plus a small per-instance overhead
    assert size < full_frame / 40
