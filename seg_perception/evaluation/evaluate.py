"""Evaluate a result bag (from ``replay``) against the ground truth it carries.

Frames are matched by header stamp. Semantic: Cityscapes ground truth with Cityscapes predictions
goes through cityscapesscripts' official pixel-level evaluation (trainIds mapped to labelIds);
every label set also gets the independent confusion-matrix path (other sets: CamVid, Mapillary,
or Cityscapes predictions mapped onto CamVid classes). Instances: cityscapesscripts' official
instance-level evaluation (AP, AP50). Panoptic quality (where the bag has semantic and instance ground
truth): cityscapesscripts' evalPanopticSemanticLabeling on the recorded segmentation/panoptic, or,
without it, on the fusion of the recorded semantic and instance predictions of each stamp. Tracking
(where the bag's instance ids persist across frames): TrackEval's HOTA, CLEAR and Identity on the
instances' track ids, one sequence per camera. Latency: output arrival minus camera publication, per output
topic; dropped frames: frames without an output, and each node's own count from /diagnostics.

Several cameras: each camera is evaluated on its own topics (``topics.camera_bag_topics``), and
the results of all of them are combined: confusion matrices summed, the official evaluations run
over every camera's frames, frame counts and latencies side by side.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from tqdm import tqdm

from seg_models.bench.panoptic_quality import (frame_statistics, merge, panoptic_ground_truth, panoptic_scores,
                                               statistics_from_dict, statistics_to_dict)
from seg_models.bench.tracking_metrics import (TrackedObject, encoded_mask, merge_tracking_stats,
                                               sequence_tracking_stats, tracking_scores)
from seg_models.data.labels import LabelSet, get_label_set, label_set_lookup
from seg_models.panoptic.fusion import PanopticResult, fuse_panoptic, thing_class_map
from seg_models.segmenters.instance_postprocess import InstanceResult
from seg_perception.evaluation.bag_io import BagError, cameras_in_bag, read_messages, require_topics, topic_listing
from seg_models.data.datasets import CITYSCAPES_LABEL_IDS, GroundTruthInfo
from seg_perception.evaluation.ground_truth import (class_ids_of_ground_truth, ground_truth_label_set,
                                                    has_cityscapes_instances, instances_of)
from seg_models.bench.metrics import CityscapesFiles, confusion_matrix, latency_summary, scores_from_confusion
from seg_perception.messages.images import compressed_msg_to_rgb, image_msg_to_rgb, output_msg_to_array
from seg_perception.messages.instances import instances_from_msg
from seg_perception.messages.label_info import label_set_from_msg
from seg_perception.messages.panoptic import panoptic_from_msg
from seg_perception.messages.topics import (COMPRESSED_SUFFIX, DIAGNOSTICS, GROUND_TRUTH_INFO, LABEL_INFO_SUFFIX,
                                            REPLAY_SUMMARY, CameraBagTopics, stamp_key)
from seg_perception.runtime.diagnostics import status_values

OVERLAY_FRAMES = 3

Key = tuple[int, int]


@dataclass
class BagContents:
    """What the evaluation needs from a result bag, read in one pass (images kept only as needed)."""

    info: Optional[GroundTruthInfo] = None
    published_ns: dict[Key, int] = field(default_factory=dict)  # camera frame -> when replay published it
    label_sets: dict[str, LabelSet] = field(default_factory=dict)  # prediction topic -> its label set
    arrivals_ns: dict[str, dict[Key, int]] = field(default_factory=dict)  # prediction topic -> arrival times
    node_status: dict[str, dict[str, str]] = field(default_factory=dict)  # status name -> last /diagnostics values
    replay: dict = field(default_factory=dict)
    overlay_frames: dict[Key, np.ndarray] = field(default_factory=dict)  # a few camera frames for the report
    overlay_outputs: dict[Key, dict[str, Any]] = field(default_factory=dict)  # their predictions and truth


def tracked_objects(result: InstanceResult) -> list[TrackedObject]:
    """``result``'s instances as TrackEval's objects: track id, class id, full-frame mask as RLE
    (a bag's whole sequence waits in memory until it is scored)."""
    return [TrackedObject(instance.track_id, instance.class_id, encoded_mask(result.full_frame_mask(instance)))
            for instance in result.instances]


def panoptic_in_label_set(result: PanopticResult, lookup: np.ndarray, num_classes: int) -> PanopticResult:
    """``result`` with its classes mapped through ``lookup`` (``label_set_lookup``); segments of
    classes the target lacks become void."""
    kept = [segment for segment in result.segments if lookup[segment.class_id] < num_classes]
    keep = np.zeros(max((segment.id for segment in result.segments), default=0) + 1, bool)
    keep[[segment.id for segment in kept]] = True
    segments = [dataclasses.replace(segment, class_id=int(lookup[segment.class_id])) for segment in kept]
    return PanopticResult(np.where(keep[result.segment_ids], result.segment_ids, 0), segments)


class PanopticTrackingScores:
    """One camera's panoptic match statistics and tracking sequence, added frame by frame: the
    scoring ``evaluate`` and the fleet's workers share, so both score alike. Panoptic classes are
    the semantic ground truth's (``ground_truth_label_set``); instances map into them by name."""

    def __init__(self, info: GroundTruthInfo, instance_label_set: LabelSet) -> None:
        self.info, self.instance_label_set = info, instance_label_set
        self.label_set = ground_truth_label_set(info.label_set)
        self.source = ''  # how the panoptic predictions were made, for the report
        self.skipped = ''  # why panoptic quality is not scored
        self.thing_map: Optional[np.ndarray] = None
        try:
            self.thing_map = thing_class_map(instance_label_set, self.label_set)
        except ValueError as error:
            self.skipped = f'panoptic quality not scored: {error}'
        self.panoptic = None  # PQStat over the frames added
        self.panoptic_frames = 0
        self.truth_tracks: dict[Key, list[TrackedObject]] = {}
        self.predicted_tracks: dict[Key, list[TrackedObject]] = {}

    def fused(self, semantic_ids: np.ndarray, instances: InstanceResult) -> Optional[PanopticResult]:
        """The panoptic prediction fused from class ids in ``label_set`` and instances (None where
        the instance classes have no thing namesake)."""
        if self.thing_map is None:
            return None
        self.source = self.source or 'fused from the semantic and instance predictions (PanopticSettings defaults)'
        return fuse_panoptic(semantic_ids, instances, self.thing_map, self.label_set)

    def add_panoptic(self, semantic_truth: np.ndarray, instance_truth: np.ndarray, prediction: PanopticResult) -> None:
        """One frame's match statistics, against ground truth made as createPanopticImgs makes it."""
        truth = panoptic_ground_truth(class_ids_of_ground_truth(semantic_truth, self.info.label_set), instance_truth,
                                      self.label_set)
        stat = frame_statistics(truth, prediction, self.label_set)
        self.panoptic = stat if self.panoptic is None else merge([self.panoptic, stat])
        self.panoptic_frames += 1

    def add_tracks(self, key: Key, instance_truth: np.ndarray, predictions: InstanceResult) -> None:
        """One frame of the sequence, where the ground truth's ids persist (each id >= 1000 an object)."""
        if self.info.instance_ids_persist:
            self.truth_tracks[key] = tracked_objects(instances_of(instance_truth, self.instance_label_set, True))
            self.predicted_tracks[key] = tracked_objects(predictions)

    def as_json(self) -> dict:
        """The statistics, which merge exactly over cameras and bags (``panoptic_tracking_results``)."""
        entry: dict[str, Any] = {}
        if self.panoptic_frames:
            entry['panoptic'] = {'frames': self.panoptic_frames, 'label_set': self.label_set.name,
                                 'source': self.source, 'statistics': statistics_to_dict(self.panoptic)}
        elif self.skipped:
            entry['panoptic_skipped'] = self.skipped
        if self.truth_tracks:
            keys = sorted(self.truth_tracks)  # stamp order
            entry['tracking'] = {'frames': len(keys), 'statistics': sequence_tracking_stats(
                [self.truth_tracks[key] for key in keys], [self.predicted_tracks[key] for key in keys])}
        return entry


def panoptic_tracking_results(entries: Sequence[dict]) -> dict:
    """PQ, SQ, RQ and tracking scores of the statistics of any number of cameras and bags
    (``PanopticTrackingScores.as_json``): statistics merged exactly, then scored once."""
    results: dict[str, Any] = {}
    panoptic = [entry['panoptic'] for entry in entries if 'panoptic' in entry]
    if panoptic:
        stat = merge(statistics_from_dict(part['statistics']) for part in panoptic)
        results['panoptic'] = {'frames': sum(part['frames'] for part in panoptic),
                               'label_set': panoptic[0]['label_set'], 'source': panoptic[0]['source'],
                               **panoptic_scores(stat, get_label_set(panoptic[0]['label_set'])),
                               'statistics': statistics_to_dict(stat)}
    skipped = [entry['panoptic_skipped'] for entry in entries if 'panoptic_skipped' in entry]
    if skipped and not panoptic:
        results['panoptic_skipped'] = skipped[0]
    tracking = [entry['tracking'] for entry in entries if 'tracking' in entry]
    if tracking:
        stats = merge_tracking_stats([part['statistics'] for part in tracking])
        results['tracking'] = {'frames': sum(part['frames'] for part in tracking), 'sequences': len(tracking),
                               **tracking_scores(stats), 'statistics': stats}
    return results


def frame_name(frame_prefix: str, key: Key) -> str:
    """A frame's file name stem: the camera's prefix and the stamp (shared by a frame's topics)."""
    return f'{frame_prefix}_{key[0]}_{key[1]:09d}'


class Evaluation:
    """One camera of a result bag: its predictions scored against its ground truth. ``cityscapes``
    is shared by every camera of the bag (frame names carry the camera's prefix)."""

    def __init__(self, bag: Path, camera: CameraBagTopics, cityscapes: CityscapesFiles) -> None:
        self.bag, self.topics = bag, camera
        available = require_topics(bag, [])
        if not any(topic in available for topic in camera.predictions):
            raise BagError(f'result bag {bag} lacks {" or ".join(camera.predictions)} (made by `seg_bag replay`?); '
                           f'it has:\n{topic_listing(available)}')
        self.camera_topic = camera.camera
        # The panoptic node's output, where the bag recorded it (replay --panoptic).
        self.panoptic_topic = camera.panoptic_prediction if camera.panoptic_prediction in available else None
        # What a frame needs before its panoptic quality and tracking are scored (see _score_scenes).
        self.scene_parts_needed = {'semantic_truth', 'instance_truth', 'instances'} | (
            {'panoptic'} if self.panoptic_topic else {'semantic'} if camera.semantic_prediction in available else set())
        self.scene_parts: dict[Key, dict[str, Any]] = {}
        self.scene: Optional[PanopticTrackingScores] = None
        self._scene_statistics: Optional[dict] = None
        frames = available[self.camera_topic][1]
        self.overlay_indices = set(np.linspace(0, frames - 1, min(OVERLAY_FRAMES, frames)).round().astype(int))
        self.contents = BagContents()
        self.ground_truth: dict[Key, np.ndarray] = {}  # semantic ground truth waiting for its prediction
        self.semantic_predictions: dict[Key, np.ndarray] = {}
        self.latest_semantic: Optional[Key] = None  # the newest frame with a semantic prediction
        self.instance_predictions: dict[Key, InstanceResult] = {}
        self.confusion: Optional[np.ndarray] = None
        self.semantic_target: Optional[LabelSet] = None
        self.cityscapes = cityscapes
        self.scored: dict[str, int] = {'semantic': 0, 'instances': 0}

    def frame_name(self, key: Key) -> str:
        return frame_name(self.topics.frame_prefix, key)

    # --- reading ----------------------------------------------------------------------------------
    def read(self) -> None:
        """One pass over this camera's topics and the bag-wide ones; other cameras' messages are
        not even deserialized."""
        contents, topics = self.contents, self.topics
        wanted = [GROUND_TRUTH_INFO, REPLAY_SUMMARY, DIAGNOSTICS, topics.camera, *topics.ground_truths,
                  *topics.predictions, *(prediction + LABEL_INFO_SUFFIX for prediction in topics.predictions),
                  *([self.panoptic_topic, self.panoptic_topic + LABEL_INFO_SUFFIX] if self.panoptic_topic else [])]
        for topic, timestamp, msg in tqdm(read_messages(self.bag, wanted), desc=f'evaluating {topics.camera}',
                                          unit='msg'):
            if topic == GROUND_TRUTH_INFO:
                contents.info = GroundTruthInfo.from_json(msg.data)
            elif topic == REPLAY_SUMMARY:
                contents.replay = json.loads(msg.data)
            elif topic == self.camera_topic:
                key = stamp_key(msg.header)
                if len(contents.published_ns) in self.overlay_indices:
                    convert = compressed_msg_to_rgb if topic.endswith(COMPRESSED_SUFFIX) else image_msg_to_rgb
                    contents.overlay_frames[key] = convert(msg)
                contents.published_ns[key] = timestamp
            elif topic in self.topics.ground_truths:
                key, truth = stamp_key(msg.header), output_msg_to_array(msg)
                self._add_ground_truth(topic, key, truth)
                self._add_scene_part(key, 'semantic_truth' if topic == topics.ground_truth_semantic else
                                     'instance_truth', truth)
                self._score_ready_frames()
            elif topic == self.panoptic_topic:
                self._add_scene_part(stamp_key(msg.header), 'panoptic', panoptic_from_msg(msg))
            elif topic.endswith(LABEL_INFO_SUFFIX):
                contents.label_sets[topic[:-len(LABEL_INFO_SUFFIX)]] = label_set_from_msg(msg)
            elif topic in self.topics.predictions:
                key = stamp_key(msg.header)
                contents.arrivals_ns.setdefault(topic, {})[key] = timestamp
                semantic = topic == self.topics.semantic_prediction
                prediction = output_msg_to_array(msg) if semantic else instances_from_msg(msg)
                self._keep_for_overlay(key, topic, prediction)
                if semantic:
                    self.latest_semantic = max(key, self.latest_semantic or key)
                self._add_scene_part(key, 'semantic' if semantic else 'instances', prediction)
                if self._has_ground_truth(topic):
                    store = self.semantic_predictions if semantic else self.instance_predictions
                    store[key] = prediction
                    self._score_ready_frames()
            elif topic == DIAGNOSTICS:
                for status in msg.status:
                    contents.node_status[status.name] = status_values(status)
        if contents.info is None:  # e.g. a drive recorded on a vehicle: latency and throughput only
            contents.info = GroundTruthInfo('none', '', False, False)
        self._score_ready_frames()
        for key in sorted(self.scene_parts):  # frames some output never answered: what they have
            self._score_scene(key, self.scene_parts.pop(key))

    def _add_scene_part(self, key: Key, part: str, value: Any) -> None:
        """Keep a frame's ground truth and predictions for panoptic quality and tracking (bags with
        Cityscapes-style instance ground truth), and score the frame once it has every part."""
        info = self.contents.info
        if info is None or not has_cityscapes_instances(info):
            return
        parts = self.scene_parts.setdefault(key, {})
        parts[part] = value
        if self.scene_parts_needed <= parts.keys():
            self._score_scene(key, self.scene_parts.pop(key))

    def _score_scene(self, key: Key, parts: dict[str, Any]) -> None:
        if 'instances' not in parts or 'instance_truth' not in parts:
            return
        if self.scene is None:
            self.scene = PanopticTrackingScores(self.contents.info,
                                                self._prediction_label_set(self.topics.instance_prediction))
        self.scene.add_tracks(key, parts['instance_truth'], parts['instances'])
        if 'semantic_truth' not in parts:
            return
        prediction = None
        if 'panoptic' in parts:  # class ids in the semantic prediction's label set, as the panoptic node's
            set_topic = self.panoptic_topic if self.panoptic_topic in self.contents.label_sets else \
                self.topics.semantic_prediction
            lookup = label_set_lookup(self._prediction_label_set(set_topic), self.scene.label_set)
            prediction = panoptic_in_label_set(parts['panoptic'], lookup, self.scene.label_set.num_classes)
            self.scene.source = f'recorded {self.panoptic_topic}'
        elif 'semantic' in parts and not self.panoptic_topic:  # a recorded panoptic output is never mixed with fusion
            lookup = label_set_lookup(self._prediction_label_set(self.topics.semantic_prediction), self.scene.label_set)
            prediction = self.scene.fused(lookup[parts['semantic']], parts['instances'])
        if prediction is not None:
            self.scene.add_panoptic(parts['semantic_truth'], parts['instance_truth'], prediction)

    def _add_ground_truth(self, topic: str, key: Key, ground_truth: np.ndarray) -> None:
        """Cityscapes ground truth (labelIds, from Cityscapes or a folder declared so; instance ids)
        goes to gtFine-style files for the official evaluation at once; semantic ground truth also
        waits in memory for its prediction (confusion matrix)."""
        self._keep_for_overlay(key, topic, ground_truth)
        semantic = topic == self.topics.ground_truth_semantic
        info = self.contents.info
        if info is not None and semantic and info.label_set == CITYSCAPES_LABEL_IDS:
            self.cityscapes.add_ground_truth(self.frame_name(key), label_ids=ground_truth)
        elif info is not None and not semantic and has_cityscapes_instances(info):
            self.cityscapes.add_ground_truth(self.frame_name(key), instance_ids=ground_truth)
        if semantic:
            self.ground_truth[key] = ground_truth

    def _keep_for_overlay(self, key: Key, topic: str, value: Any) -> None:
        if key in self.contents.overlay_frames:
            self.contents.overlay_outputs.setdefault(key, {})[topic] = value

    def _has_ground_truth(self, prediction_topic: str) -> bool:
        info = self.contents.info
        if info is None:
            return False
        return info.has_semantic if prediction_topic == self.topics.semantic_prediction else info.has_instances

    def _score_ready_frames(self) -> None:
        """Score frames whose ground truth and prediction have both been read, then drop their images."""
        info = self.contents.info
        if info is None:
            return
        for key in [key for key in self.semantic_predictions if key in self.ground_truth]:
            self._score_semantic(key, self.ground_truth[key], self.semantic_predictions.pop(key))
        if self.latest_semantic is not None:  # a node answers in stamp order: older unanswered frames never will be
            for key in [key for key in self.ground_truth if key < self.latest_semantic]:
                del self.ground_truth[key]
        for key in list(self.instance_predictions):
            self._score_instances(key, self.instance_predictions.pop(key))

    def _prediction_label_set(self, topic: str) -> LabelSet:
        if topic not in self.contents.label_sets:
            raise BagError(f'result bag has no {topic}{LABEL_INFO_SUFFIX}: the predictions\' label set is unknown')
        return self.contents.label_sets[topic]

    def _score_semantic(self, key: Key, ground_truth: np.ndarray, prediction: np.ndarray) -> None:
        info, predicted_set = self.contents.info, self._prediction_label_set(self.topics.semantic_prediction)
        if ground_truth.shape != prediction.shape:
            raise BagError(f'frame {key}: prediction {prediction.shape} and ground truth {ground_truth.shape} differ')
        target = ground_truth_label_set(info.label_set)
        lookup = label_set_lookup(predicted_set, target)  # raises on mismatched label sets
        if info.label_set == CITYSCAPES_LABEL_IDS:
            self.cityscapes.add_semantic(self.frame_name(key), prediction)
        truth = class_ids_of_ground_truth(ground_truth, info.label_set)
        matrix = confusion_matrix(truth, lookup[prediction], target.num_classes)
        self.confusion = matrix if self.confusion is None else self.confusion + matrix
        self.semantic_target = target
        self.ground_truth.pop(key)
        self.scored['semantic'] += 1

    def _score_instances(self, key: Key, prediction: InstanceResult) -> None:
        if not has_cityscapes_instances(self.contents.info):
            return
        label_set = self._prediction_label_set(self.topics.instance_prediction)
        self.cityscapes.add_instances(self.frame_name(key), prediction, label_set)
        self.scored['instances'] += 1

    # --- results ----------------------------------------------------------------------------------
    def latencies_ms(self) -> dict[str, list[float]]:
        """Per prediction topic: output arrival minus camera publication, for every frame that has both."""
        contents = self.contents
        return {topic: [(arrival - contents.published_ns[key]) / 1e6 for key, arrival in arrivals.items()
                        if key in contents.published_ns]
                for topic, arrivals in contents.arrivals_ns.items()}

    def results(self) -> dict:
        contents = self.contents
        frames = len(contents.published_ns)
        results: dict[str, Any] = {
            'bag': str(self.bag), 'ground_truth': vars(contents.info), 'replay': contents.replay,
            'frames': {'replayed': frames}, 'latency': {}, 'throughput_fps': {}, 'nodes': contents.node_status,
            'untrained_nodes': untrained_nodes(contents.node_status)}
        latencies = self.latencies_ms()
        for topic, arrivals in contents.arrivals_ns.items():
            matched = {key: arrival for key, arrival in arrivals.items() if key in contents.published_ns}
            results['frames'][topic] = {'with_output': len(matched), 'without_output': frames - len(matched)}
            results['latency'][topic] = latency_summary(latencies[topic])
            if matched:
                span = (max(matched.values()) - min(contents.published_ns.values())) / 1e9
                results['throughput_fps'][topic] = len(matched) / span if span > 0 else None
        results.update(semantic_results(self.confusion, self.semantic_target, self.scored['semantic']))
        results.update(official_results(self.cityscapes.select(self.topics.frame_prefix), self.scored['instances']))
        results.update(panoptic_tracking_results([self.scene_statistics()]))
        return results

    def scene_statistics(self) -> dict:
        """This camera's panoptic and tracking statistics (empty where none were scored)."""
        if self._scene_statistics is None:  # tracking statistics are computed once, for every caller
            self._scene_statistics = self.scene.as_json() if self.scene is not None else {}
        return self._scene_statistics


def untrained_nodes(node_status: dict[str, dict[str, str]]) -> list[str]:
    """The nodes whose /diagnostics say their weights are untrained (recorded in the result bag)."""
    return sorted({name.split(':')[0] for name, values in node_status.items()
                   if values.get('trained weights') == 'false'})


def semantic_results(confusion: Optional[np.ndarray], target: Optional[LabelSet], frames: int) -> dict:
    """mIoU and per-class IoU from a confusion matrix (of one camera or summed over several)."""
    if confusion is None:
        return {}
    semantic = scores_from_confusion(confusion, target.names)
    semantic.update(frames=frames, label_set=target.name, method='confusion matrix')
    return {'semantic': semantic, 'confusion_matrix': {'classes': target.names, 'matrix': confusion.tolist()}}


def official_results(files: CityscapesFiles, instance_frames: int) -> dict:
    """cityscapesscripts' pixel- and instance-level results over ``files``' frames."""
    results = {}
    if files.semantic_pairs:
        results['semantic_cityscapes_official'] = files.semantic_scores()
    if files.instance_pairs:
        results['instances_cityscapes_official'] = files.instance_scores()
        results['instances_cityscapes_official']['frames'] = instance_frames
    return results


def combined_results(bag: Path, evaluations: list[Evaluation], cityscapes: CityscapesFiles) -> dict:
    """Every camera's results under 'cameras', and over all cameras: frames, latency and
    throughput per output topic (each camera has its own), the summed confusion matrix, the
    official evaluations over every camera's frames."""
    per_camera = {evaluation.camera_topic: evaluation.results() for evaluation in evaluations}
    first = next(iter(per_camera.values()))
    results: dict[str, Any] = {
        'bag': str(bag), 'ground_truth': first['ground_truth'], 'replay': first['replay'],
        'frames': {'replayed': sum(camera['frames']['replayed'] for camera in per_camera.values())},
        'latency': {}, 'throughput_fps': {}, 'nodes': first['nodes'], 'untrained_nodes': first['untrained_nodes']}
    for camera in per_camera.values():
        for key in ('latency', 'throughput_fps'):
            results[key].update(camera[key])
        results['frames'].update({topic: counts for topic, counts in camera['frames'].items() if topic != 'replayed'})
    matrices = [evaluation.confusion for evaluation in evaluations if evaluation.confusion is not None]
    target = next((evaluation.semantic_target for evaluation in evaluations if evaluation.confusion is not None), None)
    results.update(semantic_results(sum(matrices) if matrices else None, target,
                                    sum(evaluation.scored['semantic'] for evaluation in evaluations)))
    results.update(official_results(cityscapes, sum(evaluation.scored['instances'] for evaluation in evaluations)))
    results.update(panoptic_tracking_results([evaluation.scene_statistics() for evaluation in evaluations]))
    results['cameras'] = per_camera
    return results


def evaluate(bag: Path, work_dir: Optional[Path] = None, camera_topics: Sequence[str] = ()
             ) -> tuple[dict, list[Evaluation]]:
    """Metrics of the result bag ``bag`` for the cameras named (default: every camera in it); the
    Evaluations keep the overlay frames for the report. One camera: its results; several: the
    combined results with each camera's under 'cameras'."""
    cameras = cameras_in_bag(require_topics(bag, []), camera_topics)
    with tempfile.TemporaryDirectory(prefix='seg_eval_') as temporary:
        cityscapes = CityscapesFiles(Path(work_dir or temporary) / 'cityscapes')
        evaluations = [Evaluation(bag, camera, cityscapes) for camera in cameras]
        for evaluation in evaluations:
            evaluation.read()
        if len(evaluations) == 1:
            return evaluations[0].results(), evaluations
        return combined_results(bag, evaluations, cityscapes), evaluations
