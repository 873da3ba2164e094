"""One bag of a fleet, evaluated where a Ray worker runs it: directly or through real nodes.

* Directly (the default): the bag's camera frames and ground truth are read in stamp order and the
  models of the asked tasks (built from the driving pipeline's parameter file, as the nodes would
  build them) run on them in batches: no DDS, no nodes. A perfect predictor
  (``ground_truth_echo``) answers with the ground truth itself, to check the path.
* Through the nodes (``through_nodes``): the bag is replayed into the pipeline's nodes, started on
  a ROS domain id of the worker's own so that workers never see each other, and the result bag is
  scored as ``seg_bag evaluate`` scores it.

Either way a bag's result holds, per camera, what merges exactly over a fleet: the semantic
confusion matrix, cityscapesscripts' instance matches (pooled for AP over every bag), panoptic
match statistics (summed for PQ) and TrackEval's tracking statistics where the bag's instance ids
persist (combined as TrackEval combines sequences). Directly, the panoptic prediction is the fusion
of each frame's semantic and instance results, and a ``MaskTracker`` per camera gives the track
ids, frame after frame in stamp order; the echo's track ids are the ground truth's ids.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import yaml

from seg_models.data.labels import LabelSet, cityscapes_things, label_set_lookup
from seg_models.checkpoints.named import absolute_checkpoint, checkpoint_identity
from seg_models.segmenters.instance_postprocess import InstanceResult
from seg_models.tasks import get_task
from seg_perception.bringup.driving_pipeline import CONFIG_PATH, PANOPTIC_FUSION, TASKS, pipeline_node, pipeline_nodes
from seg_perception.evaluation.bag_io import bag_topics, cameras_in_bag, read_messages
from seg_models.data.datasets import GroundTruthInfo
from seg_perception.evaluation.evaluate import Evaluation, PanopticTrackingScores, frame_name
from seg_perception.evaluation.ground_truth import (class_ids_of_ground_truth, ground_truth_label_set,
                                                    has_cityscapes_instances, instances_of)
from seg_models.tracking.mask_tracker import MaskTracker
from seg_models.bench.metrics import CityscapesFiles, confusion_matrix
from seg_perception.bringup.processes import STOP_TIMEOUT_SEC, NodeProcesses
from seg_perception.evaluation.replay import ReplaySettings, replay, scoped_overrides, start_pipeline_commands
from seg_perception.evaluation.watched_process import Patience, Voice, WorkFailed, run_watched
from seg_perception.messages.dds_profile import LOCALHOST_PROFILE, use_large_images_profile
from seg_perception.messages.images import compressed_msg_to_rgb, image_msg_to_rgb, output_msg_to_array
from seg_perception.messages.topics import (COMPRESSED_SUFFIX, GROUND_TRUTH_INFO, CameraBagTopics, stamp_key,
                                            stamp_seconds)

PREDICTORS = ('model', 'ground_truth_echo')
Progress = Callable[[int], None]  # told the number of camera frames just evaluated
WATCH_MARGIN_SEC = 60.0  # a replay child silent this long besides its nodes' stop is stuck


@dataclass(frozen=True)
class FleetModel:
    """What answers the bags' frames, and how: the same parameter file and overrides as
    ``seg_bag replay --start-pipeline`` (config/driving.yaml by default)."""

    tasks: tuple[str, ...] = TASKS
    config: Optional[Path] = None  # a ROS 2 parameter file; None: the package's config/driving.yaml
    overrides: tuple[str, ...] = ()  # [NODE:]NAME:=VALUE, as replay's -p
    checkpoints: tuple[tuple[str, str], ...] = ()  # (semantic_checkpoint | instance_checkpoint, path)
    predictor: str = 'model'  # or ground_truth_echo: answers with the ground truth (direct mode only)
    through_nodes: bool = False
    batch_size: int = 4  # frames per model call (direct mode)
    panoptic: bool = False  # through the nodes: start the panoptic node too and score its output

    def __post_init__(self) -> None:
        if self.predictor not in PREDICTORS:
            raise ValueError(f'unknown predictor {self.predictor!r}; one of {", ".join(PREDICTORS)}')
        if self.through_nodes and self.predictor != 'model':
            raise ValueError('--through-nodes replays into the pipeline\'s nodes: it takes no --predictor')
        if self.panoptic and not self.through_nodes:
            raise ValueError('--panoptic starts the panoptic node: with --through-nodes (directly, the two results '
                             'are fused without it)')
        pipeline_nodes(self.tasks)  # unknown tasks are refused here
        scoped_overrides(list(self.overrides))  # and malformed overrides

    @property
    def config_file(self) -> Path:
        from seg_perception.package_share import data_path

        return Path(self.config) if self.config else Path(data_path(CONFIG_PATH))

    def pipeline_commands(self, cameras: Sequence[CameraBagTopics]) -> tuple[list[list[str]], list[str]]:
        """The node commands replaying ``cameras`` through the pipeline, and the outputs to await."""
        commands = start_pipeline_commands(self.config_file, cameras, list(self.overrides), dict(self.checkpoints),
                                           self.tasks, self.panoptic)
        nodes = pipeline_nodes(self.tasks) + ([PANOPTIC_FUSION] if self.panoptic else [])
        return commands, [node.output for node in nodes]

    def tracker(self) -> Optional[MaskTracker]:
        """A tracker for one camera as the instance node would run it (its track_* parameters); None
        with tracking off, or for the ground-truth echo, whose instances carry the true ids."""
        from seg_perception.nodes.instance_segmentation import tracker_settings_from_parameters

        if self.predictor != 'model':
            return None
        settings = tracker_settings_from_parameters(self.node_parameters('instance'))
        return MaskTracker(settings) if settings.enabled else None

    def node_parameters(self, task: str) -> dict:
        """The parameter values the node of ``task`` would run with: its declared defaults, the
        parameter file's section, the overrides for it, its checkpoint; each checked as the node
        checks it."""
        from seg_perception.runtime.parameters import BACKEND_PARAMETERS

        node = pipeline_node(task)
        specs = {spec.name: spec for spec in (*node.node_type().task_parameters, *BACKEND_PARAMETERS)}
        sections = yaml.safe_load(self.config_file.read_text()) or {}
        values = {name: spec.default for name, spec in specs.items()}
        given = dict((sections.get(node.name) or {}).get('ros__parameters') or {})
        given.update((name, yaml.safe_load(value)) for name, value in
                     (override.split(':=', 1) for override in scoped_overrides(list(self.overrides))[node.name]))
        checkpoint = dict(self.checkpoints).get(node.checkpoint_argument)
        if checkpoint:
            given['checkpoint'] = absolute_checkpoint(checkpoint)
        for name, value in given.items():
            if name in specs:
                values[name] = tuple(value or ()) if specs[name].is_string_array else value
                specs[name].check(values[name])
        return values

    def segmenter(self, task: str):
        """The model of ``task`` as its node would load it (``node_parameters``)."""
        config = pipeline_node(task).node_type().processor_type.config_from_parameters(self.node_parameters(task))
        return get_task(task).create_segmenter(config)

    def untrained_tasks(self) -> list[str]:
        """The tasks whose model runs with untrained weights: their scores mean nothing."""
        if self.predictor != 'model':
            return []
        return [task for task in self.tasks if not get_task(task).weights_source(
            pipeline_node(task).node_type().processor_type.config_from_parameters(self.node_parameters(task)))]

    def cache_key(self) -> dict:
        """What a bag's result depends on besides the bag: mode, predictor and, per task, the node's
        parameters and its checkpoint's bytes."""
        key = {'through_nodes': self.through_nodes, 'predictor': self.predictor, 'tasks': sorted(self.tasks),
               'panoptic': self.panoptic}
        if self.predictor == 'model':
            for task in self.tasks:
                values = self.node_parameters(task)
                key[task] = {'parameters': values, 'checkpoint_sha256':
                             checkpoint_identity(values['checkpoint']) if values.get('checkpoint') else 'untrained'}
        return json.loads(json.dumps(key, default=str))


@dataclass
class BagFrame:
    """One camera frame of a bag with the ground truth of its stamp."""

    key: tuple[int, int]
    rgb: Optional[np.ndarray] = None
    semantic: Optional[np.ndarray] = None
    instances: Optional[np.ndarray] = None


def camera_batches(bag: Path, camera: CameraBagTopics, info: GroundTruthInfo,
                   batch_size: int) -> Iterator[list[BagFrame]]:
    """Batches of one camera's frames with their ground truth, matched by stamp, in bag order; a
    frame leaves memory as soon as its batch is scored."""
    wanted = {camera.camera: 'rgb'}
    if info.has_semantic:
        wanted[camera.ground_truth_semantic] = 'semantic'
    if info.has_instances:
        wanted[camera.ground_truth_instances] = 'instances'
    pending: dict[tuple, BagFrame] = {}
    batch = []
    for topic, _, msg in read_messages(bag, list(wanted)):
        key = stamp_key(msg.header)
        frame = pending.setdefault(key, BagFrame(key))
        if topic == camera.camera:
            frame.rgb = compressed_msg_to_rgb(msg) if topic.endswith(COMPRESSED_SUFFIX) else image_msg_to_rgb(msg)
        else:
            setattr(frame, wanted[topic], output_msg_to_array(msg))
        if all(getattr(frame, part) is not None for part in wanted.values()):
            batch.append(pending.pop(key))
            if len(batch) == batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


class Predictor:
    """The fleet's models, built on first use (a bag without instance ground truth never loads
    Mask R-CNN); or, for ``ground_truth_echo``, the ground truth itself."""

    def __init__(self, model: FleetModel) -> None:
        self.model = model
        self._segmenters: dict[str, object] = {}

    def _segmenter(self, task: str):
        if task not in self._segmenters:
            self._segmenters[task] = self.model.segmenter(task)
        return self._segmenters[task]

    def semantic_label_set(self, ground_truth_id_space: str) -> LabelSet:
        if self.model.predictor == 'ground_truth_echo':
            return ground_truth_label_set(ground_truth_id_space)
        return self._segmenter('semantic').label_set

    def semantic(self, frames: Sequence[BagFrame], ground_truth_id_space: str) -> list[np.ndarray]:
        """Class ids of each frame, in ``semantic_label_set``'s ids."""
        if self.model.predictor == 'ground_truth_echo':
            return [class_ids_of_ground_truth(frame.semantic, ground_truth_id_space) for frame in frames]
        return [result.class_ids for result in self._segmenter('semantic').segment([frame.rgb for frame in frames])]

    def semantic_in_ground_truth_classes(self, frames: Sequence[BagFrame], ground_truth_id_space: str,
                                         predicted_ids: Optional[list[np.ndarray]] = None) -> list[np.ndarray]:
        """The class ids of ``frames`` (``predicted_ids``, else predicted now) in the ground truth's label set."""
        lookup = label_set_lookup(self.semantic_label_set(ground_truth_id_space),
                                  ground_truth_label_set(ground_truth_id_space))
        return [lookup[ids] for ids in predicted_ids or self.semantic(frames, ground_truth_id_space)]

    def semantic_confusion(self, frames: Sequence[BagFrame], ground_truth_id_space: str,
                           predicted_ids: Optional[list[np.ndarray]] = None) -> np.ndarray:
        """The confusion matrix of the class ids of ``frames`` (``predicted_ids`` in the ground
        truth's label set, else predicted now) against their semantic ground truth, summed."""
        target = ground_truth_label_set(ground_truth_id_space)
        predicted_ids = predicted_ids or self.semantic_in_ground_truth_classes(frames, ground_truth_id_space)
        return sum(confusion_matrix(class_ids_of_ground_truth(frame.semantic, ground_truth_id_space), ids,
                                    target.num_classes)
                   for frame, ids in zip(frames, predicted_ids))

    @property
    def instance_label_set(self) -> LabelSet:
        return cityscapes_things() if self.model.predictor == 'ground_truth_echo' else \
            self._segmenter('instance').label_set

    def instances(self, frames: Sequence[BagFrame], ids_persist: bool = False) -> list[InstanceResult]:
        """Each frame's instances; the echo's carry the ground truth's ids as track ids where they
        persist across frames."""
        if self.model.predictor == 'ground_truth_echo':
            return [instances_of(frame.instances, self.instance_label_set, ids_persist) for frame in frames]
        return self._segmenter('instance').segment([frame.rgb for frame in frames])


@dataclass
class CameraScores:
    """What one camera of one bag contributes to the fleet's figures."""

    frames: int = 0
    confusion: Optional[np.ndarray] = None
    instance_frames: int = 0
    matches: dict = field(default_factory=dict)  # cityscapesscripts' instance matches, per frame
    scene: dict = field(default_factory=dict)  # panoptic and tracking statistics (PanopticTrackingScores.as_json)

    def as_json(self) -> dict:
        entry = {'frames': self.frames, **self.scene}
        if self.confusion is not None:
            entry['confusion'] = self.confusion.tolist()
        if self.instance_frames:
            entry.update(instance_frames=self.instance_frames, matches=self.matches)
        return entry


def ground_truth_info(bag: Path, available: dict) -> GroundTruthInfo:
    infos = [GroundTruthInfo.from_json(msg.data) for _, _, msg in read_messages(bag, [GROUND_TRUTH_INFO])] \
        if GROUND_TRUTH_INFO in available else []
    if not infos or not (infos[0].has_semantic or infos[0].has_instances):
        raise ValueError('the bag has no ground truth (/ground_truth/info; made by `seg_bag make`?)')
    return infos[0]


def evaluate_directly(bag: Path, predictor: Predictor, progress: Progress) -> tuple[GroundTruthInfo, dict]:
    """Per-camera scores of ``predictor``'s answers to the bag's frames."""
    available = bag_topics(bag)
    info = ground_truth_info(bag, available)
    tasks = predictor.model.tasks
    semantic = info.has_semantic and 'semantic' in tasks
    instances = has_cityscapes_instances(info) and 'instance' in tasks
    if not semantic and not instances:
        raise ValueError(f'nothing to score: the bag\'s ground truth ({info.label_set}, instances: '
                         f'{info.has_instances}) matches none of the tasks {", ".join(tasks)}')
    cameras = {}
    with tempfile.TemporaryDirectory(prefix='seg_fleet_') as work:
        files = CityscapesFiles(Path(work))
        for camera in cameras_in_bag(available):
            scores = CameraScores()
            scene = PanopticTrackingScores(info, predictor.instance_label_set) if instances else None
            tracker = predictor.model.tracker() if instances else None
            for batch in camera_batches(bag, camera, info, predictor.model.batch_size):
                semantic_ids = predictor.semantic_in_ground_truth_classes(batch, info.label_set) if semantic else None
                if semantic:
                    matrix = predictor.semantic_confusion(batch, info.label_set, semantic_ids)
                    scores.confusion = matrix if scores.confusion is None else scores.confusion + matrix
                if instances:
                    for index, (frame, result) in enumerate(zip(batch, predictor.instances(
                            batch, info.instance_ids_persist))):
                        if tracker is not None:  # what the node publishes: its ids, and the tracks' low scores
                            tracker.track(result, stamp_seconds(frame.key))
                        name = frame_name(camera.frame_prefix, frame.key)
                        files.add_ground_truth(name, instance_ids=frame.instances)
                        files.add_instances(name, result, predictor.instance_label_set)
                        score_scene(scene, frame, result, semantic_ids[index] if semantic else None)
                    scores.instance_frames += len(batch)
                scores.frames += len(batch)
                progress(len(batch))
            if instances and scores.instance_frames:
                scores.matches = files.select(camera.frame_prefix).instance_matches()
                scores.scene = scene.as_json()
            cameras[camera.camera] = scores
    return info, cameras


def score_scene(scene: PanopticTrackingScores, frame: BagFrame, instances: InstanceResult,
                semantic_ids: Optional[np.ndarray]) -> None:
    """One frame's panoptic statistics (semantic ids in the ground truth's classes fused with the
    instances) and tracks (the instances' track ids)."""
    scene.add_tracks(frame.key, frame.instances, instances)
    if semantic_ids is not None and frame.semantic is not None:
        fused = scene.fused(semantic_ids, instances)
        if fused is not None:
            scene.add_panoptic(frame.semantic, frame.instances, fused)


def evaluate_through_nodes(bag: Path, model: FleetModel, progress: Progress) -> tuple[GroundTruthInfo, dict, list[str]]:
    """Per-camera scores of the pipeline's nodes, replayed into on this process's ROS domain by a
    watched child process (``replay_with_nodes``), and the replay's stalls survived."""
    available = bag_topics(bag)
    info = ground_truth_info(bag, available)
    cameras = cameras_in_bag(available)
    commands, outputs = model.pipeline_commands(cameras)
    with tempfile.TemporaryDirectory(prefix='seg_fleet_') as work:
        result_bag = Path(work) / 'result.bag'
        settings = ReplaySettings(bag=bag, output=result_bag)
        stalls = run_watched(partial(replay_with_nodes, settings, commands, outputs), replay_patience(len(commands)),
                             on_progress=lambda: progress(1))
        files = CityscapesFiles(Path(work) / 'cityscapes')
        scores = {}
        for camera in cameras_in_bag(bag_topics(result_bag)):
            evaluation = Evaluation(result_bag, camera, files)
            evaluation.read()
            camera_scores = CameraScores(frames=len(evaluation.contents.published_ns), confusion=evaluation.confusion,
                                         instance_frames=evaluation.scored['instances'],
                                         scene=evaluation.scene_statistics())
            if camera_scores.instance_frames:
                camera_scores.matches = files.select(camera.frame_prefix).instance_matches()
            scores[camera.camera] = camera_scores
    return info, scores, [f'replay: {stall}' for stall in stalls]


def replay_with_nodes(settings: ReplaySettings, commands: list[list[str]], outputs: list[str], voice: Voice) -> None:
    """Start the nodes, replay ``settings.bag`` into them, stop them: the work of a watched child
    process (``run_watched``), alive while the replay spins, progressing with each frame. A stalled
    attempt's result bag is replaced."""
    shutil.rmtree(settings.output, ignore_errors=True)
    with NodeProcesses(commands) as processes:
        def check_alive() -> None:
            voice.alive()
            processes.check_alive()

        replay(settings, check_alive, started_outputs=outputs, on_frame=voice.progress)


def replay_patience(nodes: int) -> Patience:
    """How long a replay child may stay silent: the replay says it is alive between its spins, so
    only its start (imports), the nodes' stop (each given ``STOP_TIMEOUT_SEC``) and a stuck
    process are silent."""
    return Patience(silence_sec=STOP_TIMEOUT_SEC * (nodes + 1) + WATCH_MARGIN_SEC, exit_sec=STOP_TIMEOUT_SEC)


def evaluate_bag(bag: Path, model: FleetModel, predictor: Predictor, progress: Progress = lambda frames: None) -> dict:
    """A bag's result for the fleet: per camera its scores (see ``CameraScores``), the semantic
    ground truth's label set, the replay's stalls survived (``notes``); ``{'bag', 'error'}`` when the
    bag cannot be evaluated."""
    started = time.perf_counter()
    try:
        info, cameras, notes = evaluate_through_nodes(bag, model, progress) if model.through_nodes else \
            (*evaluate_directly(bag, predictor, progress), [])
    except Exception as error:  # any bag that cannot be evaluated is reported, never aborts the fleet
        reason = str(error) if isinstance(error, WorkFailed) else f'{type(error).__name__}: {error}'  # typed there
        return {'bag': str(bag), 'error': reason.splitlines()[0]}
    result = {'bag': str(bag), 'cameras': {topic: scores.as_json() for topic, scores in cameras.items()},
              'seconds': time.perf_counter() - started, 'notes': notes}
    if any(scores.confusion is not None for scores in cameras.values()):
        target = ground_truth_label_set(info.label_set)
        result.update(label_set=target.name, classes=target.names)
    return result


def use_own_ros_domain(domain_id: int) -> None:
    """This process (a Ray worker) and the nodes it starts talk on ``domain_id``, on this machine only,
    with the large-image DDS profile: workers never see each other's frames."""
    os.environ['ROS_DOMAIN_ID'] = str(domain_id)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    use_large_images_profile(os.environ, LOCALHOST_PROFILE)

