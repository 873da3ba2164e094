"""The evaluation report: report.json (every number), report.md (what people read) and PNG plots
(per-class IoU, confusion matrix, latency histogram, a few frames with predictions and truth)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import cv2
import matplotlib

matplotlib.use('Agg')  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from seg_models.data.visualize import draw_instances, overlay  # noqa: E402
from seg_perception.evaluation.evaluate import Evaluation  # noqa: E402
from seg_perception.evaluation.ground_truth import class_ids_of_ground_truth, ground_truth_label_set  # noqa: E402


def untrained_note(names: Sequence[str]) -> str:
    """The line every report and summary carries when a model ran with untrained weights."""
    return (f'UNTRAINED weights ({", ".join(names)}): these predictions are random and their scores say nothing '
            f'about a model; give the node a checkpoint')


def percent(value: Optional[float]) -> str:
    """A fraction as a percentage for reports; n/a where there was nothing to score."""
    return 'n/a' if value is None else f'{100 * value:.1f}%'


def panoptic_quality(figures: dict) -> str:
    """PQ over all classes of a report entry, n/a where not scored."""
    return percent(figures.get('panoptic', {}).get('all', {}).get('pq'))


def hota(figures: dict) -> str:
    """HOTA of a report entry (TrackEval's percent), n/a where not scored."""
    value = figures.get('tracking', {}).get('HOTA')
    return 'n/a' if value is None else f'{value:.1f}%'


def _plot_per_class_iou(per_class: dict[str, Optional[float]], path: Path, title: str) -> None:
    names = [name for name, value in per_class.items() if value is not None]
    values = [100 * per_class[name] for name in names]
    figure, axis = plt.subplots(figsize=(max(6, 0.35 * len(names) + 2), 4))
    axis.bar(range(len(names)), values, color='tab:blue')
    axis.set_xticks(range(len(names)), names, rotation=70, ha='right', fontsize=8)
    axis.set_ylabel('IoU (%)')
    axis.set_ylim(0, 100)
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_confusion(classes: list[str], matrix: np.ndarray, path: Path) -> None:
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape, np.float64), where=rows > 0)
    figure, axis = plt.subplots(figsize=(0.35 * len(classes) + 3, 0.35 * len(classes) + 2.5))
    image = axis.imshow(normalised, cmap='Blues', vmin=0, vmax=1)
    axis.set_xticks(range(len(classes) + 1), classes + ['(unlabeled)'], rotation=70, ha='right', fontsize=7)
    axis.set_yticks(range(len(classes)), classes, fontsize=7)
    axis.set_xlabel('predicted')
    axis.set_ylabel('ground truth')
    figure.colorbar(image, ax=axis, fraction=0.04, label='share of the ground-truth class')
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_latency(latencies: dict[str, list[float]], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for topic, values in latencies.items():
        if values:
            axis.hist(values, bins=30, alpha=0.6, label=topic)
    axis.set_xlabel('latency: camera frame published -> output received (ms)')
    axis.set_ylabel('frames')
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def titled(rgb: np.ndarray, title: str) -> np.ndarray:
    """``rgb`` under a band with ``title`` written in it, for strips of panels side by side."""
    band = np.full((max(18, rgb.shape[0] // 14), rgb.shape[1], 3), 255, np.uint8)
    scale = band.shape[0] / 30
    cv2.putText(band, title, (4, int(band.shape[0] * 0.75)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                max(1, round(scale * 1.5)), cv2.LINE_AA)
    return np.concatenate([band, rgb], axis=0)


def _overlay_frames(evaluation: Evaluation, folder: Path) -> list[str]:
    """Per chosen frame: camera | semantic prediction | semantic ground truth | instances, side by side."""
    folder.mkdir(parents=True, exist_ok=True)
    contents, topics, written = evaluation.contents, evaluation.topics, []
    semantic_set = contents.label_sets.get(topics.semantic_prediction)
    instance_set = contents.label_sets.get(topics.instance_prediction)
    truth_set = ground_truth_label_set(contents.info.label_set)
    for key, rgb in contents.overlay_frames.items():
        outputs = contents.overlay_outputs.get(key, {})
        panels = [titled(rgb, 'camera')]
        if topics.semantic_prediction in outputs and semantic_set is not None:
            prediction = overlay(rgb, outputs[topics.semantic_prediction], semantic_set)
            panels.append(titled(prediction, 'semantic prediction'))
        if topics.ground_truth_semantic in outputs and truth_set is not None:
            truth = class_ids_of_ground_truth(outputs[topics.ground_truth_semantic], contents.info.label_set)
            panels.append(titled(overlay(rgb, truth, truth_set), 'semantic ground truth'))
        if topics.instance_prediction in outputs and instance_set is not None:
            panels.append(titled(draw_instances(rgb, outputs[topics.instance_prediction].instances, instance_set),
                                 'instances'))
        name = f'{evaluation.frame_name(key)}.png'
        cv2.imwrite(str(folder / name), cv2.cvtColor(np.concatenate(panels, axis=1), cv2.COLOR_RGB2BGR))
        written.append(name)
    return written


def panoptic_tracking_lines(results: dict) -> list[str]:
    """report.md's panoptic quality (all, things, stuff, per class) and tracking sections, for a
    result bag and a fleet alike; one line where panoptic quality could not be scored."""
    lines = []
    if results.get('panoptic_skipped'):
        lines += ['## Panoptic quality', '', results['panoptic_skipped'] + '.', '']
    panoptic = results.get('panoptic')
    if panoptic:
        lines += ['## Panoptic quality (cityscapesscripts evalPanopticSemanticLabeling)', '',
                  f'PQ **{percent(panoptic["all"]["pq"])}** over {panoptic["frames"]} frames, {panoptic["label_set"]} '
                  f'classes; prediction {panoptic["source"]}.', '', '| classes | PQ | SQ | RQ | n |',
                  '| --- | --- | --- | --- | --- |']
        lines += [f'| {group} | {percent(panoptic[group]["pq"])} | {percent(panoptic[group]["sq"])} | '
                  f'{percent(panoptic[group]["rq"])} | {panoptic[group]["n"]} |'
                  for group in ('all', 'things', 'stuff')]
        lines += ['', '| class | PQ | SQ | RQ | TP | FP | FN |', '| --- | --- | --- | --- | --- | --- | --- |']
        lines += [f'| {name} | {percent(values["pq"])} | {percent(values["sq"])} | {percent(values["rq"])} | '
                  f'{values["tp"]} | {values["fp"]} | {values["fn"]} |'
                  for name, values in panoptic['per_class'].items() if values is not None]
        lines.append('')
    tracking = results.get('tracking')
    if tracking:
        figures = ('HOTA', 'DetA', 'AssA', 'LocA', 'MOTSA', 'IDF1')
        lines += ['## Tracking (TrackEval, MOTS masks)', '',
                  f'HOTA **{tracking["HOTA"]:.1f}%** over {tracking["frames"]} frames in {tracking["sequences"]} '
                  f'sequence(s) (one per camera and bag).', '',
                  '| ' + ' | '.join(figures) + ' | IDSW | GT ids | predicted ids |',
                  '| ' + ' | '.join('---' for _ in range(len(figures) + 3)) + ' |',
                  '| ' + ' | '.join(f'{tracking[name]:.1f}%' for name in figures) +
                  f' | {tracking["IDSW"]} | {tracking["GT_IDs"]} | {tracking["IDs"]} |', '']
    return lines


def _camera_table(cameras: dict[str, dict]) -> list[str]:
    """One row per camera: its frames, mIoU and AP, and its semantic latency."""
    lines = ['## Per camera', '', '| camera | frames | mIoU | mIoU (official) | AP (official) | latency p50 |',
             '| --- | --- | --- | --- | --- | --- |']
    for camera, results in cameras.items():
        semantic = results.get('semantic', {}).get('miou')
        official = results.get('semantic_cityscapes_official', {}).get('miou')
        ap = results.get('instances_cityscapes_official', {}).get('ap')
        p50 = [f'{summary["p50_ms"]:.0f} ms' for summary in results['latency'].values() if summary.get('count')]
        lines.append(f'| `{camera}` | {results["frames"]["replayed"]} | {percent(semantic)} | {percent(official)} | '
                     f'{percent(ap)} | {", ".join(p50)} |')
    return lines + ['']


def write_report(results: dict, evaluations: Sequence[Evaluation], folder: Path) -> Path:
    """Write report.json, report.md and the plots into ``folder``; returns report.md's path. With
    several cameras the figures are over all of them, followed by a table per camera."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'report.json').write_text(json.dumps(results, indent=2))
    lines = [f'# Evaluation of `{results["bag"]}`', '']
    if results.get('untrained_nodes'):
        lines += [f'**{untrained_note(results["untrained_nodes"])}.**', '']
    info, replay = results['ground_truth'], results['replay']
    lines += [f'Ground truth: {info["dataset"]} ({info["label_set"] or "no labels"}). Replay: '
              f'{replay.get("mode", "?")}, {results["frames"]["replayed"]} frames.', '']
    lines += ['## Frames', '', '| output | frames with output | without output |', '| --- | --- | --- |']
    for topic, counts in results['frames'].items():
        if isinstance(counts, dict):
            lines.append(f'| `{topic}` | {counts["with_output"]} | {counts["without_output"]} |')
    lines.append('')
    if 'cameras' in results:
        lines += _camera_table(results['cameras'])
    official = results.get('semantic_cityscapes_official')
    semantic = results.get('semantic')
    if official:
        lines += ['## Semantic segmentation (cityscapesscripts, official)', '',
                  f'mIoU (classes) **{percent(official["miou"])}**, iIoU {percent(official["iiou"])}, '
                  f'mIoU (categories) {percent(official["categories_iou"])}.', '']
    if semantic:
        lines += [f'## Semantic segmentation (confusion matrix, {semantic["label_set"]} classes)', '',
                  f'mIoU **{percent(semantic["miou"])}**, pixel accuracy {percent(semantic["pixel_accuracy"])}, '
                  f'{semantic["frames"]} frames.', '', '| class | IoU |', '| --- | --- |']
        lines += [f'| {name} | {percent(value)} |' for name, value in semantic['per_class_iou'].items()]
        lines += ['', '![per-class IoU](per_class_iou.png)', '', '![confusion matrix](confusion_matrix.png)', '']
        _plot_per_class_iou(semantic['per_class_iou'], folder / 'per_class_iou.png',
                            f'per-class IoU, mIoU {percent(semantic["miou"])}')
        matrix = results['confusion_matrix']
        _plot_confusion(matrix['classes'], np.asarray(matrix['matrix']), folder / 'confusion_matrix.png')
    instances = results.get('instances_cityscapes_official')
    if instances:
        lines += ['## Instance segmentation (cityscapesscripts, official)', '',
                  f'AP **{percent(instances["ap"])}**, AP50 {percent(instances["ap50"])}, '
                  f'{instances["frames"]} frames.', '', '| class | AP | AP50 |', '| --- | --- | --- |']
        lines += [f'| {name} | {percent(values["ap"])} | {percent(values["ap50"])} |'
                  for name, values in instances['per_class'].items()]
        lines.append('')
    lines += panoptic_tracking_lines(results)
    lines += ['## Latency and throughput', '', 'Latency: camera frame published by the replay -> output received.',
              '', '| output | p50 | p95 | p99 | max | throughput |', '| --- | --- | --- | --- | --- | --- |']
    for topic, summary in results['latency'].items():
        if summary.get('count'):
            fps = results['throughput_fps'].get(topic)
            lines.append(f'| `{topic}` | {summary["p50_ms"]:.0f} ms | {summary["p95_ms"]:.0f} ms | '
                         f'{summary["p99_ms"]:.0f} ms | {summary["max_ms"]:.0f} ms | '
                         f'{"n/a" if fps is None else f"{fps:.2f} fps"} |')
    _plot_latency({topic: values for evaluation in evaluations for topic, values in evaluation.latencies_ms().items()},
                  folder / 'latency_histogram.png')
    lines += ['', '![latency histogram](latency_histogram.png)', '']
    if results['nodes']:
        lines += ['## Nodes (their last /diagnostics status)', '',
                  '| status | frames received | published | dropped | batch sizes (size: calls) | backend '
                  '| precision |',
                  '| --- | --- | --- | --- | --- | --- | --- |']
        for name, values in results['nodes'].items():
            lines.append(f'| {name} | {values.get("frames received", "")} | {values.get("frames published", "")} | '
                         f'{values.get("frames dropped", "")} | {values.get("batch sizes (size: calls)", "")} | '
                         f'{values.get("backend", "")} | {values.get("precision", "")} |')
        lines.append('')
    overlays = [name for evaluation in evaluations for name in _overlay_frames(evaluation, folder / 'frames')]
    if overlays:
        lines += ['## Frames (camera | semantic prediction | semantic ground truth | instances)', '']
        lines += [f'![{name}](frames/{name})' for name in overlays]
    report = folder / 'report.md'
    report.write_text('\n'.join(lines) + '\n')
    return report
