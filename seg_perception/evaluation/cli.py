"""``seg_bag``: datasets to bags, replay through the live nodes, evaluation and report.

    seg_bag make ../cityscapes drive.bag                 # or an images/+labels/ folder, or a video
    seg_bag replay drive.bag result.bag --start-pipeline # or with the nodes already running
    seg_bag evaluate result.bag report/                  # report/report.md, report.json, *.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from seg_perception.evaluation.bag_io import STORAGE_PLUGINS, BagError, bag_topics, camera_topic_in_bag
from seg_perception.evaluation.datasets import DATASET_KINDS
from seg_perception.messages.topics import CAMERA, COMPRESSED_SUFFIX

USER_ERRORS = (BagError, FileNotFoundError, ValueError, RuntimeError, TimeoutError)


def command_make(args: argparse.Namespace) -> int:
    from seg_perception.evaluation.datasets import open_dataset
    from seg_perception.evaluation.make_bag import make_bag

    dataset = open_dataset(args.source, args.kind, args.split, args.label_set, args.max_frames)
    count = make_bag(dataset, args.output, args.storage, args.rate, args.compression, camera_topic=args.camera_topic)
    print(f'{count} frames of {dataset.info.dataset} (ground truth: {dataset.info.label_set or "none"}) '
          f'written to {args.output}')
    return 0


def command_replay(args: argparse.Namespace) -> int:
    from seg_perception.evaluation.replay import ReplaySettings, replay, start_pipeline_commands

    settings = ReplaySettings(bag=args.bag, output=args.output, camera_topic=args.camera_topic, rate=args.rate,
                              frame_timeout_sec=args.frame_timeout, startup_timeout_sec=args.startup_timeout,
                              storage=args.storage)
    if not args.start_pipeline:
        summary = replay(settings)
    else:
        from seg_models.package_data import data_path
        from seg_perception.bringup.driving_pipeline import CONFIG_PATH
        from seg_perception.bringup.processes import NodeProcesses

        compressed = camera_topic_in_bag(bag_topics(args.bag), settings.camera_topic).endswith(COMPRESSED_SUFFIX)
        checkpoints = {'semantic_checkpoint': args.semantic_checkpoint, 'instance_checkpoint': args.instance_checkpoint}
        commands = start_pipeline_commands(args.config or data_path(CONFIG_PATH), settings.camera_topic, compressed,
                                           list(args.param), checkpoints)
        with NodeProcesses(commands) as processes:
            summary = replay(settings, processes.check_alive, expect_all_outputs=True)
    missing = ', '.join(f'{topic}: {count}' for topic, count in summary.missing.items())
    print(f'{summary.frames} frames replayed ({summary.mode}); frames without output: {missing}; '
          f'result in {args.output}')
    return 0


def command_evaluate(args: argparse.Namespace) -> int:
    from seg_perception.evaluation.evaluate import evaluate
    from seg_perception.evaluation.report import write_report

    results, evaluation = evaluate(args.result_bag, camera_topic=args.camera_topic)
    report = write_report(results, evaluation, args.report)
    headline = []
    if 'semantic_cityscapes_official' in results:
        headline.append(f'mIoU (official) {100 * results["semantic_cityscapes_official"]["miou"]:.1f}%')
    if results.get('semantic', {}).get('miou') is not None:
        headline.append(f'mIoU {100 * results["semantic"]["miou"]:.1f}%')
    if 'instances_cityscapes_official' in results:
        headline.append(f'AP {100 * results["instances_cityscapes_official"]["ap"]:.1f}%')
    print(f'{results["frames"]["replayed"]} frames; {", ".join(headline) or "no ground truth"}; report: {report}')
    return 0


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='seg_bag', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    make = commands.add_parser('make', help='dataset folder or video -> rosbag2')
    make.add_argument('source', type=Path, help='Cityscapes root, images/+labels/ folder, or a video file')
    make.add_argument('output', type=Path, help='bag folder to create')
    make.add_argument('--kind', default='auto', choices=DATASET_KINDS)
    make.add_argument('--split', default='val', help='Cityscapes split')
    make.add_argument('--label-set', default='camvid', help='label set of a folder dataset\'s labels')
    make.add_argument('--storage', default='mcap', choices=tuple(STORAGE_PLUGINS))
    make.add_argument('--rate', type=float, default=10.0, help='frames per second of the bag\'s stamps')
    make.add_argument('--compression', default='none', choices=('none', 'jpeg', 'png'),
                      help='camera as sensor_msgs/Image (none) or CompressedImage on <topic>/compressed')
    make.add_argument('--max-frames', type=int, default=0)
    make.add_argument('--camera-topic', default=CAMERA)
    make.set_defaults(run=command_make)

    replay = commands.add_parser('replay', help='bag -> running nodes -> result bag')
    replay.add_argument('bag', type=Path)
    replay.add_argument('output', type=Path, help='result bag folder to create')
    replay.add_argument('--camera-topic', default=CAMERA, help='camera topic in the bag (its /compressed variant '
                                                               'is found too)')
    replay.add_argument('--rate', type=float, default=0.0,
                        help='0: as fast as the nodes keep up, nothing lost (default); R > 0: R x recorded rate')
    replay.add_argument('--frame-timeout', type=float, default=120.0, help='seconds to wait for a frame\'s outputs')
    replay.add_argument('--startup-timeout', type=float, default=300.0,
                        help='seconds to wait for the nodes\' outputs and camera subscriptions to appear')
    replay.add_argument('--storage', default='mcap', choices=tuple(STORAGE_PLUGINS))
    replay.add_argument('--start-pipeline', action='store_true',
                        help='start the driving pipeline\'s nodes (config/driving.yaml, use_sim_time) for the replay')
    replay.add_argument('--config', type=Path, default=None, help='parameter file for --start-pipeline')
    replay.add_argument('--semantic-checkpoint', default='')
    replay.add_argument('--instance-checkpoint', default='')
    replay.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='parameter override for the started nodes')
    replay.set_defaults(run=command_replay)

    evaluate = commands.add_parser('evaluate', help='result bag -> metrics and report')
    evaluate.add_argument('result_bag', type=Path)
    evaluate.add_argument('report', type=Path, help='folder for report.md, report.json and plots')
    evaluate.add_argument('--camera-topic', default=CAMERA)
    evaluate.set_defaults(run=command_evaluate)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        return args.run(args)
    except USER_ERRORS as error:
        print(f'seg_bag {args.command}: {error}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
