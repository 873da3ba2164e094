"""What panoptic fusion costs beside the models, and what its answer weighs beside theirs.

    python -m seg_models.bench.panoptic_cost [--repeats 30] [--instances 20] [--no-model]

On a synthetic Cityscapes-size street frame (1024x2048: sky, buildings, vegetation, poles, road,
sidewalk, and objects with elliptic masks in their boxes, all above the score threshold), it prints
the median time of ``fuse_panoptic``, beside the median CPU time of one call of the default semantic
segmenter at that camera size (PyTorch backend): the Cityscapes network the fusion's classes need
(untrained weights, the same cost as trained ones) and the shipped CamVid demo model; and the bytes
of the panoptic answer (uint16 segment ids + segments) against those of the semantic image (uint8)
plus the instances' box-cropped uint8 masks.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Optional, Sequence

import numpy as np

from seg_models.configs import PanopticSettings
from seg_models.data.labels import LabelSet, get_label_set
from seg_models.panoptic.fusion import PanopticResult, fuse_panoptic, thing_class_map
from seg_models.segmenters.instance_postprocess import Instance, InstanceResult, box_roi

IMAGE_SIZE = (1024, 2048)
#: A segment's fields as a message packs them (id, class, kind, track, score, area, x y w h).
SEGMENT_FIELDS = np.dtype([('id', '<u4'), ('class_id', '<u2'), ('is_thing', 'u1'), ('track_id', '<u4'),
                           ('score', '<f4'), ('area', '<u4'), ('box', '<u4', 4)])
#: An instance's fields beside its mask (class, score, track, box x1y1x2y2, roi x y w h).
INSTANCE_FIELDS = np.dtype([('class_id', '<u2'), ('score', '<f4'), ('track_id', '<u4'), ('box', '<f4', 4),
                            ('roi', '<u4', 4)])


def street_scene(semantic_label_set: LabelSet, instance_label_set: LabelSet, count: int,
                 seed: int = 0) -> tuple[np.ndarray, InstanceResult]:
    """(semantic class ids, instances) of a synthetic street frame at ``IMAGE_SIZE``; every thing
    pixel of the semantic image lies under an instance, as a model pair would roughly agree."""
    rng = np.random.default_rng(seed)
    height, width = IMAGE_SIZE
    ids = {name: semantic_label_set.names.index(name) for name in
           ('road', 'sidewalk', 'building', 'vegetation', 'pole', 'sky', 'traffic sign')}
    semantic = np.full(IMAGE_SIZE, ids['road'], np.uint8)
    semantic[:300] = ids['sky']
    semantic[300:520] = ids['building']
    semantic[250:520, 1500:1900] = ids['vegetation']
    semantic[520:640, :] = ids['sidewalk']
    for column in range(80, width, 260):
        semantic[200:640, column:column + 10] = ids['pole']
        semantic[200:230, column - 20:column + 30] = ids['traffic sign']
    instances = []
    for _ in range(count):
        box_height, box_width = int(rng.integers(40, 360)), int(rng.integers(40, 480))
        top, left = int(rng.integers(400, height - box_height)), int(rng.integers(0, width - box_width))
        box = np.array([left + 0.3, top + 0.6, left + box_width - 0.2, top + box_height - 0.7], np.float32)
        roi = box_roi(box, IMAGE_SIZE)
        rows, columns = np.ogrid[:roi[3], :roi[2]]
        mask = ((rows - roi[3] / 2) / (roi[3] / 2)) ** 2 + ((columns - roi[2] / 2) / (roi[2] / 2)) ** 2 < 1
        class_id = int(rng.integers(0, instance_label_set.num_classes))
        semantic_class = semantic_label_set.names.index(instance_label_set.names[class_id])
        semantic[roi[1]:roi[1] + roi[3], roi[0]:roi[0] + roi[2]][mask] = semantic_class
        instances.append(Instance(class_id, instance_label_set.names[class_id], float(rng.uniform(0.55, 0.99)),
                                  tuple(float(v) for v in box), roi, mask, track_id=int(rng.integers(0, 50))))
    instances.sort(key=lambda instance: -instance.score)
    return semantic, InstanceResult(IMAGE_SIZE, instances)


def median_seconds(call, repeats: int) -> float:
    """Median wall time of ``call`` over ``repeats`` runs, after one warm-up."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def semantic_model_seconds(repeats: int, shipped_demo: bool) -> tuple[float, str]:
    """Median time of one CPU call of the default semantic segmenter on a camera frame of
    ``IMAGE_SIZE``, and what was measured: with the shipped demo model (CamVid, a small network
    input) or, as the fusion's Cityscapes classes need, without it (its weights untrained: the
    same cost as trained ones)."""
    from seg_models.checkpoints.model_card import DEMO_MODEL_ENV
    from seg_models.configs import BackendSettings, SemanticModelConfig
    from seg_models.segmenters.semantic import create_semantic_segmenter

    previous = os.environ.get(DEMO_MODEL_ENV)
    if not shipped_demo:
        os.environ[DEMO_MODEL_ENV] = ''  # documented: no demo model, the default network untrained
    try:
        segmenter = create_semantic_segmenter(SemanticModelConfig(deployment=BackendSettings(backend='pytorch',
                                                                                             device='cpu')))
    finally:
        if previous is None:
            os.environ.pop(DEMO_MODEL_ENV, None)
        else:
            os.environ[DEMO_MODEL_ENV] = previous
    frame = np.random.default_rng(1).integers(0, 256, (*IMAGE_SIZE, 3), dtype=np.uint8)
    seconds = median_seconds(lambda: segmenter.segment([frame]), repeats)
    weights = 'the shipped demo model' if shipped_demo else 'untrained weights'
    return seconds, (f'semantic model call (default segmenter, {segmenter.label_set.name}, PyTorch CPU, '
                     f'network input {segmenter.transform.input_size}, {weights})')


def answer_bytes(panoptic: PanopticResult, semantic: np.ndarray, instances: InstanceResult) -> tuple[int, int]:
    """(panoptic answer, semantic image + instance masks) in bytes, as messages would carry them."""
    panoptic_bytes = panoptic.segment_ids.astype(np.uint16).nbytes + len(panoptic.segments) * SEGMENT_FIELDS.itemsize
    mask_bytes = sum(instance.roi[2] * instance.roi[3] for instance in instances.instances)  # uint8 per pixel
    separate_bytes = (semantic.astype(np.uint8).nbytes + mask_bytes
                      + len(instances.instances) * INSTANCE_FIELDS.itemsize)
    return panoptic_bytes, separate_bytes


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=30, help='timed fusions (median)')
    parser.add_argument('--instances', type=int, default=20)
    parser.add_argument('--model-repeats', type=int, default=3, help='timed semantic model calls (median)')
    parser.add_argument('--no-model', action='store_true', help='time the fusion alone')
    args = parser.parse_args(argv)

    semantic_label_set, instance_label_set = get_label_set('cityscapes'), get_label_set('cityscapes_things')
    semantic, instances = street_scene(semantic_label_set, instance_label_set, args.instances)
    thing_map = thing_class_map(instance_label_set, semantic_label_set)
    settings = PanopticSettings()
    panoptic = fuse_panoptic(semantic, instances, thing_map, semantic_label_set, settings)
    fusion = median_seconds(lambda: fuse_panoptic(semantic, instances, thing_map, semantic_label_set, settings),
                            args.repeats)
    things = sum(segment.is_thing for segment in panoptic.segments)
    print(f'frame {IMAGE_SIZE[1]}x{IMAGE_SIZE[0]}, {len(instances.instances)} instances -> {things} thing and '
          f'{len(panoptic.segments) - things} stuff segments')
    print(f'fusion: {fusion * 1e3:.1f} ms per frame (median of {args.repeats})')
    if not args.no_model:
        for shipped_demo in (False, True):
            model, description = semantic_model_seconds(args.model_repeats, shipped_demo)
            print(f'{description}: {model * 1e3:.0f} ms (median of {args.model_repeats}); fusion is '
                  f'{100 * fusion / model:.1f}% of it')
    panoptic_bytes, separate_bytes = answer_bytes(panoptic, semantic, instances)
    print(f'panoptic answer: {panoptic_bytes} bytes (uint16 segment ids + {len(panoptic.segments)} segments of '
          f'{SEGMENT_FIELDS.itemsize} bytes); semantic uint8 image + box-cropped uint8 masks: {separate_bytes} bytes '
          f'(ratio {panoptic_bytes / separate_bytes:.2f})')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
