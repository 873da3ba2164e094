"""One frame's semantic class ids and instances fused into a panoptic result, as Panoptic FPN does it
(detectron2's ``combine_semantic_and_instance_outputs``).

Instances go first, highest score first, down to the score threshold; an instance more than the
overlap threshold of which is already taken is skipped, otherwise it takes its free pixels. Stuff
classes of the semantic result then fill what is left, each class one segment, dropped below the
least area. Unlike detectron2's semantic head (one "thing" class), the semantic result here names
thing classes; its thing pixels that no instance took stay void, as do its ignore pixels: a pixel
becomes stuff only where the semantic result says stuff.

Cost: each instance is handled inside its roi window; the full frame is touched a few times in all
(class lookup, one histogram for stuff areas and rows, one for columns, the final ids).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seg_models.configs import PanopticSettings
from seg_models.data.labels import LabelSet
from seg_models.segmenters.instance_postprocess import InstanceResult

#: The camera size (height x width) ``PanopticSettings.stuff_area_limit`` is given for: Cityscapes',
#: at which detectron2's Panoptic FPN defaults were chosen.
STUFF_AREA_REFERENCE_PIXELS = 1024 * 2048
#: Score of a stuff segment: the semantic result carries none per segment.
STUFF_SCORE = 1.0
VOID = 0  # segment id of pixels in no segment


@dataclass
class PanopticSegment:
    """One segment of a panoptic result."""

    id: int  # value of its pixels in ``PanopticResult.segment_ids`` (1, 2, ...)
    class_id: int  # in the semantic label set
    is_thing: bool
    track_id: int  # the instance's track id (0: not tracked, and for stuff)
    score: float  # the instance's score; STUFF_SCORE for stuff
    area: int  # pixels
    box: tuple[int, int, int, int]  # x, y, width, height of its pixels


@dataclass
class PanopticResult:
    """Every pixel's segment (0: void) and what each segment is."""

    segment_ids: np.ndarray  # (H, W) uint16, int32 when there could be more segments than uint16 holds
    segments: list[PanopticSegment] = field(default_factory=list)

    def class_ids(self, ignore_id: int) -> np.ndarray:
        """(H, W) int64 class id of each pixel's segment, ``ignore_id`` for void: e.g. to draw it."""
        lookup = np.full(max((segment.id for segment in self.segments), default=0) + 1, ignore_id, np.int64)
        for segment in self.segments:
            lookup[segment.id] = segment.class_id
        return lookup[self.segment_ids]


def thing_class_map(instance_label_set: LabelSet, semantic_label_set: LabelSet) -> np.ndarray:
    """Lookup instance class id -> semantic class id of the same name, (N,) int64
    (cityscapes_things' 'car' -> cityscapes' 'car'); refused in one line where a class has no thing
    namesake, since its instances and the semantic result could then not agree on a pixel."""
    semantic_classes = {label.name: label for label in semantic_label_set.classes}
    lookup = np.full(instance_label_set.num_classes, -1, np.int64)
    problems = []
    for label in instance_label_set.classes:
        namesake = semantic_classes.get(label.name)
        if namesake is None or not namesake.is_thing:
            problems.append(f'class {label.name!r} has ' +
                            ('no class of that name' if namesake is None else f'{label.name!r} as a stuff class'))
        else:
            lookup[label.id] = namesake.id
    if problems:
        more = f' (and {len(problems) - 1} more classes)' if len(problems) > 1 else ''
        raise ValueError(f'panoptic fusion needs every instance class as a thing class of the semantic label set: '
                         f'{instance_label_set.name!r} {problems[0]}{more} in {semantic_label_set.name!r}')
    return lookup


def scaled_stuff_area_limit(settings: PanopticSettings, image_size: tuple[int, int]) -> float:
    """Least stuff segment area at a camera of ``image_size`` (height, width): the setting is for
    1024x2048 pixels, and a region covers the same share of the view at any resolution."""
    height, width = image_size
    return settings.stuff_area_limit * height * width / STUFF_AREA_REFERENCE_PIXELS


def fuse_panoptic(semantic_ids: np.ndarray, instances: InstanceResult, thing_map: np.ndarray,
                  semantic_label_set: LabelSet, settings: PanopticSettings = PanopticSettings()) -> PanopticResult:
    """The panoptic result of one frame from its semantic class ids (H, W) in ``semantic_label_set``
    and its instances (``thing_map``: ``thing_class_map`` of their label set). Instance segments come
    first (ids 1.. in score order), then stuff segments in class-id order."""
    if semantic_ids.ndim != 2 or not np.issubdtype(semantic_ids.dtype, np.integer):
        raise ValueError(f'semantic class ids must be an (H, W) integer image, got {semantic_ids.dtype} '
                         f'{semantic_ids.shape}')
    image_size = semantic_ids.shape
    if tuple(instances.image_size) != image_size:
        raise ValueError(f'instances are of a {instances.image_size} image, semantic ids of {image_size}')
    num_classes = semantic_label_set.num_classes
    most_segments = len(instances.instances) + num_classes
    segment_ids = np.zeros(image_size, np.uint16 if most_segments <= np.iinfo(np.uint16).max else np.int32)
    # Stuff class of each pixel, ``num_classes`` where none (thing, ignore, unknown id, taken by an instance).
    stuff_classes = _stuff_lookup(semantic_label_set, semantic_ids)[semantic_ids]
    segments = _place_instances(instances, thing_map, settings, segment_ids, stuff_classes, num_classes)
    segments += _place_stuff(stuff_classes, num_classes, scaled_stuff_area_limit(settings, image_size),
                             segment_ids, first_id=len(segments) + 1)
    return PanopticResult(segment_ids, segments)


def _stuff_lookup(label_set: LabelSet, semantic_ids: np.ndarray) -> np.ndarray:
    """Table semantic id -> itself for stuff classes, ``num_classes`` for anything else, sized for
    every value of ``semantic_ids``."""
    if np.issubdtype(semantic_ids.dtype, np.signedinteger) and semantic_ids.size and semantic_ids.min() < 0:
        raise ValueError('semantic class ids must not be negative')
    small = semantic_ids.dtype.itemsize <= 2
    size = np.iinfo(semantic_ids.dtype).max + 1 if small else int(semantic_ids.max(initial=0)) + 1
    lookup = np.full(max(size, label_set.num_classes), label_set.num_classes, np.uint8 if label_set.num_classes < 255
                     else np.uint16)
    for label in label_set.classes:
        if not label.is_thing:
            lookup[label.id] = label.id
    return lookup


def _place_instances(instances: InstanceResult, thing_map: np.ndarray, settings: PanopticSettings,
                     segment_ids: np.ndarray, stuff_classes: np.ndarray, no_stuff: int) -> list[PanopticSegment]:
    """Write the kept instances' free pixels into ``segment_ids`` (and clear them in
    ``stuff_classes``), each within its roi window."""
    ranked = sorted(instances.instances, key=lambda instance: -instance.score)  # stable: ties keep their order
    segments: list[PanopticSegment] = []
    for instance in ranked:
        if instance.score < settings.instance_score_threshold:
            break
        x, y, width, height = instance.roi
        mask = np.asarray(instance.mask, dtype=bool)
        if mask.shape != (height, width):
            raise ValueError(f'instance mask {mask.shape} does not fit its roi {instance.roi}')
        area = int(np.count_nonzero(mask))
        if area == 0:
            continue
        window = segment_ids[y:y + height, x:x + width]
        taken = mask & (window != VOID)
        taken_area = int(np.count_nonzero(taken))
        if taken_area > settings.overlap_threshold * area or taken_area == area:
            continue
        free = mask ^ taken if taken_area else mask
        segment_id = len(segments) + 1
        window[free] = segment_id
        stuff_classes[y:y + height, x:x + width][free] = no_stuff
        rows, columns = np.flatnonzero(free.any(axis=1)), np.flatnonzero(free.any(axis=0))
        box = (x + int(columns[0]), y + int(rows[0]), int(columns[-1] - columns[0]) + 1, int(rows[-1] - rows[0]) + 1)
        segments.append(PanopticSegment(segment_id, int(thing_map[instance.class_id]), True, int(instance.track_id),
                                        float(instance.score), area - taken_area, box))
    return segments


def _place_stuff(stuff_classes: np.ndarray, no_stuff: int, least_area: float, segment_ids: np.ndarray,
                 first_id: int) -> list[PanopticSegment]:
    """One segment per stuff class with at least ``least_area`` pixels left, added to ``segment_ids``
    (whose pixels left to stuff are void). Areas and boxes come from two histograms over the frame:
    (row, class) and (column, class) pixel counts."""
    height, width = stuff_classes.shape
    bins = no_stuff + 1
    per_row = np.bincount((stuff_classes + np.arange(0, height * bins, bins, dtype=np.int32)[:, None]).ravel(),
                          minlength=height * bins).reshape(height, bins)[:, :no_stuff]
    areas = per_row.sum(axis=0)
    kept = np.flatnonzero((areas >= least_area) & (areas > 0))
    if kept.size == 0:
        return []
    per_column = np.bincount((stuff_classes + np.arange(0, width * bins, bins, dtype=np.int32)[None, :]).ravel(),
                             minlength=width * bins).reshape(width, bins)[:, kept]
    segment_of_class = np.zeros(bins, segment_ids.dtype)
    segment_of_class[kept] = np.arange(first_id, first_id + kept.size)
    segment_ids += segment_of_class[stuff_classes]  # those pixels are void so far
    segments = []
    for position, class_id in enumerate(kept.tolist()):
        rows, columns = np.flatnonzero(per_row[:, class_id]), np.flatnonzero(per_column[:, position])
        box = (int(columns[0]), int(rows[0]), int(columns[-1] - columns[0]) + 1, int(rows[-1] - rows[0]) + 1)
        segments.append(PanopticSegment(first_id + position, class_id, False, 0, STUFF_SCORE, int(areas[class_id]),
                                        box))
    return segments
