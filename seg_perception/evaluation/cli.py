"""``seg_bag``: datasets to bags, replay through the live nodes, evaluation and report.

    seg_bag make ../cityscapes drive.bag                 # or an images/+labels/ folder, or a video
    seg_bag make front/ rear/ two.bag --camera-topic /front/image_raw --camera-topic /rear/image_raw
    seg_bag replay drive.bag result.bag --start-pipeline # or with the nodes already running
    seg_bag replay drive.bag result.bag --start-pipeline --tasks semantic -p semantic_segmentation:input_height:=256
    seg_bag evaluate result.bag report/                  # report/report.md, report.json, *.png
    seg_bag evaluate-fleet drives/ fleet_report/ --workers 4   # many bags on Ray, models run directly
    seg_bag evaluate-fleet drives/ fleet_report/ --tasks semantic --through-nodes   # ... or through the nodes
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from seg_perception.bringup.driving_pipeline import TASKS
from seg_perception.evaluation.bag_io import STORAGE_PLUGINS, BagError, bag_topics, cameras_in_bag
from seg_models.data.datasets import DATASET_KINDS
from seg_perception.messages.dds_profile import LOCALHOST_PROFILE, use_large_images_profile
from seg_perception.messages.topics import CAMERA

USER_ERRORS = (BagError, FileNotFoundError, ValueError, RuntimeError, TimeoutError)


def command_make(args: argparse.Namespace) -> int:
    from seg_models.data.datasets import open_dataset
    from seg_perception.evaluation.make_bag import make_bag

    datasets = [open_dataset(source, args.kind, args.split, args.label_set, args.max_frames) for source in args.source]
    cameras = args.camera_topic or [CAMERA]
    count = make_bag(datasets, args.output, args.storage, args.rate, args.compression, camera_topics=cameras)
    info = datasets[0].info
    print(f'{count} frames of {info.dataset} (ground truth: {info.label_set or "none"}) from {len(cameras)} '
          f'camera(s) written to {args.output}')
    return 0


def command_replay(args: argparse.Namespace) -> int:
    from seg_perception.bringup.driving_pipeline import PANOPTIC_FUSION, pipeline_nodes
    from seg_perception.evaluation.replay import ReplaySettings, replay, start_pipeline_commands

    settings = ReplaySettings(bag=args.bag, output=args.output, camera_topics=args.camera_topic or (), rate=args.rate,
                              frame_timeout_sec=args.frame_timeout, startup_timeout_sec=args.startup_timeout,
                              storage=args.storage)
    if not args.start_pipeline:
        summary = replay(settings)
    else:
        from seg_perception.bringup.driving_pipeline import CONFIG_PATH
        from seg_perception.bringup.processes import NodeProcesses
        from seg_perception.package_share import data_path

        cameras = cameras_in_bag(bag_topics(args.bag), settings.camera_topics)
        checkpoints = {'semantic_checkpoint': args.semantic_checkpoint, 'instance_checkpoint': args.instance_checkpoint}
        commands = start_pipeline_commands(args.config or data_path(CONFIG_PATH), cameras, list(args.param),
                                           checkpoints, args.tasks, args.panoptic)
        started = pipeline_nodes(args.tasks) + ([PANOPTIC_FUSION] if args.panoptic else [])
        with NodeProcesses(commands) as processes:
            summary = replay(settings, processes.check_alive, started_outputs=[node.output for node in started])
    missing = ', '.join(f'{topic}: {count}' for topic, count in summary.missing.items())
    print(f'{summary.frames} frames replayed ({summary.mode}); frames without output: {missing}; '
          f'result in {args.output}')
    return 0


def command_evaluate(args: argparse.Namespace) -> int:
    from seg_perception.evaluation.evaluate import evaluate
    from seg_perception.evaluation.report import hota, panoptic_quality, untrained_note, write_report

    results, evaluations = evaluate(args.result_bag, camera_topics=args.camera_topic or ())
    report = write_report(results, evaluations, args.report)
    headline = []
    if 'semantic_cityscapes_official' in results:
        headline.append(f'mIoU (official) {100 * results["semantic_cityscapes_official"]["miou"]:.1f}%')
    if results.get('semantic', {}).get('miou') is not None:
        headline.append(f'mIoU {100 * results["semantic"]["miou"]:.1f}%')
    if 'instances_cityscapes_official' in results:
        headline.append(f'AP {100 * results["instances_cityscapes_official"]["ap"]:.1f}%')
    if 'panoptic' in results:
        headline.append(f'PQ {panoptic_quality(results)}')
    if 'tracking' in results:
        headline.append(f'HOTA {hota(results)}')
    cameras = f' from {len(results["cameras"])} cameras' if 'cameras' in results else ''
    print(f'{results["frames"]["replayed"]} frames{cameras}; {", ".join(headline) or "no ground truth"}; '
          f'report: {report}')
    if results.get('untrained_nodes'):
        print(untrained_note(results['untrained_nodes']))
    return 0


def command_evaluate_fleet(args: argparse.Namespace) -> int:
    from seg_perception.evaluation.fleet import FleetSettings, fleet_bags, headline, run_fleet, write_fleet_report
    from seg_perception.evaluation.report import untrained_note
    from seg_perception.evaluation.fleet_worker import FleetModel

    bags = fleet_bags(args.bags)
    if not bags:
        raise FileNotFoundError(f'no bags in {" ".join(args.bags)}')
    checkpoints = {'semantic_checkpoint': args.semantic_checkpoint, 'instance_checkpoint': args.instance_checkpoint}
    model = FleetModel(tasks=tuple(args.tasks), config=args.config, overrides=tuple(args.param),
                       checkpoints=tuple((name, path) for name, path in checkpoints.items() if path),
                       predictor=args.predictor, through_nodes=args.through_nodes, batch_size=args.batch_size,
                       panoptic=args.panoptic)
    settings = FleetSettings(model=model, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                             address=args.address, cache_dir=args.cache_dir or args.report / 'bag_results',
                             domain_id_base=args.domain_id_base)
    started = time.perf_counter()
    report = run_fleet(bags, settings)
    report['untrained_tasks'] = model.untrained_tasks()
    path = write_fleet_report(report, args.report)
    cached = sum(row['cached'] for row in report['bags'])
    overall = report.get('overall')
    figures = f'{overall["frames"]} frames, {headline(overall)}' if overall else 'no frames scored'
    print(f'{len(report["bags"])} bags evaluated ({cached} from the cache), {len(report["errors"])} not; {figures}; '
          f'{time.perf_counter() - started:.1f} s; report: {path}')
    if report['untrained_tasks']:
        print(untrained_note(report['untrained_tasks']))
    return 0


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """The pipeline's tasks and parameters, as replay --start-pipeline and evaluate-fleet take them."""
    parser.add_argument('--config', type=Path, default=None,
                        help='parameter file of the pipeline\'s nodes (default: the package\'s config/driving.yaml)')
    parser.add_argument('--semantic-checkpoint', default='')
    parser.add_argument('--instance-checkpoint', default='')
    parser.add_argument('--tasks', nargs='+', default=list(TASKS), choices=TASKS,
                        help='the nodes (models) to run (default: both)')
    parser.add_argument('-p', '--param', action='append', default=[], metavar='[NODE:]NAME:=VALUE',
                        help='parameter override for the nodes (models); NODE: (semantic_segmentation, '
                             'instance_segmentation) for one of them only')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='seg_bag', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    make = commands.add_parser('make', help='dataset folder or video -> rosbag2')
    make.add_argument('source', type=Path, nargs='+',
                      help='Cityscapes root, images/+labels/ folder, or a video file; one per camera, or one for all. '
                           '--kind moving_shapes: a background image file, or any other name (e.g. moving_shapes) '
                           'for grey noise')
    make.add_argument('output', type=Path, help='bag folder to create')
    make.add_argument('--kind', default='auto', choices=DATASET_KINDS,
                      help='moving_shapes: a synthetic sequence whose instance ids persist across frames (tracking '
                           'scores), 40 frames unless --max-frames')
    make.add_argument('--split', default='val', help='Cityscapes split')
    make.add_argument('--label-set', default='camvid',
                      help='id space of a folder dataset\'s labels: a label set (camvid, cityscapes: train ids, '
                           'mapillary_vistas, a .yaml) or cityscapes_label_ids; every label image is checked')
    make.add_argument('--storage', default='mcap', choices=tuple(STORAGE_PLUGINS))
    make.add_argument('--rate', type=float, default=10.0, help='frames per second of the bag\'s stamps')
    make.add_argument('--compression', default='none', choices=('none', 'jpeg', 'png'),
                      help='camera as sensor_msgs/Image (none) or CompressedImage on <topic>/compressed')
    make.add_argument('--max-frames', type=int, default=0)
    make.add_argument('--camera-topic', action='append', default=None,
                      help=f'camera image topic, once per camera (default {CAMERA}); several cameras put their '
                           f'CameraInfo and ground truth in their namespaces')
    make.set_defaults(run=command_make)

    replay = commands.add_parser('replay', help='bag -> running nodes -> result bag')
    replay.add_argument('bag', type=Path)
    replay.add_argument('output', type=Path, help='result bag folder to create')
    replay.add_argument('--camera-topic', action='append', default=None,
                        help='camera topic in the bag to replay, once per camera (its /compressed variant is found '
                             'too); default: every image topic with a camera_info beside it')
    replay.add_argument('--rate', type=float, default=0.0,
                        help='0: as fast as the nodes keep up, nothing lost (default); R > 0: R x recorded rate')
    replay.add_argument('--frame-timeout', type=float, default=120.0, help='seconds to wait for a frame\'s outputs')
    replay.add_argument('--startup-timeout', type=float, default=300.0,
                        help='seconds to wait for the nodes\' outputs and camera subscriptions to appear')
    replay.add_argument('--storage', default='mcap', choices=tuple(STORAGE_PLUGINS))
    replay.add_argument('--start-pipeline', action='store_true',
                        help='start the driving pipeline\'s nodes (config/driving.yaml, use_sim_time) for the replay')
    replay.add_argument('--panoptic', action='store_true',
                        help='with --start-pipeline: also start the panoptic node and record segmentation/panoptic '
                             '(seg_bag evaluate then scores PQ on it instead of fusing the two predictions)')
    add_pipeline_arguments(replay)
    replay.set_defaults(run=command_replay)

    evaluate = commands.add_parser('evaluate', help='result bag -> metrics and report')
    evaluate.add_argument('result_bag', type=Path)
    evaluate.add_argument('report', type=Path, help='folder for report.md, report.json and plots')
    evaluate.add_argument('--camera-topic', action='append', default=None,
                          help='camera to evaluate, once per camera; default: every camera in the bag')
    evaluate.set_defaults(run=command_evaluate)

    fleet = commands.add_parser('evaluate-fleet', help='many bags -> seg_models on Ray workers -> one report')
    fleet.add_argument('bags', nargs='+', help='bag folders, folders of bags, globs, or @list.txt (one per line)')
    fleet.add_argument('report', type=Path, help='folder for report.md, report.json and the per-bag results')
    fleet.add_argument('--workers', type=int, default=2, help='Ray workers, each with the model loaded once')
    fleet.add_argument('--gpus-per-worker', type=float, default=0.0)
    fleet.add_argument('--address', default=None, help='a running Ray cluster (auto, ray://head:10001); default: '
                                                       'a local Ray on this machine')
    fleet.add_argument('--cache-dir', type=Path, default=None,
                       help='per-bag results, reused while bag and model are unchanged (default: REPORT/bag_results)')
    fleet.add_argument('--batch-size', type=int, default=4, help='frames per model call (direct mode)')
    add_pipeline_arguments(fleet)
    fleet.add_argument('--through-nodes', action='store_true',
                       help='replay each bag through the pipeline\'s nodes (real DDS, one ROS domain id per worker) '
                            'instead of running the models directly')
    fleet.add_argument('--panoptic', action='store_true',
                       help='with --through-nodes: also start the panoptic node and score its output (PQ); '
                            'directly, the two results are always fused and scored')
    fleet.add_argument('--domain-id-base', type=int, default=100,
                       help='--through-nodes: worker i uses ROS domain id BASE + i (default 100)')
    fleet.add_argument('--predictor', default='model',
                       help='model (default), or ground_truth_echo: answer with the ground truth (a perfect '
                            'predictor, to check the path)')
    fleet.set_defaults(run=command_evaluate_fleet)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    use_large_images_profile(os.environ, LOCALHOST_PROFILE)  # replayed frames, and the nodes it starts
    try:
        return args.run(args)
    except USER_ERRORS as error:
        print(f'seg_bag {args.command}: {error}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
