"""Panoptic results <-> seg_perception_msgs/PanopticSegmentation, and the fusion's inputs from messages.

``panoptic_to_msg`` is what the panoptic node publishes: every pixel's segment id as a lossless
mono16 little-endian image at camera resolution, and per segment its class (id and name in the
semantic label set), kind, track, score, area and box; ``panoptic_from_msg`` reads it back into
seg_models' PanopticResult (consumers, tests). ``fusion_inputs`` turns one frame's semantic image and
InstanceMaskArray into what ``seg_models.panoptic.fusion.fuse_panoptic`` takes, refusing (with an
``ImageConversionError`` naming the problem) inputs that do not belong together or to their label sets.
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image, RegionOfInterest
from seg_perception_msgs.msg import InstanceMaskArray, PanopticSegment, PanopticSegmentation
from std_msgs.msg import Header

from seg_models.data.labels import LabelSet
from seg_models.panoptic.fusion import PanopticResult
from seg_models.panoptic.fusion import PanopticSegment as Segment
from seg_models.segmenters.instance_postprocess import InstanceResult
from seg_perception.messages.images import ImageConversionError, array_to_image_msg, image_msg_pixels
from seg_perception.messages.instances import instances_from_msg

SEGMENT_IDS_ENCODING = 'mono16'
SEGMENT_IDS_DTYPE = np.dtype('<u2')  # little-endian on any host, as the message says
SEMANTIC_ENCODINGS = ('mono8', 'mono16')


def panoptic_to_msg(result: PanopticResult, header: Header, label_set: LabelSet) -> PanopticSegmentation:
    """The message of one frame's panoptic result (class ids in ``label_set``, the semantic one);
    segments things first (highest score first), then stuff (class order), as the message says."""
    if result.segment_ids.size and int(result.segment_ids.max()) > np.iinfo(SEGMENT_IDS_DTYPE).max:
        raise ValueError(f'segment id {int(result.segment_ids.max())} does not fit mono16')
    msg = PanopticSegmentation(header=header, label_set=label_set.name,
                               segment_ids=array_to_image_msg(result.segment_ids.astype(SEGMENT_IDS_DTYPE),
                                                              SEGMENT_IDS_ENCODING, header))
    ordered = sorted(result.segments, key=lambda s: (not s.is_thing, -s.score if s.is_thing else s.class_id))
    for segment in ordered:
        x, y, width, height = segment.box
        msg.segments.append(PanopticSegment(
            id=segment.id, class_id=segment.class_id, class_name=label_set.classes[segment.class_id].name,
            is_thing=segment.is_thing, track_id=segment.track_id, score=segment.score, area=segment.area,
            box=RegionOfInterest(x_offset=x, y_offset=y, width=width, height=height, do_rectify=False)))
    return msg


def panoptic_from_msg(msg: PanopticSegmentation) -> PanopticResult:
    """The panoptic result a message carries (segment ids as native uint16, whatever their byte order)."""
    if msg.segment_ids.encoding != SEGMENT_IDS_ENCODING:
        raise ImageConversionError('encoding', f'segment_ids must be {SEGMENT_IDS_ENCODING}, got '
                                               f'{msg.segment_ids.encoding!r}')
    pixels, _ = image_msg_pixels(msg.segment_ids)
    segments = [Segment(id=s.id, class_id=s.class_id, is_thing=s.is_thing, track_id=s.track_id, score=s.score,
                        area=s.area, box=(s.box.x_offset, s.box.y_offset, s.box.width, s.box.height))
                for s in msg.segments]
    return PanopticResult(pixels[:, :, 0].astype(np.uint16), segments)


def fusion_inputs(semantic: Image, instances: InstanceMaskArray, semantic_label_set: LabelSet,
                  instance_label_set: LabelSet) -> tuple[np.ndarray, InstanceResult]:
    """(semantic class ids (H, W), instances) of one frame, checked: a mono8/mono16 class-id image
    whose ids are classes of ``semantic_label_set`` or its ignore id, instances of the same image
    size in ``instance_label_set``, each mask mono8 of its box's size within the image. Anything
    else raises ImageConversionError (its ``kind`` names the problem class)."""
    if semantic.encoding not in SEMANTIC_ENCODINGS:
        raise ImageConversionError('encoding', f'semantic image encoding {semantic.encoding!r} is not a class-id '
                                               f'image ({" or ".join(SEMANTIC_ENCODINGS)})')
    class_ids = image_msg_pixels(semantic)[0][:, :, 0]
    image_size = class_ids.shape
    if (instances.image_height, instances.image_width) != image_size:
        raise ImageConversionError('size', f'semantic image is {image_size[1]}x{image_size[0]} but the instances '
                                           f'are of a {instances.image_width}x{instances.image_height} image')
    unknown = np.unique(class_ids[class_ids >= semantic_label_set.num_classes])
    unknown = unknown[unknown != semantic_label_set.ignore_id]
    if unknown.size:
        raise ImageConversionError('class_id', f'semantic class ids {unknown[:5].tolist()} are outside label set '
                                               f'{semantic_label_set.name!r} (0..{semantic_label_set.num_classes - 1},'
                                               f' ignore {semantic_label_set.ignore_id})')
    if instances.label_set != instance_label_set.name:
        raise ImageConversionError('label_set', f'instances are in label set {instances.label_set!r}, their '
                                                f'label_info announced {instance_label_set.name!r}')
    height, width = image_size
    for instance in instances.instances:
        box, mask = instance.box, instance.mask
        if instance.class_id >= instance_label_set.num_classes:
            raise ImageConversionError('class_id', f'instance class id {instance.class_id} is outside label set '
                                                   f'{instance_label_set.name!r} (0..'
                                                   f'{instance_label_set.num_classes - 1})')
        if box.x_offset + box.width > width or box.y_offset + box.height > height:
            raise ImageConversionError('box', f'instance box {box.width}x{box.height} at ({box.x_offset}, '
                                              f'{box.y_offset}) leaves the {width}x{height} image')
        if mask.encoding != 'mono8' or (mask.height, mask.width) != (box.height, box.width):
            raise ImageConversionError('mask', f'instance mask {mask.encoding} {mask.width}x{mask.height} is not '
                                               f'mono8 of its box {box.width}x{box.height}')
        image_msg_pixels(mask)  # step and data length
    return np.ascontiguousarray(class_ids), instances_from_msg(instances)
