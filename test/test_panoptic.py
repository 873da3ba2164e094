"""Panoptic fusion (Panoptic FPN's rules, one by one, on hand-made frames) and panoptic quality
(cityscapesscripts' evaluation: ground truth as createPanopticImgs makes it, the ground-truth echo at
PQ 100, hand-computed RQ, exact merging)."""
import contextlib
import io
import json

import cv2
import numpy as np
import pytest
from shared_data import SHARED_DATA

from seg_models.bench.panoptic_quality import (FIRST_OBJECT_ID, component_instance_ids, frame_statistics, merge,
                                               panoptic_ground_truth, panoptic_scores, statistics,
                                               statistics_from_dict, statistics_to_dict)
from seg_models.configs import PanopticSettings
from seg_models.data.labels import LabelClass, LabelSet, cityscapes_label_id_to_train_id, get_label_set
from seg_models.panoptic.fusion import (PanopticResult, STUFF_SCORE, fuse_panoptic, scaled_stuff_area_limit,
                                        thing_class_map)
from seg_models.segmenters.instance_postprocess import Instance, InstanceResult

# cityscapes ids
ROAD, SIDEWALK, BUILDING, SKY, PERSON, CAR = 0, 1, 2, 10, 11, 13
IGNORE = 255
# cityscapes_things ids
THING_PERSON, THING_CAR = 0, 2


@pytest.fixture(scope='module')
def cityscapes():
    return get_label_set('cityscapes')


@pytest.fixture(scope='module')
def thing_map(cityscapes):
    return thing_class_map(get_label_set('cityscapes_things'), cityscapes)


def instance_of(full_mask: np.ndarray, class_id: int, score: float, track_id: int = 0) -> Instance:
    """An instance whose roi is the bounding box of ``full_mask`` (H, W) bool."""
    rows, columns = np.flatnonzero(full_mask.any(axis=1)), np.flatnonzero(full_mask.any(axis=0))
    x, y = int(columns[0]), int(rows[0])
    width, height = int(columns[-1]) + 1 - x, int(rows[-1]) + 1 - y
    return Instance(class_id, '', score, (float(x), float(y), float(x + width), float(y + height)),
                    (x, y, width, height), full_mask[y:y + height, x:x + width].copy(), track_id)


def rectangle(shape, top, left, bottom, right) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:bottom, left:right] = True
    return mask


def fused(semantic, instances, thing_map, cityscapes, **settings) -> PanopticResult:
    return fuse_panoptic(semantic, InstanceResult(semantic.shape, instances), thing_map, cityscapes,
                         PanopticSettings(**settings))


def segment_at(result: PanopticResult, row: int, column: int):
    segment_id = int(result.segment_ids[row, column])
    return next((segment for segment in result.segments if segment.id == segment_id), None)


# --- fusion ---------------------------------------------------------------------------------------------------

def test_instances_go_in_score_order_whatever_their_order_in_the_list(cityscapes, thing_map):
    semantic = np.full((8, 8), ROAD, np.uint8)
    low = instance_of(rectangle((8, 8), 0, 0, 4, 4), THING_PERSON, 0.6)
    high = instance_of(rectangle((8, 8), 0, 0, 4, 6), THING_CAR, 0.9)
    result = fused(semantic, [low, high], thing_map, cityscapes)
    first = result.segments[0]
    assert (first.id, first.class_id, first.score, first.area) == (1, CAR, pytest.approx(0.9), 24)
    assert segment_at(result, 1, 1).class_id == CAR  # the car took the shared pixels
    # The person is 16 pixels, all of them taken (more than half): skipped.
    assert [segment.class_id for segment in result.segments if segment.is_thing] == [CAR]


def test_an_instance_more_than_the_overlap_threshold_taken_is_skipped_otherwise_takes_its_free_pixels(
        cityscapes, thing_map):
    semantic = np.full((10, 10), ROAD, np.uint8)
    first = instance_of(rectangle((10, 10), 0, 0, 10, 4), THING_CAR, 0.9)
    # 10 pixels wide rows 0-1: 4 of 10 per row taken (40%) -> kept with its 12 free pixels
    kept = instance_of(rectangle((10, 10), 0, 0, 2, 10), THING_PERSON, 0.8)
    # rows 4-5, columns 0-4: 4 of 5 per row taken (80%) -> skipped
    skipped = instance_of(rectangle((10, 10), 4, 0, 6, 5), THING_PERSON, 0.7)
    result = fused(semantic, [first, kept, skipped], thing_map, cityscapes)
    things = [segment for segment in result.segments if segment.is_thing]
    assert [(segment.class_id, segment.area) for segment in things] == [(CAR, 40), (PERSON, 12)]
    person = things[1]
    assert np.count_nonzero(result.segment_ids == person.id) == 12
    assert person.box == (4, 0, 6, 2)  # the box of the pixels it took, not of its mask
    assert segment_at(result, 5, 4).class_id == ROAD  # the skipped one's free pixel stayed road

    # At a threshold of 0.9 the 80% one is kept too, with its 2 free pixels.
    result = fused(semantic, [first, kept, skipped], thing_map, cityscapes, overlap_threshold=0.9)
    assert [segment.area for segment in result.segments if segment.is_thing] == [40, 12, 2]


def test_instances_below_the_score_threshold_are_left_out(cityscapes, thing_map):
    semantic = np.full((8, 8), ROAD, np.uint8)
    at = instance_of(rectangle((8, 8), 0, 0, 2, 2), THING_CAR, 0.5)
    below = instance_of(rectangle((8, 8), 4, 4, 6, 6), THING_CAR, 0.49)
    result = fused(semantic, [at, below], thing_map, cityscapes)
    assert [segment.score for segment in result.segments if segment.is_thing] == [0.5]
    assert fused(semantic, [at, below], thing_map, cityscapes, instance_score_threshold=0.4).segments[1].is_thing


def test_stuff_comes_from_the_semantic_result_on_what_instances_left(cityscapes, thing_map):
    semantic = np.full((6, 8), ROAD, np.uint8)
    semantic[:2] = SKY
    semantic[:, 6:] = SIDEWALK
    car = instance_of(rectangle((6, 8), 2, 0, 4, 3), THING_CAR, 0.9, track_id=7)
    result = fused(semantic, [car], thing_map, cityscapes)
    assert [(s.id, s.class_id, s.is_thing, s.area) for s in result.segments] == [
        (1, CAR, True, 6), (2, ROAD, False, 24 - 6), (3, SIDEWALK, False, 12), (4, SKY, False, 12)]
    road = result.segments[1]
    assert road.box == (0, 2, 6, 4) and road.score == STUFF_SCORE and road.track_id == 0
    assert result.segments[3].box == (0, 0, 6, 2)
    assert (result.segment_ids != 0).all()
    assert (result.class_ids(IGNORE)[2:4, :3] == CAR).all()
    assert result.segment_ids.dtype == np.uint16


def test_stuff_below_the_area_limit_scaled_to_the_camera_is_dropped(cityscapes, thing_map):
    # 64x128 is 1/256 of 1024x2048: the default 4096 pixels become 16.
    assert scaled_stuff_area_limit(PanopticSettings(), (64, 128)) == 16
    semantic = np.full((64, 128), ROAD, np.uint8)
    semantic[0, :16] = SKY  # 16 pixels: kept
    semantic[1, :15] = BUILDING  # 15 pixels: dropped, void
    result = fused(semantic, [], thing_map, cityscapes)
    assert sorted(segment.class_id for segment in result.segments) == [ROAD, SKY]
    assert (result.segment_ids[1, :15] == 0).all()
    # Instances take pixels before stuff is measured: a car on 2 sky pixels leaves 14, too few.
    car = instance_of(rectangle((64, 128), 0, 0, 1, 2), THING_CAR, 0.9)
    result = fused(semantic, [car], thing_map, cityscapes)
    assert SKY not in [segment.class_id for segment in result.segments]
    assert (result.segment_ids[0, 2:16] == 0).all()


def test_semantic_thing_pixels_no_instance_took_stay_void(cityscapes, thing_map):
    semantic = np.full((8, 8), ROAD, np.uint8)
    semantic[4:, 4:] = CAR  # 16 car pixels, an instance covers 4
    semantic[:2, :2] = PERSON  # no instance at all
    car = instance_of(rectangle((8, 8), 4, 4, 6, 6), THING_CAR, 0.9)
    result = fused(semantic, [car], thing_map, cityscapes)
    assert [s.class_id for s in result.segments] == [CAR, ROAD]
    assert (result.segment_ids[:2, :2] == 0).all()
    assert np.count_nonzero(result.segment_ids[4:, 4:] == 0) == 12
    assert not any(segment.class_id in (CAR, PERSON) and not segment.is_thing for segment in result.segments)


def test_semantic_ignore_pixels_stay_void_unless_an_instance_takes_them(cityscapes, thing_map):
    semantic = np.full((8, 8), ROAD, np.uint8)
    semantic[:, :3] = IGNORE
    semantic[0, 0] = 200  # an id outside the label set: void as well
    car = instance_of(rectangle((8, 8), 0, 2, 2, 4), THING_CAR, 0.9)  # half on ignore pixels
    result = fused(semantic, [car], thing_map, cityscapes)
    assert (result.segment_ids[2:, :3] == 0).all() and result.segment_ids[0, 0] == 0
    assert result.segments[0].area == 4 and (result.segment_ids[:2, 2] == 1).all()  # as Panoptic FPN
    assert result.segments[1].area == 64 - 24 - 2


def test_track_id_and_score_go_into_the_segments(cityscapes, thing_map):
    semantic = np.full((8, 8), ROAD, np.uint8)
    tracked = instance_of(rectangle((8, 8), 0, 0, 3, 3), THING_PERSON, 0.75, track_id=42)
    untracked = instance_of(rectangle((8, 8), 5, 5, 8, 8), THING_CAR, 0.95)
    result = fused(semantic, [tracked, untracked], thing_map, cityscapes)
    assert [(s.class_id, s.track_id, s.score, s.box) for s in result.segments if s.is_thing] == [
        (CAR, 0, 0.95, (5, 5, 3, 3)), (PERSON, 42, 0.75, (0, 0, 3, 3))]


def test_thing_classes_map_by_name_and_a_class_without_a_thing_namesake_is_refused(cityscapes):
    lookup = thing_class_map(get_label_set('cityscapes_things'), cityscapes)
    assert [cityscapes.names[class_id] for class_id in lookup] == get_label_set('cityscapes_things').names
    assert lookup.tolist() == [11, 12, 13, 14, 15, 16, 17, 18]
    with pytest.raises(ValueError, match=r"^panoptic fusion needs .*'coco_things' class 'airplane' has no class of "
                                         r"that name \(and 72 more classes\) in 'cityscapes'$"):
        thing_class_map(get_label_set('coco_things'), cityscapes)
    sky_things = LabelSet('sky_things', (LabelClass(0, 'car', (0, 0, 0), True), LabelClass(1, 'sky', (0, 0, 0), True)))
    with pytest.raises(ValueError, match=r"class 'sky' has 'sky' as a stuff class in 'cityscapes'"):
        thing_class_map(sky_things, cityscapes)


def test_fusion_refuses_inputs_that_do_not_fit(cityscapes, thing_map):
    semantic = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match='instances are of a'):
        fuse_panoptic(semantic, InstanceResult((8, 9)), thing_map, cityscapes)
    with pytest.raises(ValueError, match='must be an'):
        fuse_panoptic(semantic.astype(np.float32), InstanceResult((8, 8)), thing_map, cityscapes)


# --- panoptic quality -----------------------------------------------------------------------------------------

def synthetic_frame(cityscapes):
    """(semantic ids, Cityscapes-style instance ids) of a 64x96 scene: sky, building, road, sidewalk,
    two cars, two persons, and a crowd of persons (person pixels without an object id)."""
    semantic = np.full((64, 96), ROAD, np.uint8)
    semantic[:16] = SKY
    semantic[16:32] = BUILDING
    semantic[56:, :40] = SIDEWALK
    semantic[60:, 90:] = IGNORE
    instance_ids = semantic.astype(np.uint16)  # stuff: its class (below FIRST_OBJECT_ID)
    objects = [(CAR, (34, 4, 46, 30)), (CAR, (36, 40, 50, 70)), (PERSON, (24, 74, 44, 80)), (PERSON, (26, 82, 44, 88))]
    for index, (class_id, (top, left, bottom, right)) in enumerate(objects):
        semantic[top:bottom, left:right] = class_id
        instance_ids[top:bottom, left:right] = 26000 + index
    semantic[2:8, 2:20] = PERSON  # a crowd
    instance_ids[2:8, 2:20] = 24
    return semantic, instance_ids


def ground_truth_instances(semantic, instance_ids) -> InstanceResult:
    """The ground truth's objects as a perfect instance segmenter would give them (class ids in the
    semantic label set: fused with an identity thing map)."""
    instances = []
    for object_id in np.unique(instance_ids[instance_ids >= FIRST_OBJECT_ID]):
        mask = instance_ids == object_id
        instances.append(instance_of(mask, int(semantic[mask][0]), 1.0))
    return InstanceResult(semantic.shape, instances)


def echo(semantic, instance_ids, label_set, settings=PanopticSettings(stuff_area_limit=0)) -> PanopticResult:
    """The perfect predictor: ground truth semantics and objects fused."""
    return fuse_panoptic(semantic, ground_truth_instances(semantic, instance_ids),
                         np.arange(label_set.num_classes), label_set, settings)


def test_ground_truth_is_made_as_create_panoptic_imgs_makes_it(tmp_path):
    """Our segments of a Cityscapes-style frame equal convert2panoptic's (trainIds): class, crowd, area."""
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic
    from PIL import Image

    instance_ids = np.full((40, 60), 7, np.uint16)  # road
    instance_ids[:10] = 23  # sky
    instance_ids[10:14] = 0  # unlabeled: void
    instance_ids[36:, :8] = 1  # ego vehicle: void
    instance_ids[20:30, 5:15] = 26000  # car objects
    instance_ids[20:30, 20:28] = 26001
    instance_ids[15:19, 30:50] = 24  # a crowd of persons
    instance_ids[25:35, 40:45] = 24002  # a person object
    instance_ids[31:35, 50:58] = 29000  # a caravan: a thing not evaluated, void
    label_ids = np.where(instance_ids >= 1000, instance_ids // 1000, instance_ids).astype(np.uint8)
    folder = tmp_path / 'gtFine' / 'val' / 'city'
    folder.mkdir(parents=True)
    Image.fromarray(instance_ids).save(folder / 'city_000000_000000_gtFine_instanceIds.png')
    with contextlib.redirect_stdout(io.StringIO()):
        convert2panoptic(str(tmp_path / 'gtFine'), str(tmp_path), useTrainId=True, setNames=['val'])
    official = json.loads((tmp_path / 'cityscapes_panoptic_val_trainId.json').read_text())['annotations'][0]
    expected = sorted((s['category_id'], s['iscrowd'], s['area']) for s in official['segments_info'])

    ground_truth = panoptic_ground_truth(cityscapes_label_id_to_train_id()[label_ids], instance_ids,
                                         get_label_set('cityscapes'))
    assert sorted((s.class_id, int(s.is_crowd), s.area) for s in ground_truth.segments) == expected
    assert np.count_nonzero(ground_truth.segment_ids == 0) == 4 * 60 + 4 * 8 + 4 * 8
    for segment in ground_truth.segments:
        assert np.count_nonzero(ground_truth.segment_ids == segment.id) == segment.area


def test_the_ground_truth_echo_scores_pq_100_on_a_synthetic_frame(cityscapes):
    semantic, instance_ids = synthetic_frame(cityscapes)
    ground_truth = panoptic_ground_truth(semantic, instance_ids, cityscapes)
    assert sum(segment.is_crowd for segment in ground_truth.segments) == 1
    for settings in (PanopticSettings(), PanopticSettings(stuff_area_limit=0)):  # no stuff here is small
        scores = panoptic_scores(frame_statistics(ground_truth, echo(semantic, instance_ids, cityscapes, settings),
                                                  cityscapes), cityscapes)
        for group, count in (('all', 6), ('things', 2), ('stuff', 4)):
            assert scores[group] == {'pq': 1.0, 'sq': 1.0, 'rq': 1.0, 'n': count}
    assert scores['per_class']['car'] == {'pq': 1.0, 'sq': 1.0, 'rq': 1.0, 'tp': 2, 'fp': 0, 'fn': 0}
    assert scores['per_class']['truck'] is None


@pytest.mark.skipif(not (SHARED_DATA / 'camvid' / 'valannot').is_dir(), reason='no ../shared/data/camvid')
def test_the_ground_truth_echo_scores_pq_100_on_a_camvid_frame():
    camvid = get_label_set('camvid')
    assert [label.name for label in camvid.classes if label.is_thing] == ['Car', 'Pedestrian', 'Bicyclist']
    path = sorted((SHARED_DATA / 'camvid' / 'valannot').glob('*.png'))[0]
    semantic = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    instance_ids = component_instance_ids(semantic, camvid)
    assert (instance_ids >= FIRST_OBJECT_ID).any()
    ground_truth = panoptic_ground_truth(semantic, instance_ids, camvid)
    scores = panoptic_scores(frame_statistics(ground_truth, echo(semantic, instance_ids, camvid), camvid), camvid)
    assert scores['all']['n'] >= 5 and scores['things']['n'] >= 1
    for group in ('all', 'things', 'stuff'):
        assert (scores[group]['pq'], scores[group]['sq'], scores[group]['rq']) == (1.0, 1.0, 1.0)


def perturbed(semantic, instance_ids, cityscapes) -> PanopticResult:
    """The echo without the second car (its pixels void: a car pixel never becomes stuff)."""
    instances = ground_truth_instances(semantic, instance_ids)
    del instances.instances[1]
    return fuse_panoptic(semantic, instances, np.arange(cityscapes.num_classes), cityscapes)


def test_a_dropped_thing_costs_the_hand_computed_recognition_quality(cityscapes):
    semantic, instance_ids = synthetic_frame(cityscapes)
    ground_truth = panoptic_ground_truth(semantic, instance_ids, cityscapes)
    scores = panoptic_scores(frame_statistics(ground_truth, perturbed(semantic, instance_ids, cityscapes), cityscapes),
                             cityscapes)
    # car: 1 tp, 1 fn -> RQ 1 / (1 + 0.5) = 2/3; person: 2 tp -> 1. Things: the mean.
    assert scores['per_class']['car'] == {'pq': pytest.approx(2 / 3), 'sq': 1.0, 'rq': pytest.approx(2 / 3),
                                          'tp': 1, 'fp': 0, 'fn': 1}
    assert scores['things']['rq'] == pytest.approx((2 / 3 + 1) / 2)
    assert scores['things']['pq'] == pytest.approx((2 / 3 + 1) / 2) and scores['things']['sq'] == 1.0
    assert scores['stuff'] == {'pq': 1.0, 'sq': 1.0, 'rq': 1.0, 'n': 4}
    assert scores['all']['pq'] == pytest.approx((2 / 3 + 5) / 6)


def test_predictions_on_void_or_crowd_are_no_false_positives_but_elsewhere_are(cityscapes):
    semantic, instance_ids = synthetic_frame(cityscapes)
    ground_truth = panoptic_ground_truth(semantic, instance_ids, cityscapes)
    instances = ground_truth_instances(semantic, instance_ids)
    on_crowd = instance_of(rectangle(semantic.shape, 2, 2, 8, 12), PERSON, 0.9)  # inside the person crowd
    on_void = instance_of(rectangle(semantic.shape, 60, 90, 64, 96), CAR, 0.9)  # on ignore pixels
    on_road = instance_of(rectangle(semantic.shape, 50, 60, 56, 70), CAR, 0.9)  # a car that is not there
    instances.instances += [on_crowd, on_void, on_road]
    prediction = fuse_panoptic(semantic, instances, np.arange(cityscapes.num_classes), cityscapes)
    scores = panoptic_scores(frame_statistics(ground_truth, prediction, cityscapes), cityscapes)
    assert scores['per_class']['person']['fp'] == 0
    assert scores['per_class']['car']['fp'] == 1


def test_merged_statistics_of_two_frames_equal_one_evaluation_of_both(cityscapes):
    semantic, instance_ids = synthetic_frame(cityscapes)
    ground_truth = panoptic_ground_truth(semantic, instance_ids, cityscapes)
    frames = [(ground_truth, echo(semantic, instance_ids, cityscapes)),
              (ground_truth, perturbed(semantic, instance_ids, cityscapes))]
    together = statistics(frames, cityscapes)
    merged = merge([statistics(frames[:1], cityscapes), statistics_from_dict(
        json.loads(json.dumps(statistics_to_dict(statistics(frames[1:], cityscapes)))))])  # as a bag keeps it
    assert statistics_to_dict(merged) == statistics_to_dict(together)
    assert panoptic_scores(merged, cityscapes) == panoptic_scores(together, cityscapes)
    car = statistics_to_dict(together)[str(CAR)]
    assert (car['tp'], car['fn'], car['fp']) == (3, 1, 0)


def test_scores_of_no_frames_are_none():
    scores = panoptic_scores(merge([]), get_label_set('camvid'))
    assert scores['all'] == {'pq': None, 'sq': None, 'rq': None, 'n': 0}
    assert scores['per_class']['Car'] is None
