"""``seg-models`` (also ``python -m seg_models``): export, build, inspect and benchmark models.

  seg-models export --task semantic --checkpoint ckpt.pth --output model.onnx
  seg-models build  --task instance --backend tensorrt --precision fp16 --input-size 1024 2048
  seg-models build  --backend tensorrt --precision int8 --calibration-images frames/ --onnx-only
  seg-models info   ~/.cache/seg_models            (or a .onnx file)
  seg-models bench  --architecture deeplabv3plus_mobilenet_v3_large --input-size 512 1024
  seg-models bench  --backends onnxruntime --precisions fp32 fp16 int8 --calibration-images frames/ --frames frames/
  seg-models bench  --device cuda --iterations 30   (GPU path against torchvision's eager models, per stage)
  seg-models train  --data ../shared/data/camvid --output runs/camvid --iterations 8000 --crop-size 288 384
  torchrun --nproc-per-node 2 -m seg_models train ...   (or --ray-address auto --ray-workers N)
  seg-models weights list
  seg-models weights fetch deeplabv3plus_r50_d8_cityscapes
  seg-models weights half runs/camvid/model.safetensors model_fp16.safetensors

``build`` fills the engine cache that nodes read, so no node waits minutes for an engine;
``--onnx-only`` stops before TensorRT, with the graph at its precision made and checked.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from seg_models.backends.base import BackendError
from seg_models.checkpoints.reading import CheckpointError
from seg_models.configs import BACKENDS, DEFAULT_INPUT_SIZE, PRECISIONS, BackendSettings, build_config
from seg_models.tasks import TASKS, get_task, task_of
from seg_models.training import TrainingError


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags named like the config fields (and node parameters) they set; unset flags keep the
    config's default, so the CLI builds exactly what a node with the same settings loads."""
    defaults, deployment = {name: task.config_type() for name, task in TASKS.items()}, BackendSettings()

    def per_task(field: str) -> str:
        return 'default: ' + ' / '.join(f'{getattr(config, field)} ({name})' for name, config in defaults.items()
                                        if hasattr(config, field))

    parser.add_argument('--task', choices=tuple(TASKS), default='semantic',
                        help='; '.join(f'{name}: {task.description}' for name, task in TASKS.items()))
    parser.add_argument('--architecture', help=per_task('architecture'))
    parser.add_argument('--checkpoint', help='weights file; default: untrained weights')
    parser.add_argument('--label-set', help=per_task('label_set'))
    parser.add_argument('--output-stride', type=int, choices=(8, 16), help=per_task('output_stride'))
    parser.add_argument('--model-metadata', help='bring-your-own ONNX model metadata (.yaml)')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('HEIGHT', 'WIDTH'), default=DEFAULT_INPUT_SIZE)
    parser.add_argument('--max-batch', '--batch-size', type=int, dest='max_batch',
                        help='images per backend call at most: the TensorRT profile\'s largest batch, and the fixed '
                             'batch instance graphs are built for; default: ' + ' / '.join(
                                 f'{config.deployment.max_batch} ({name})' for name, config in defaults.items()))
    parser.add_argument('--backend', choices=BACKENDS, help=f'default: {deployment.backend}')
    parser.add_argument('--device', help=f'default: {deployment.device}')
    parser.add_argument('--precision', choices=PRECISIONS, help=f'default: {deployment.precision}')
    parser.add_argument('--engine-dir', help='engine cache; default: $SEG_MODELS_CACHE_DIR or ~/.cache/seg_models')
    parser.add_argument('--calibration-images',
                        help='folder of camera frames: int8 calibration, and fp16 range checks '
                             '(seg_models.deploy.precision)')


def model_config(args: argparse.Namespace, backend: Optional[str] = None, precision: Optional[str] = None):
    """The task's model config (seg_models.configs) the nodes would build from the same settings."""
    values = dict(vars(args), backend=backend or args.backend, precision=precision or args.precision)
    return build_config(get_task(args.task).config_type, values, input_size=tuple(args.input_size))


def command_export(args: argparse.Namespace) -> int:
    config = model_config(args, backend='pytorch')
    if hasattr(config, 'with_confidence'):
        config = dataclasses.replace(config, with_confidence=args.confidence)
    get_task(args.task).deployment_graph(config).export(Path(args.output))  # traced on the CPU
    print(f'wrote {args.output}')
    return 0


def command_build(args: argparse.Namespace) -> int:
    """Pre-build the artifacts the nodes will load, exactly as they would build them; with
    ``--onnx-only``, only the ONNX graph at the asked precision, checked, on any machine."""
    started = time.perf_counter()
    config = model_config(args)
    if args.onnx_only:
        return _build_onnx_only(config, started)
    segmenter = task_of(config).create_segmenter(config)
    print(f'ready: {segmenter.backend.describe()} in {time.perf_counter() - started:.1f} s; '
          f'cache {args.engine_dir or "default"} (see `seg-models info`)')
    return 0


def _build_onnx_only(config, started: float) -> int:
    """The TensorRT-bound ONNX graph at ``config``'s precision, made and validated without TensorRT:
    ONNX checker, TensorRT operator coverage, and a run in ONNX Runtime on the CPU."""
    from seg_models.backends.onnxruntime import OnnxRuntimeBackend
    from seg_models.deploy.artifacts import precision_onnx_artifact, require_tensorrt_operators
    from seg_models.deploy.engine_cache import EngineCache
    from seg_models.deploy.tensorrt_operators import TABLE_SOURCE

    if getattr(config, 'model_metadata', ''):
        raise ValueError('--onnx-only prepares our own exported graphs; a bring-your-own ONNX model is used as it is')
    deployment = task_of(config).deployment_graph(config)
    settings = config.deployment
    path = precision_onnx_artifact(deployment, settings, EngineCache(settings.engine_dir or None))
    require_tensorrt_operators(path)
    height, width = deployment.input_size or DEFAULT_INPUT_SIZE
    batch = np.zeros((deployment.fixed_batch or 1, 3, height, width), np.uint8)
    outputs = OnnxRuntimeBackend(path, 'cpu', precision=settings.precision).infer(batch)
    print(f'ready: {settings.precision} ONNX graph {path} in {time.perf_counter() - started:.1f} s')
    print(f'  checked: ONNX checker; every node is one TensorRT parses ({TABLE_SOURCE}); ONNX Runtime ran it '
          f'({", ".join(f"{name} {list(value.shape)}" for name, value in outputs.items())})')
    print('  build the engine where TensorRT and the GPU are: the same command without --onnx-only')
    return 0


def command_info(args: argparse.Namespace) -> int:
    from seg_models.deploy.engine_cache import EngineCache, default_cache_dir
    from seg_models.deploy.onnx_export import read_onnx_metadata

    target = Path(args.path) if args.path else default_cache_dir()
    if target.is_dir():
        entries = EngineCache(target).entries()
        print(f'{target}: {len(entries)} artifact(s)')
        for path, key in entries:
            size = f'{path.stat().st_size / 1e6:.1f} MB' if path.is_file() else 'missing'
            print(f'- {path.name} ({size})')
            for field, value in (key or {'sidecar': 'unreadable'}).items():
                print(f'    {field}: {json.dumps(value)}')
        return 0
    if target.suffix == '.onnx':
        import onnx

        model = onnx.load(str(target), load_external_data=False)
        print(f'{target}: opset {model.opset_import[0].version}')
        for kind, values in (('input', model.graph.input), ('output', model.graph.output)):
            for value in values:
                dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
                element_type = onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)
                print(f'  {kind} {value.name}: {element_type} {dims}')
        for field, value in read_onnx_metadata(target).items():
            print(f'  {field}: {json.dumps(value)}')
        return 0
    sidecar = target.with_name(target.name + '.json')
    if sidecar.is_file():
        print(sidecar.read_text())
        return 0
    print(f'{target}: not a cache folder, an ONNX file or an artifact with a sidecar', file=sys.stderr)
    return 2


def command_bench(args: argparse.Namespace) -> int:
    """Same frames through each backend at each precision; a table of latencies, ratios to the
    first row, and how closely each lower precision answers like the same backend's fp32 (and fp32
    like itself on the frames with sensor noise, the yardstick for those figures). On a CUDA
    device: our GPU path beside torchvision's eager models (seg_models.bench.device_benchmark)."""
    from seg_models.backends.availability import resolved_device

    if resolved_device(args.device or BackendSettings().device).startswith('cuda'):
        from seg_models.bench.device_benchmark import run_device_benchmark

        return run_device_benchmark(args.architectures, args.batches, tuple(args.camera_size), args.input_size,
                                    args.precisions or ['fp32', 'fp16'], args.iterations, args.warmup,
                                    resolved_device(args.device or 'auto'))
    from seg_models.bench.backend_comparison import bench_frames, compare_backends, print_comparison

    args.input_size = args.input_size or DEFAULT_INPUT_SIZE
    height, width = args.input_size
    batch_size = args.max_batch or 1
    frames = bench_frames(args.frames, (height, width), batch_size)
    rows = compare_backends(get_task(args.task), lambda backend, precision: model_config(args, backend, precision),
                            args.backends, args.precisions or ['fp32'], frames, args.iterations, args.warmup)
    if not rows:
        return 1
    print_comparison(rows, f'{args.task} {args.architecture or "(default)"} at {height}x{width}, batch {batch_size}, '
                           f'{args.iterations} iterations (median), '
                           f'{"frames from " + args.frames if args.frames else "random frames"}')
    return 0


def command_train(args: argparse.Namespace) -> int:
    """Train (or resume) a network on a dataset; see seg_models.training.run."""
    from seg_models.training.checkpointing import CheckpointFolder
    from seg_models.training.run import TrainingSettings, train

    settings = TrainingSettings(
        task=args.task, data=args.data, output=args.output, train_split=args.train_split, val_split=args.val_split,
        dataset_label_set=args.dataset_label_set or '', architecture=args.architecture or '',
        label_set=args.label_set or '', output_stride=args.output_stride or 16, head_layout=args.head_layout,
        init=args.init or '',
        iterations=args.iterations, batch_size=args.batch_size, accumulate=args.accumulate,
        crop_size=tuple(args.crop_size), base_size=tuple(args.base_size or ()), learning_rate=args.learning_rate,
        eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, input_size=tuple(args.input_size or ()),
        seed=args.seed, workers=args.workers, device=args.device, amp=args.amp, licence=args.licence,
        stop_after=args.stop_after)
    if CheckpointFolder(Path(args.output)).last() is not None and not args.resume:
        raise ValueError(f'{args.output} holds a run already: --resume continues it, or train into another folder')
    if args.ray_address:
        from seg_models.training.distributed import train_on_ray

        card = train_on_ray(settings, args.ray_address, args.ray_workers, args.gpus_per_worker)
    else:
        from seg_models.training.distributed import started_by_torchrun, train_with_torchrun

        card = train_with_torchrun(settings) if started_by_torchrun() else train(settings)
    if card['iterations'] < settings.iterations:
        return 0  # stopped early: the checkpoint is saved, --resume continues
    if card.get('validation'):
        print(f'validation: {json.dumps({k: v for k, v in card["validation"].items() if k != "per_class_iou"})}')
    print(f'weights: {Path(args.output) / "model.safetensors"} (model card: {Path(args.output) / "model_card.md"})')
    return 0


def command_weights_list(args: argparse.Namespace) -> int:
    """``weights list``: the registry, one block per name, and whether the cache holds each file."""
    from seg_models.checkpoints.fetch import source_url, weights_dir
    from seg_models.checkpoints.registry import named_checkpoints

    for entry in named_checkpoints().values():
        cached = (weights_dir() / entry.file_name).is_file()
        settings = ', '.join(f'{name} {value}' for name, value in entry.settings.items())
        print(f'{entry.name}  ({entry.task}{", fetched" if cached else ""})\n  {entry.upstream}\n  {settings}\n'
              f'  licence: {entry.licence}\n  from: {source_url(entry)} (sha256 {entry.sha256_prefix}...)')
    return 0


def command_weights_fetch(args: argparse.Namespace) -> int:
    """``weights fetch NAME...``: each file downloaded (once) into the cache; its path printed."""
    from seg_models.checkpoints.fetch import fetch
    from seg_models.checkpoints.registry import get_named_checkpoint

    for name in args.names:
        try:
            entry = get_named_checkpoint(name)
        except KeyError as error:
            raise ValueError(error.args[0]) from None
        print(f'{name}: {fetch(entry, args.engine_dir)}')
    return 0


def command_weights(args: argparse.Namespace) -> int:
    """``weights half SRC DST``: the weights of SRC (a checkpoint or a training run's model) in fp16,
    with its model card and ``model_card.md`` beside them: half the size, for shipping (the
    segmenters load them into fp32 networks)."""
    import torch

    from seg_models.checkpoints.model_card import read_model_card
    from seg_models.checkpoints.reading import read_state_dict
    from seg_models.training.checkpointing import save_weights
    from seg_models.training.run import model_card_markdown

    card = read_model_card(args.source)
    save_weights(Path(args.destination), read_state_dict(args.source), card, dtype=torch.float16)
    if card:
        Path(args.destination).with_suffix('.md').write_text(model_card_markdown(card))
    print(f'wrote {args.destination} ({Path(args.destination).stat().st_size / 1e6:.1f} MB, fp16)'
          + (f' and {Path(args.destination).with_suffix(".md")}' if card else ' (no model card in the source)'))
    return 0


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    from seg_models.training.run import TRAINING_TASKS, TrainingSettings

    defaults = TrainingSettings()
    parser.add_argument('--task', choices=TRAINING_TASKS, default='semantic')
    parser.add_argument('--data', required=True,
                        help='dataset root: Cityscapes (leftImg8bit/, gtFine/), images/ + labels/, or CamVid '
                             '(train/, trainannot/, val/, valannot/)')
    parser.add_argument('--output', required=True, help='run folder: checkpoints, TensorBoard, model.safetensors')
    parser.add_argument('--resume', action='store_true', help='continue the run in --output from its last checkpoint')
    parser.add_argument('--train-split', default=defaults.train_split)
    parser.add_argument('--val-split', default=defaults.val_split, help="'' to skip validation")
    parser.add_argument('--dataset-label-set', help='id space of images/ + labels/ folders (default: --label-set)')
    parser.add_argument('--architecture', help='default: the task\'s (seg-models export --help)')
    parser.add_argument('--label-set', help='classes to learn; default: the data\'s own')
    parser.add_argument('--output-stride', type=int, choices=(8, 16))
    parser.add_argument('--head-layout', choices=('paper', 'separable'), default=defaults.head_layout,
                        help='DeepLabv3+ head: the paper\'s (torchvision ASPP) or depthwise-separable (a fifth of the '
                             'weights; the demo model\'s)')
    parser.add_argument('--init', help='weights to start from, a file or a named checkpoint (seg-models weights '
                                       'list; class-specific layers of another label set are re-initialised); '
                                       'default: random')
    parser.add_argument('--iterations', type=int, default=defaults.iterations)
    parser.add_argument('--batch-size', type=int, default=defaults.batch_size, help='global batch (all processes)')
    parser.add_argument('--accumulate', type=int, default=defaults.accumulate, help='micro-batches per step')
    parser.add_argument('--crop-size', type=int, nargs=2, default=defaults.crop_size, metavar=('HEIGHT', 'WIDTH'))
    parser.add_argument('--base-size', type=int, nargs=2, metavar=('HEIGHT', 'WIDTH'),
                        help='the size random scaling is relative to (default: the images\' own)')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('HEIGHT', 'WIDTH'),
                        help='network input the model card records for the nodes (default: --base-size)')
    parser.add_argument('--learning-rate', type=float, default=0.0, help='default: the recipe\'s')
    parser.add_argument('--eval-every', type=int, default=defaults.eval_every, help='iterations; 0: at the end')
    parser.add_argument('--checkpoint-every', type=int, default=defaults.checkpoint_every)
    parser.add_argument('--seed', type=int, default=defaults.seed)
    parser.add_argument('--workers', type=int, default=defaults.workers, help='data loading processes')
    parser.add_argument('--device', default=defaults.device)
    parser.add_argument('--amp', action=argparse.BooleanOptionalAction, default=None,
                        help='automatic mixed precision (default: on CUDA)')
    parser.add_argument('--licence', default='', help='the data\'s licence, recorded in the model card')
    parser.add_argument('--stop-after', type=int, default=0,
                        help='end after so many iterations of this invocation, checkpoint saved (--resume continues)')
    parser.add_argument('--ray-address', help='train on Ray Train workers: a cluster address, auto, or local')
    parser.add_argument('--ray-workers', type=int, default=2)
    parser.add_argument('--gpus-per-worker', type=float, default=0.0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='seg-models', description=__doc__.split('\n\n')[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--verbose', action='store_true', help='log what is built, reused and why')
    commands = parser.add_subparsers(dest='command', required=True)
    add = lambda name, help: commands.add_parser(name, help=help, parents=[common])  # noqa: E731
    export = add('export', 'write the deployment graph as ONNX')
    _model_arguments(export)
    export.add_argument('--output', required=True)
    export.add_argument('--confidence', action='store_true', help='semantic: add the confidence output')
    export.set_defaults(run=command_export)
    build = add('build', 'pre-build ONNX files / TensorRT engines into the engine cache')
    _model_arguments(build)
    build.add_argument('--remeasure', action='store_true',
                       help='backend auto: time the candidates again instead of reusing the recorded choice')
    build.add_argument('--onnx-only', action='store_true',
                       help='only make and check the ONNX graph at --precision (no TensorRT needed)')
    build.set_defaults(run=command_build)
    info = add('info', 'describe an ONNX file, an artifact or the engine cache')
    info.add_argument('path', nargs='?', default='')
    info.set_defaults(run=command_info)
    bench = add('bench', 'one input through each backend, latency table with ratios')
    _model_arguments(bench)
    bench.add_argument('--backends', nargs='+', default=['pytorch', 'onnxruntime', 'tensorrt'],
                       choices=[b for b in BACKENDS if b != 'auto'])
    bench.add_argument('--precisions', nargs='+', choices=PRECISIONS,
                       help='each backend at each (fp16/int8 graphs from seg_models.deploy.precision); default: fp32, '
                            'on CUDA fp32 fp16')
    bench.add_argument('--frames', help='folder of camera frames to run (default: random frames)')
    bench.add_argument('--iterations', type=int, default=10)
    bench.add_argument('--warmup', type=int, default=2)
    from seg_models.bench.device_benchmark import DEFAULT_ARCHITECTURES

    cuda = bench.add_argument_group('on a CUDA device (--device cuda): ours against torchvision, per stage')
    cuda.add_argument('--architectures', nargs='+', default=list(DEFAULT_ARCHITECTURES), metavar='ARCHITECTURE',
                      help=f'default: {" ".join(DEFAULT_ARCHITECTURES)}')
    cuda.add_argument('--batches', nargs='+', type=int, default=[1, 4])
    cuda.add_argument('--camera-size', type=int, nargs=2, default=(1024, 2048), metavar=('HEIGHT', 'WIDTH'),
                      help='camera frames (default 1024 2048); the network input is --input-size, else this')
    bench.set_defaults(run=command_bench, input_size=None)
    train = add('train', 'train a network on a dataset (one process, torchrun or Ray Train)')
    _train_arguments(train)
    train.set_defaults(run=command_train)
    weights = add('weights', 'weights files: list and fetch named checkpoints, write one in fp16')
    actions = weights.add_subparsers(dest='action', required=True, metavar='ACTION')
    actions.add_parser('list', help='the named checkpoints (checkpoint: NAME fetches one on first use)',
                       description='the named checkpoints').set_defaults(run=command_weights_list)
    fetch = actions.add_parser('fetch', help='download named checkpoints into the cache now',
                               description='download named checkpoints into the cache now')
    fetch.add_argument('names', nargs='+', metavar='NAME')
    fetch.add_argument('--engine-dir', help='cache folder; default: $SEG_MODELS_CACHE_DIR or ~/.cache/seg_models')
    fetch.set_defaults(run=command_weights_fetch)
    half = actions.add_parser('half', help='write SRC in fp16 with its model card',
                              description='write SRC (a checkpoint or a training run\'s model) in fp16')
    half.add_argument('source')
    half.add_argument('destination')
    half.set_defaults(run=command_weights)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format='%(levelname)s %(message)s')
    logging.getLogger('seg_models.deploy.progress').setLevel(logging.INFO)  # what a long step is doing, always
    try:
        return args.run(args)
    except (BackendError, CheckpointError, TrainingError, ValueError, OSError) as error:
        print(f'seg-models {args.command}: {error}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
