"""``seg_bag evaluate-fleet``: many bags evaluated in parallel on Ray, on this machine or a cluster.

Each Ray worker is an actor holding one segmenter (the model is loaded once per worker, not per
bag) and evaluates whole bags: it reads each camera's frames and semantic ground truth from a bag
made by ``seg_bag make`` (or recorded with ground truth beside the camera), runs ``seg_models``
on them in batches, with no DDS and no nodes, and returns per-camera confusion matrices. The driver
merges them exactly (matrices summed, never per-bag scores averaged) into one report with a row
per bag and per camera. A bag that cannot be read is reported and skipped; a worker that dies is
restarted and its bag retried by Ray, and counted once; each bag's result is cached under its
content hash and the model's settings, so a re-run after an interruption evaluates only what is
missing. ``ray.init()`` starts a local Ray; ``--address`` joins a running cluster.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from seg_models.configs import SemanticModelConfig
from seg_models.labels import label_set_lookup
from seg_perception.evaluation.bag_io import bag_topics, cameras_in_bag, read_messages
from seg_perception.evaluation.datasets import GroundTruthInfo
from seg_perception.evaluation.ground_truth import class_ids_of_ground_truth, ground_truth_label_set
from seg_perception.evaluation.metrics import confusion_matrix, scores_from_confusion
from seg_perception.messages.images import compressed_msg_to_rgb, image_msg_to_rgb, output_msg_to_array
from seg_perception.messages.topics import COMPRESSED_SUFFIX, GROUND_TRUTH_INFO, stamp_key

CACHE_FORMAT = 1  # bump when a cached per-bag result changes meaning
# A file path: the first worker to find it missing creates it and dies, so the restart and the
# retry of its bag can be checked with real Ray (the tests do).
KILL_ONCE_ENV = 'SEG_BAG_FLEET_KILL_ONCE'


@dataclass(frozen=True)
class FleetSettings:
    """How the fleet is evaluated; every field but the Ray ones goes into each bag's cache key."""

    model: SemanticModelConfig
    batch_size: int = 4
    workers: int = 2
    gpus_per_worker: float = 0.0
    address: Optional[str] = None  # a running Ray cluster ("auto", "ray://host:10001"); None: local
    cache_dir: Optional[Path] = None
    retries: int = 2  # Ray restarts of a worker that died, and retries of its bag


def fleet_bags(inputs: Sequence[str]) -> list[Path]:
    """Bag folders from ``inputs``: bag folders (with metadata.yaml), folders of bag folders,
    globs, and ``@list.txt`` files of one of those per line. Each bag once, in the order given."""
    bags: list[Path] = []
    for item in inputs:
        if item.startswith('@'):
            lines = Path(item[1:]).read_text().splitlines()
            bags += fleet_bags([line.strip() for line in lines if line.strip() and not line.startswith('#')])
            continue
        matches = [Path(match) for match in sorted(glob.glob(item))] if glob.has_magic(item) else [Path(item)]
        for path in matches:
            inside = sorted(child for child in path.iterdir() if (child / 'metadata.yaml').is_file()) \
                if path.is_dir() and not (path / 'metadata.yaml').is_file() else []
            bags += inside or [path]
    return list(dict.fromkeys(bags))


def bag_content_hash(bag: Path) -> str:
    """sha256 over the bag folder's files (names and bytes): a re-recorded bag is evaluated anew."""
    digest = hashlib.sha256()
    files = sorted(path for path in bag.rglob('*') if path.is_file()) if bag.is_dir() else [bag]
    for path in files:
        digest.update(path.relative_to(bag).as_posix().encode() if bag.is_dir() else path.name.encode())
        with path.open('rb') as stream:
            for block in iter(lambda: stream.read(1 << 20), b''):
                digest.update(block)
    return digest.hexdigest()


def model_key(settings: FleetSettings) -> dict:
    """What a bag's result depends on besides the bag: the model's settings and weights."""
    from seg_models.engine_cache import file_sha256

    config = settings.model
    checkpoint = file_sha256(Path(config.checkpoint)) if config.checkpoint else 'untrained'
    return {'format': CACHE_FORMAT, 'model': json.loads(json.dumps(dataclasses.asdict(config), default=str)),
            'checkpoint_sha256': checkpoint}


def cache_path(cache_dir: Path, model: dict, bag_hash: str) -> Path:
    """Where a bag's result under ``model`` (``model_key``) is kept."""
    key = hashlib.sha256(json.dumps({'bag': bag_hash, **model}, sort_keys=True).encode()).hexdigest()
    return cache_dir / f'{key[:24]}.json'


def camera_batches(bag: Path, camera, batch_size: int) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
    """Batches of (RGB frame, semantic ground truth) of one camera, matched by stamp, in bag order;
    a frame leaves memory as soon as its batch is scored."""
    pending: dict[tuple, dict[str, np.ndarray]] = {}
    batch = []
    for topic, _, msg in read_messages(bag, [camera.camera, camera.ground_truth_semantic]):
        key = stamp_key(msg.header)
        if topic == camera.camera:
            value = compressed_msg_to_rgb(msg) if topic.endswith(COMPRESSED_SUFFIX) else image_msg_to_rgb(msg)
            pending.setdefault(key, {})['rgb'] = value
        else:
            pending.setdefault(key, {})['truth'] = output_msg_to_array(msg)
        if len(pending[key]) == 2:
            pair = pending.pop(key)
            batch.append((pair['rgb'], pair['truth']))
            if len(batch) == batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def evaluate_bag(bag: Path, segmenter, batch_size: int) -> dict:
    """Per-camera confusion matrices of ``segmenter``'s answers against the bag's semantic ground
    truth; ``{'bag', 'error'}`` when the bag cannot be evaluated."""
    started = time.perf_counter()
    try:
        available = bag_topics(bag)
        infos = [GroundTruthInfo.from_json(msg.data) for _, _, msg in read_messages(bag, [GROUND_TRUTH_INFO])] \
            if GROUND_TRUTH_INFO in available else []
        if not infos or not infos[0].has_semantic:
            raise ValueError('the bag has no semantic ground truth (/ground_truth/info; made by `seg_bag make`?)')
        id_space = infos[0].label_set
        target = ground_truth_label_set(id_space)
        lookup = label_set_lookup(segmenter.label_set, target)
        cameras = {}
        for camera in cameras_in_bag(available):
            matrix, frames = np.zeros((target.num_classes, target.num_classes + 1), np.int64), 0
            for batch in camera_batches(bag, camera, batch_size):
                results = segmenter.segment([rgb for rgb, _ in batch])
                for (_, truth), result in zip(batch, results):
                    matrix += confusion_matrix(class_ids_of_ground_truth(truth, id_space), lookup[result.class_ids],
                                               target.num_classes)
                frames += len(batch)
            cameras[camera.camera] = {'frames': frames, 'confusion': matrix.tolist()}
    except Exception as error:  # any unreadable bag is reported, never aborts the fleet
        return {'bag': str(bag), 'error': f'{type(error).__name__}: {error}'.splitlines()[0]}
    return {'bag': str(bag), 'label_set': target.name, 'classes': target.names, 'cameras': cameras,
            'seconds': time.perf_counter() - started}


class BagEvaluator:
    """A Ray worker: one segmenter, loaded once, evaluating bag after bag."""

    def __init__(self, model: SemanticModelConfig, batch_size: int) -> None:
        from seg_models.semantic import create_semantic_segmenter

        self.segmenter = create_semantic_segmenter(model)
        self.batch_size = batch_size

    def evaluate(self, bag: str) -> dict:
        marker = os.environ.get(KILL_ONCE_ENV)
        if marker and not Path(marker).exists():  # fault injection: this worker dies mid-fleet, once
            Path(marker).touch()
            os._exit(1)
        return evaluate_bag(Path(bag), self.segmenter, self.batch_size)


def run_fleet(bags: Sequence[Path], settings: FleetSettings) -> dict:
    """Every bag's result (from the cache, or evaluated on Ray), merged; see ``merged``."""
    import ray
    from ray.util import ActorPool
    from tqdm import tqdm

    results, to_evaluate, keys = {}, [], {}
    model = model_key(settings) if settings.cache_dir is not None else {}
    for bag in bags:
        path = cache_path(settings.cache_dir, model, bag_content_hash(bag)) \
            if settings.cache_dir is not None and bag.exists() else None
        keys[str(bag)] = path
        if path is not None and path.is_file():
            results[str(bag)] = {**json.loads(path.read_text()), 'cached': True}
        else:
            to_evaluate.append(str(bag))
    if to_evaluate:
        ray.init(address=settings.address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
                 logging_level='ERROR', **({} if settings.address else {'num_cpus': max(1, settings.workers)}))
        try:
            worker = ray.remote(num_cpus=1, num_gpus=settings.gpus_per_worker, max_restarts=settings.retries,
                                max_task_retries=settings.retries)(BagEvaluator)
            pool = ActorPool([worker.remote(settings.model, settings.batch_size)
                              for _ in range(min(settings.workers, len(to_evaluate)))])
            progress = tqdm(total=len(to_evaluate), desc='bags', unit='bag')
            for result in pool.map_unordered(lambda actor, bag: actor.evaluate.remote(bag), to_evaluate):
                results[result['bag']] = result
                frames = sum(camera['frames'] for camera in result.get('cameras', {}).values())
                progress.set_postfix_str(f'{Path(result["bag"]).name}: {frames} frames')
                progress.update()
                path = keys[result['bag']]
                if path is not None and 'error' not in result:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(result))
            progress.close()
        finally:
            ray.shutdown()
    return merged([results[str(bag)] for bag in bags])


def merged(results: Sequence[dict]) -> dict:
    """One report from per-bag results: confusion matrices summed over bags (overall and per camera
    topic), scored once; per-bag rows scored from their own matrices; errors listed."""
    good = [result for result in results if 'error' not in result]
    if len({result['label_set'] for result in good}) > 1:
        raise ValueError('the bags\' ground truth uses different label sets: '
                         + ', '.join(sorted({result['label_set'] for result in good})))
    report = {'bags': [], 'cameras': {}, 'errors': [{'bag': r['bag'], 'error': r['error']} for r in results
                                                    if 'error' in r]}
    overall = None
    for result in good:
        classes = result['classes']
        bag_matrix = sum(np.array(camera['confusion']) for camera in result['cameras'].values())
        frames = sum(camera['frames'] for camera in result['cameras'].values())
        report['bags'].append({'bag': result['bag'], 'frames': frames, 'cached': result.get('cached', False),
                               'seconds': result['seconds'], **scores_from_confusion(bag_matrix, classes),
                               'confusion': bag_matrix.tolist()})
        for topic, camera in result['cameras'].items():
            entry = report['cameras'].setdefault(topic, {'frames': 0, 'confusion': 0})
            entry['frames'] += camera['frames']
            entry['confusion'] = entry['confusion'] + np.array(camera['confusion'])
        overall = bag_matrix if overall is None else overall + bag_matrix
    for topic, entry in report['cameras'].items():
        entry.update(scores_from_confusion(entry['confusion'], classes))
        entry['confusion'] = entry['confusion'].tolist()
    if overall is not None:
        report['overall'] = {'frames': sum(row['frames'] for row in report['bags']), 'label_set': good[0]['label_set'],
                             'confusion': overall.tolist(), **scores_from_confusion(overall, classes)}
    return report


def write_fleet_report(report: dict, folder: Path) -> Path:
    """report.json and report.md (a row per bag and per camera, the overall figures, the errors)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'report.json').write_text(json.dumps(report, indent=1))

    def percent(value: Optional[float]) -> str:
        return '-' if value is None else f'{100 * value:.1f}%'

    lines = ['# Fleet evaluation', '']
    if 'overall' in report:
        overall = report['overall']
        lines += [f'{len(report["bags"])} bags, {overall["frames"]} frames, label set {overall["label_set"]}: '
                  f'**mIoU {percent(overall["miou"])}**, pixel accuracy {percent(overall["pixel_accuracy"])} '
                  f'(confusion matrices summed over every bag and camera).', '']
    lines += ['| bag | frames | mIoU | pixel accuracy | seconds | |', '|---|---|---|---|---|---|']
    lines += [f'| {row["bag"]} | {row["frames"]} | {percent(row["miou"])} | {percent(row["pixel_accuracy"])} | '
              f'{row["seconds"]:.1f} | {"cached" if row["cached"] else ""} |' for row in report['bags']]
    lines += ['', '| camera | frames | mIoU |', '|---|---|---|']
    lines += [f'| {topic} | {entry["frames"]} | {percent(entry["miou"])} |'
              for topic, entry in report['cameras'].items()]
    if report['errors']:
        lines += ['', '## Bags not evaluated', '']
        lines += [f'- {error["bag"]}: {error["error"]}' for error in report['errors']]
    (folder / 'report.md').write_text('\n'.join(lines) + '\n')
    return folder / 'report.md'
