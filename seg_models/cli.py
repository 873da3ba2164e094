"""``seg-models`` (also ``python -m seg_models``): export, build, inspect and benchmark models.

  seg-models export --task semantic --checkpoint ckpt.pth --output model.onnx
  seg-models build  --task instance --backend tensorrt --precision fp16 --input-size 1024 2048
  seg-models build  --backend tensorrt --precision int8 --calibration-images frames/ --onnx-only
  seg-models info   ~/.cache/seg_models            (or a .onnx file)
  seg-models bench  --architecture deeplabv3plus_mobilenet_v3_large --input-size 512 1024
  seg-models bench  --backends onnxruntime --precisions fp32 fp16 int8 --calibration-images frames/ --frames frames/
  seg-models bench  --device cuda --iterations 30   (GPU path against torchvision's eager models, per stage)

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
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format='%(levelname)s %(message)s')
    try:
        return args.run(args)
    except (BackendError, CheckpointError, ValueError, OSError) as error:
        print(f'seg-models {args.command}: {error}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
