"""``seg_bag evaluate-fleet``: many bags evaluated in parallel on Ray, on this machine or a cluster.

Each Ray worker is an actor that evaluates bag after bag (``fleet_worker``): directly, with the
models loaded once per worker and run on each bag's frames in batches (no DDS, no nodes), or,
``--through-nodes``, by replaying each bag into the pipeline's nodes on a ROS domain id of its own.
It returns per camera what merges exactly: the semantic confusion matrix, cityscapesscripts'
instance matches, panoptic match statistics and TrackEval's tracking statistics. The driver merges
them (matrices summed, matches pooled and ranked together for AP, panoptic statistics summed for
PQ, tracking statistics combined as TrackEval combines sequences; never per-bag scores averaged)
into one report with a row per bag and per camera. A bag that cannot be read is reported and
skipped; a worker that dies is restarted and its bag retried by Ray, and counted once; each bag's
result is cached under its content hash and the model's settings, so a re-run after an
interruption evaluates only what is missing. ``ray.init()`` starts a local Ray; ``--address``
joins a running cluster.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from seg_perception.evaluation.bag_io import bag_topics, cameras_in_bag
from seg_perception.evaluation.evaluate import panoptic_tracking_results
from seg_perception.evaluation.fleet_worker import FleetModel, Predictor, evaluate_bag, use_own_ros_domain
from seg_models.bench.metrics import instance_scores_from_matches, pooled_matches, scores_from_confusion
from seg_perception.evaluation.report import hota, panoptic_quality, panoptic_tracking_lines, percent, untrained_note

CACHE_FORMAT = 3  # bump when a cached per-bag result changes meaning
# A file path: the first worker to find it missing creates it and dies, so the restart and the
# retry of its bag can be checked with real Ray (the tests do).
KILL_ONCE_ENV = 'SEG_BAG_FLEET_KILL_ONCE'
PROGRESS_POLL_SEC = 0.5


@dataclass(frozen=True)
class FleetSettings:
    """How the fleet is evaluated; ``model`` goes into each bag's cache key."""

    model: FleetModel
    workers: int = 2
    gpus_per_worker: float = 0.0
    address: Optional[str] = None  # a running Ray cluster ("auto", "ray://host:10001"); None: local
    cache_dir: Optional[Path] = None
    retries: int = 2  # Ray restarts of a worker that died, and retries of its bag
    domain_id_base: int = 100  # --through-nodes: worker i replays on ROS domain id base + i


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


def cache_path(cache_dir: Path, model: dict, bag_hash: str) -> Path:
    """Where a bag's result under ``model`` (``FleetModel.cache_key``) is kept."""
    key = hashlib.sha256(json.dumps({'bag': bag_hash, 'format': CACHE_FORMAT, **model}, sort_keys=True).encode())
    return cache_dir / f'{key.hexdigest()[:24]}.json'


def camera_frame_count(bag: Path) -> int:
    """Camera frames in ``bag`` by its metadata (0 where it cannot be read): the frames bar's share."""
    try:
        available = bag_topics(bag)
        return sum(available[camera.camera][1] for camera in cameras_in_bag(available))
    except Exception:  # the worker reports what is wrong with the bag
        return 0


class BagEvaluator:
    """A Ray worker: evaluates bag after bag, its models loaded once (direct mode), its replays on a
    ROS domain id of its own (through the nodes)."""

    def __init__(self, model: FleetModel, domain_id: int) -> None:
        if model.through_nodes:
            use_own_ros_domain(domain_id)
        self.model = model
        self.predictor = Predictor(model)

    def evaluate(self, bag: str, progress) -> dict:
        """``bag``'s result; ``progress`` (a Ray queue) is told of the frames as they are evaluated."""
        marker = os.environ.get(KILL_ONCE_ENV)
        if marker and not Path(marker).exists():  # fault injection: this worker dies mid-fleet, once
            Path(marker).touch()
            os._exit(1)
        return evaluate_bag(Path(bag), self.model, self.predictor, progress.put_nowait)


def run_fleet(bags: Sequence[Path], settings: FleetSettings) -> dict:
    """Every bag's result (from the cache, or evaluated on Ray), merged; see ``merged``."""
    results, to_evaluate, keys = {}, [], {}
    model = settings.model.cache_key() if settings.cache_dir is not None else {}
    for bag in bags:
        path = cache_path(settings.cache_dir, model, bag_content_hash(bag)) \
            if settings.cache_dir is not None and bag.exists() else None
        keys[str(bag)] = path
        if path is not None and path.is_file():
            results[str(bag)] = {**json.loads(path.read_text()), 'cached': True}
        else:
            to_evaluate.append(str(bag))
    for result in evaluate_on_ray(to_evaluate, settings):
        results[result['bag']] = result
        path = keys[result['bag']]
        if path is not None and 'error' not in result:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result))
    return merged([results[str(bag)] for bag in bags])


def evaluate_on_ray(bags: Sequence[str], settings: FleetSettings):
    """Each bag's result as its worker finishes it, with progress bars over bags and frames."""
    if not bags:
        return
    import ray
    from ray.util import ActorPool
    from ray.util.queue import Queue
    from tqdm import tqdm

    ray.init(address=settings.address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
             logging_level='ERROR', **({} if settings.address else {'num_cpus': max(1, settings.workers)}))
    try:
        progress = Queue(actor_options={'num_cpus': 0})
        worker = ray.remote(num_cpus=1, num_gpus=settings.gpus_per_worker, max_restarts=settings.retries,
                            max_task_retries=settings.retries)(BagEvaluator)
        pool = ActorPool([worker.remote(settings.model, settings.domain_id_base + index)
                          for index in range(min(settings.workers, len(bags)))])
        for bag in bags:
            pool.submit(lambda actor, path: actor.evaluate.remote(path, progress), bag)
        bags_bar = tqdm(total=len(bags), desc='bags', unit='bag', position=0)
        frames_bar = tqdm(total=sum(camera_frame_count(Path(bag)) for bag in bags), desc='frames', unit='frame',
                          position=1)
        while pool.has_next():
            try:
                result = pool.get_next_unordered(timeout=PROGRESS_POLL_SEC)
            except TimeoutError:
                result = None
            frames_bar.update(sum(progress.get_nowait_batch(progress.qsize())))
            if result is not None:
                bags_bar.set_postfix_str(Path(result['bag']).name + (': not evaluated' if 'error' in result else ''))
                bags_bar.update()
                yield result
        frames_bar.close()
        bags_bar.close()
    finally:
        ray.shutdown()


class PooledScores:
    """Frames, the summed confusion matrix and the pooled instance matches of any number of cameras
    of any number of bags: scored once, from everything added."""

    def __init__(self) -> None:
        self.frames, self.instance_frames = 0, 0
        self.confusion: Optional[np.ndarray] = None
        self.matches: dict = {}
        self.scenes: list[dict] = []  # panoptic and tracking statistics of each camera added

    def add(self, camera: dict, source: str) -> None:
        """One camera's result of one bag (``fleet_worker.CameraScores``); ``source`` names it uniquely."""
        self.frames += camera['frames']
        if 'confusion' in camera:
            matrix = np.array(camera['confusion'])
            self.confusion = matrix if self.confusion is None else self.confusion + matrix
        if camera.get('instance_frames'):
            self.instance_frames += camera['instance_frames']
            self.matches.update(pooled_matches({source: camera['matches']}))
        self.scenes.append({part: camera[part] for part in ('panoptic', 'tracking', 'panoptic_skipped')
                            if part in camera})

    def figures(self, classes: Optional[list[str]]) -> dict:
        figures: dict = {'frames': self.frames}
        if self.confusion is not None:
            figures.update(scores_from_confusion(self.confusion, classes), confusion=self.confusion.tolist())
        if self.instance_frames:
            figures['instances'] = {'frames': self.instance_frames, **instance_scores_from_matches(self.matches)}
        figures.update(panoptic_tracking_results(self.scenes))
        return figures


def with_one_label_set(results: Sequence[dict]) -> list[dict]:
    """``results`` where every bag's semantic ground truth is in the label set most bags use; a
    bag in another one becomes an error (its matrix cannot be summed with theirs)."""
    counts = Counter(result['label_set'] for result in results if 'label_set' in result)
    if len(counts) < 2:
        return list(results)
    fleet_set = counts.most_common(1)[0][0]
    return [{'bag': result['bag'], 'error': f'ground truth in label set {result["label_set"]}, the fleet\'s is '
                                            f'{fleet_set}: evaluate such bags as a fleet of their own'}
            if result.get('label_set', fleet_set) != fleet_set else result for result in results]


def merged(results: Sequence[dict]) -> dict:
    """One report from per-bag results: confusion matrices summed and instance matches pooled over
    bags (overall and per camera topic), scored once; per-bag rows scored on their own; errors listed."""
    results = with_one_label_set(results)
    good = [result for result in results if 'error' not in result]
    label_sets = sorted({result['label_set'] for result in good if 'label_set' in result})
    classes = next((result['classes'] for result in good if 'classes' in result), None)
    report = {'bags': [], 'cameras': {}, 'errors': [{'bag': r['bag'], 'error': r['error']} for r in results
                                                    if 'error' in r]}
    overall, cameras = PooledScores(), {}
    for result in good:
        bag = PooledScores()
        for topic, camera in result['cameras'].items():
            for scores in (bag, overall, cameras.setdefault(topic, PooledScores())):
                scores.add(camera, f'{result["bag"]}{topic}')
        report['bags'].append({'bag': result['bag'], 'cached': result.get('cached', False),
                               'seconds': result['seconds'], 'notes': result.get('notes', []), **bag.figures(classes)})
    report['cameras'] = {topic: scores.figures(classes) for topic, scores in cameras.items()}
    if good:
        report['overall'] = {'label_set': label_sets[0] if label_sets else None, **overall.figures(classes)}
    return report


def write_fleet_report(report: dict, folder: Path) -> Path:
    """report.json and report.md (a row per bag and per camera, the overall figures, the errors)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'report.json').write_text(json.dumps(report, indent=1))
    lines = ['# Fleet evaluation', '']
    if report.get('untrained_tasks'):
        lines += [f'**{untrained_note(report["untrained_tasks"])}.**', '']
    if 'overall' in report:
        lines += [f'{len(report["bags"])} bags, {report["overall"]["frames"]} frames: {headline(report["overall"])} '
                  f'(confusion matrices summed and instance matches pooled over every bag and camera).', '']
    lines += ['| bag | frames | mIoU | pixel accuracy | AP | AP50 | PQ | HOTA | seconds | |',
              '|---|---|---|---|---|---|---|---|---|---|']
    lines += [f'| {row["bag"]} | {row["frames"]} | {percent(row.get("miou"))} | '
              f'{percent(row.get("pixel_accuracy"))} | {percent(row.get("instances", {}).get("ap"))} | '
              f'{percent(row.get("instances", {}).get("ap50"))} | {panoptic_quality(row)} | {hota(row)} | '
              f'{row["seconds"]:.1f} | {"cached" if row["cached"] else ""} |' for row in report['bags']]
    lines += ['', '| camera | frames | mIoU | AP | PQ | HOTA |', '|---|---|---|---|---|---|']
    lines += [f'| {topic} | {entry["frames"]} | {percent(entry.get("miou"))} | '
              f'{percent(entry.get("instances", {}).get("ap"))} | {panoptic_quality(entry)} | {hota(entry)} |'
              for topic, entry in report['cameras'].items()]
    if 'overall' in report:
        lines += [''] + panoptic_tracking_lines(report['overall'])
    notes = [f'- {row["bag"]}: {note}' for row in report['bags'] for note in row['notes']]
    if notes:
        lines += ['', '## Notes', ''] + notes
    if report['errors']:
        lines += ['', '## Bags not evaluated', '']
        lines += [f'- {error["bag"]}: {error["error"]}' for error in report['errors']]
    (folder / 'report.md').write_text('\n'.join(lines) + '\n')
    return folder / 'report.md'


def headline(figures: dict) -> str:
    """The scores of a report entry in a few words: mIoU (and pixel accuracy), AP, PQ, HOTA."""
    words = []
    if figures.get('miou') is not None:
        words.append(f'mIoU {percent(figures["miou"])}, pixel accuracy {percent(figures["pixel_accuracy"])}')
    if 'instances' in figures:
        words.append(f'AP {percent(figures["instances"]["ap"])}, AP50 {percent(figures["instances"]["ap50"])} '
                     f'({figures["instances"]["frames"]} frames)')
    if 'panoptic' in figures:
        words.append(f'PQ {panoptic_quality(figures)}')
    if 'tracking' in figures:
        words.append(f'HOTA {hota(figures)}')
    return '; '.join(words) or 'nothing scored'
