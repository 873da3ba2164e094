"""The panoptic node in its own process over real DDS: a semantic image and an InstanceMaskArray of the
same stamp come back as the PanopticSegmentation that fuse_panoptic gives for them; its label set is
announced; a frame whose partner never comes is dropped and counted; bad pairs are refused in one line
and the node keeps serving; label sets that cannot be fused are said once. Then the pairing buffer and
the message conversion on their own."""
from __future__ import annotations

import re

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from seg_perception_msgs.msg import FrameTiming, InstanceMaskArray, LabelSet, PanopticSegmentation
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ros_helpers import CameraProbe, NodeProcess
from seg_models.configs import PanopticSettings
from seg_models.data.labels import camvid, cityscapes, cityscapes_things
from seg_models.data.visualize import panoptic_colors
from seg_models.panoptic.fusion import PanopticResult, PanopticSegment, fuse_panoptic, thing_class_map
from seg_models.segmenters.instance_postprocess import Instance, InstanceResult
from seg_perception.messages.images import ImageConversionError, class_ids_to_image_msg, output_msg_to_array
from seg_perception.messages.instances import instances_from_msg, instances_to_msg
from seg_perception.messages.label_info import label_set_to_msg
from seg_perception.messages.panoptic import fusion_inputs, panoptic_from_msg, panoptic_to_msg
from seg_perception.messages.topics import LABEL_INFO_QOS
from seg_perception.nodes.panoptic_segmentation import INSTANCES, SEMANTIC, StampPairing
from seg_perception.runtime.diagnostics import status_values

pytestmark = pytest.mark.ros

SIZE = (120, 160)  # height, width
SCORE_THRESHOLD = 0.4  # the node's instance_score_threshold: the 0.45 instance is fused, the 0.3 one is not
SETTINGS = PanopticSettings(instance_score_threshold=SCORE_THRESHOLD)
STATUS = 'panoptic_segmentation: camera pipeline'
BAD_CAMERA = '/pan_bad/image_raw'  # its semantic label set (camvid) has no 'person' thing: cannot fuse


def semantic_ids() -> np.ndarray:
    """A street: sky, building, road, a car and a person, a stuff patch too small to keep, ignore pixels."""
    names = cityscapes().names
    ids = np.full(SIZE, names.index('road'), np.uint8)
    ids[:40] = names.index('sky')
    ids[40:70] = names.index('building')
    ids[70:90, 20:60] = names.index('car')
    ids[60:100, 100:115] = names.index('person')
    ids[:3, :3] = names.index('vegetation')  # 9 px, under the stuff area limit at this size
    ids[110:, 150:] = cityscapes().ignore_id
    return ids


def instance(name: str, score: float, roi: tuple[int, int, int, int], track_id: int = 0) -> Instance:
    x, y, width, height = roi
    mask = np.zeros((height, width), bool)
    mask[1:-1, 1:-1] = True
    return Instance(class_id=cityscapes_things().names.index(name), class_name=name, score=score,
                    box=(x, y, x + width, y + height), roi=roi, mask=mask, track_id=track_id)


def instances(image_size=SIZE) -> InstanceResult:
    """Two overlapping cars (the second mostly covered), a person, one under and one just over the threshold."""
    return InstanceResult(image_size, [
        instance('car', 0.9, (18, 68, 44, 24), track_id=7), instance('car', 0.8, (30, 70, 30, 18)),
        instance('person', 0.85, (98, 58, 20, 44), track_id=3), instance('bicycle', 0.45, (70, 90, 20, 20)),
        instance('rider', 0.3, (120, 20, 20, 20))])


def expected_result() -> PanopticResult:
    """What fuse_panoptic makes of the pair the node receives."""
    sent = instances_to_msg(instances(), Header(), cityscapes_things().name)
    msg = deserialize_message(serialize_message(sent), InstanceMaskArray)  # scores as float32, as the node reads them
    return fuse_panoptic(semantic_ids(), instances_from_msg(msg), thing_class_map(cityscapes_things(), cityscapes()),
                         cityscapes(), SETTINGS)


def assert_same_result(received: PanopticResult, expected: PanopticResult) -> None:
    np.testing.assert_array_equal(received.segment_ids, expected.segment_ids)
    by_kind = sorted(expected.segments, key=lambda s: (not s.is_thing, -s.score if s.is_thing else s.class_id))
    assert received.segments == by_kind


@pytest.fixture(scope='module')
def panoptic(tmp_path_factory):
    """The node in /pan fusing its own camera and BAD_CAMERA; a probe that publishes both inputs' label sets
    and keeps the outputs (``results``, ``colors``, ``timings`` by stamp, ``label_sets``)."""
    ros_args = ['-r', '__ns:=/pan', '-p', f'cameras:=[image, {BAD_CAMERA}]',
                '-p', f'instance_score_threshold:={SCORE_THRESHOLD}', '-p', 'diagnostics_period_sec:=0.2']
    with NodeProcess('seg_perception.nodes.panoptic_segmentation', ros_args,
                     tmp_path_factory.mktemp('logs') / 'panoptic.log') as node:
        probe = CameraProbe('panoptic_probe', node, timeout=30.0)
        try:
            label_infos = {'/pan/segmentation/semantic': cityscapes(),
                           '/pan/segmentation/instances': cityscapes_things(),
                           '/pan_bad/segmentation/semantic': camvid(),
                           '/pan_bad/segmentation/instances': cityscapes_things()}
            probe.label_publishers = []
            for topic, label_set in label_infos.items():
                publisher = probe.node.create_publisher(LabelSet, topic + '/label_info', LABEL_INFO_QOS)
                publisher.publish(label_set_to_msg(label_set))
                probe.label_publishers.append(publisher)
            probe.results = probe.listen('/pan/segmentation/panoptic', PanopticSegmentation)
            probe.colors = probe.listen('/pan/panoptic_segmentation/color')
            probe.timings = probe.listen('/pan/panoptic_segmentation/processing_time', FrameTiming)
            probe.label_sets = probe.label_info('/pan/segmentation/panoptic/label_info')
            probe.connect({'/pan/segmentation/semantic': Image, '/pan/segmentation/instances': InstanceMaskArray})
            yield probe
        finally:
            probe.close()


def send_pair(probe: CameraProbe, semantic: Image, found: InstanceMaskArray) -> tuple[int, int]:
    """Both results of one frame, the semantic first; returns their stamp."""
    key = probe.send(semantic, '/pan/segmentation/semantic')
    probe.send(found, '/pan/segmentation/instances', stamp=Time(sec=key[0], nanosec=key[1]))
    return key


def good_pair() -> tuple[Image, InstanceMaskArray]:
    return (class_ids_to_image_msg(semantic_ids(), Header()),
            instances_to_msg(instances(), Header(), cityscapes_things().name))


def test_a_pair_is_fused_as_fuse_panoptic_fuses_it(panoptic):
    key = send_pair(panoptic, *good_pair())
    msg = panoptic.result(key, panoptic.results)
    expected = expected_result()
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (*key, 'front_camera')
    assert msg.label_set == 'cityscapes' and msg.segment_ids.encoding == 'mono16'
    assert_same_result(panoptic_from_msg(msg), expected)
    assert [s.class_name for s in msg.segments] == [cityscapes().names[s.class_id] for s in msg.segments]
    things = [s for s in msg.segments if s.is_thing]
    assert [s.track_id for s in things] == [7, 3, 0]  # the covered car and the 0.3 rider left out
    assert [s.class_name for s in msg.segments if not s.is_thing] == ['road', 'building', 'sky']
    color = panoptic.result(key, panoptic.colors)
    np.testing.assert_array_equal(output_msg_to_array(color), panoptic_colors(expected, cityscapes()))
    timing = panoptic.result(key, panoptic.timings)
    assert timing.camera == '/pan/image' and timing.inference_ms > 0 and timing.batch_size == 1


def test_the_semantic_label_set_is_announced(panoptic):
    panoptic.wait_for(lambda: panoptic.label_sets, 'no panoptic label set')
    label_set = panoptic.label_sets[0]
    assert label_set.name == 'cityscapes' and [c.name for c in label_set.classes] == cityscapes().names
    assert label_set.threshold == pytest.approx(SCORE_THRESHOLD)


def test_a_frame_whose_partner_never_comes_is_dropped_and_counted(panoptic):
    semantic, found = good_pair()
    lonely = panoptic.send(class_ids_to_image_msg(semantic_ids(), Header()), '/pan/segmentation/semantic')
    key = send_pair(panoptic, semantic, found)
    panoptic.result(key, panoptic.results)
    panoptic.wait_for(lambda: any(int(status_values(status)['semantic frames dropped unpaired']) >= 1
                                  for status in panoptic.received_statuses(STATUS)), 'no unpaired frame counted')
    assert lonely not in panoptic.results


def test_mismatched_sizes_are_refused_in_one_line_and_the_node_keeps_serving(panoptic):
    problem = 'semantic image is 160x120 but the instances are of a 80x60 image'
    semantic, _ = good_pair()
    small = instances_to_msg(InstanceResult((60, 80)), Header(), cityscapes_things().name)
    refused = [send_pair(panoptic, semantic, small) for _ in range(2)]
    key = send_pair(panoptic, *good_pair())
    panoptic.result(key, panoptic.results)
    panoptic.wait_for(lambda: problem in panoptic.logs(), f'no error naming {problem!r}')
    assert panoptic.logs().count(problem) == 1
    assert not set(refused) & set(panoptic.results)


def test_label_sets_that_cannot_be_fused_are_an_error(panoptic):
    panoptic.wait_for(lambda: "cannot fuse: panoptic fusion needs every instance class as a thing class" in
                      panoptic.logs(), 'no error about the label sets')
    status = panoptic.status(f'{STATUS} ({BAD_CAMERA})')
    assert status.level == status.ERROR and "class 'person' has no class of that name" in status.message
    assert "'camvid'" in status.message and status_values(status)['label sets'] == 'camvid + cityscapes_things'


# --- without ROS ----------------------------------------------------------------------------------

def test_pairing_pairs_by_exact_stamp_in_either_order():
    pairing = StampPairing(max_pending=5, max_wait_sec=1.0)
    assert pairing.add(SEMANTIC, (1, 0), 's1', now=0.0) is None
    pair = pairing.add(INSTANCES, (1, 0), 'i1', now=0.25)
    assert (pair.semantic, pair.instances, pair.waited_sec) == ('s1', 'i1', 0.25)
    assert pairing.add(INSTANCES, (2, 0), 'i2', now=1.0) is None
    assert pairing.add(SEMANTIC, (2, 5), 's2', now=1.0) is None  # not the same stamp: i2 was passed
    assert pairing.add(INSTANCES, (3, 0), 'i3', now=1.1) is None  # and s2 now
    assert pairing.unpaired == {INSTANCES: 1, SEMANTIC: 1} and pairing.waiting() == 1


def test_pairing_drops_what_the_other_input_passed_overflow_and_old_frames():
    pairing = StampPairing(max_pending=2, max_wait_sec=1.0)
    for second in (1, 2, 3):
        pairing.add(SEMANTIC, (second, 0), f's{second}', now=0.0)
    assert pairing.unpaired[SEMANTIC] == 1 and pairing.waiting() == 2  # the oldest went beyond max_pending
    assert pairing.add(INSTANCES, (3, 0), 'i3', now=0.1).semantic == 's3'
    assert pairing.unpaired[SEMANTIC] == 2 and pairing.waiting() == 0  # s2: the instances passed it
    assert pairing.add(INSTANCES, (2, 0), 'late', now=0.2) is None and pairing.unpaired[INSTANCES] == 1
    pairing.add(SEMANTIC, (4, 0), 's4', now=1.0)
    pairing.expire(now=1.5)
    assert pairing.waiting() == 1
    pairing.expire(now=2.5)
    assert pairing.waiting() == 0 and pairing.unpaired[SEMANTIC] == 3


def test_pairing_starts_over_when_stamps_go_back():
    """A bag looping: a frame or two of the new round is lost, then pairs come again."""
    pairing = StampPairing(max_pending=5, max_wait_sec=10.0)
    pairing.add(SEMANTIC, (100, 0), 's', now=0.0)
    assert pairing.add(INSTANCES, (100, 0), 'i', now=0.0) is not None
    paired = [pairing.add(side, (second, 0), side, now=1.0) for second in (1, 2, 3) for side in (SEMANTIC, INSTANCES)]
    assert paired[-1] is not None and paired[-1].semantic == SEMANTIC


def test_panoptic_message_round_trip_mono16_little_endian():
    segment_ids = np.zeros((4, 6), np.uint16)
    segment_ids[0, :3] = 300
    segment_ids[2:, :] = 2
    segments = [PanopticSegment(2, 0, False, 0, 1.0, 12, (0, 2, 6, 2)),  # stuff listed first
                PanopticSegment(300, 13, True, 9, 0.75, 3, (0, 0, 3, 1))]
    msg = panoptic_to_msg(PanopticResult(segment_ids, segments), Header(frame_id='cam'), cityscapes())
    assert (msg.segment_ids.encoding, msg.segment_ids.is_bigendian, msg.segment_ids.step) == ('mono16', 0, 12)
    assert bytes(msg.segment_ids.data[:2]) == (300).to_bytes(2, 'little')
    assert [(s.id, s.class_name, s.box.x_offset, s.box.y_offset, s.box.width, s.box.height) for s in msg.segments] == \
        [(300, 'car', 0, 0, 3, 1), (2, 'road', 0, 2, 6, 2)]  # things first
    back = panoptic_from_msg(msg)
    np.testing.assert_array_equal(back.segment_ids, segment_ids)
    assert back.segments == segments[::-1]
    msg.segment_ids.is_bigendian = 1
    msg.segment_ids.data = segment_ids.astype('>u2').tobytes()
    np.testing.assert_array_equal(panoptic_from_msg(msg).segment_ids, segment_ids)


@pytest.mark.parametrize('spoil, problem', [
    (lambda s, i: setattr(s, 'encoding', 'rgb8'), "encoding 'rgb8' is not a class-id image"),
    (lambda s, i: s.data.__setitem__(0, 40), 'semantic class ids [40] are outside label set'),
    (lambda s, i: setattr(i, 'label_set', 'coco_things'), "instances are in label set 'coco_things'"),
    (lambda s, i: setattr(i.instances[0].box, 'x_offset', 150), 'leaves the 160x120 image'),
])
def test_fusion_inputs_refuse_what_does_not_fit(spoil, problem):
    semantic, found = good_pair()
    spoil(semantic, found)
    with pytest.raises(ImageConversionError, match=re.escape(problem)):
        fusion_inputs(semantic, found, cityscapes(), cityscapes_things())
