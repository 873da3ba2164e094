"""``seg-models bench --device cuda``: our GPU path beside torchvision's eager models, in one run.

For each network (DeepLabv3+ ResNet-50 and MobileNetV3, Mask R-CNN R50-FPN) and batch size, the
same camera frames go through:

* ours: ``PyTorchBackend`` on CUDA with its ``DevicePipeline`` (one uint8 upload, resize and
  normalisation on the device, bilinear logits to camera size / masks pasted on the device, small
  results back) at fp32 and fp16, and at fp16 with each choice undone once (fp16 weights, CUDA
  graphs, the channels-last choice flipped), so each is kept only where it pays;
* ours on the host path (frames resized, ids upsampled and masks pasted on the CPU), as before;
* torchvision's own eager model with the same weights, as its users run it: frames uploaded as
  uint8, normalised on the GPU, ``model(x)['out']`` (logits upsampled inside) then argmax for
  DeepLabv3, ``maskrcnn_resnet50_fpn`` with its own transform and full-frame mask paste for Mask
  R-CNN; fp16 by autocast.

torchvision has no DeepLabv3+: its ``deeplabv3_resnet50`` / ``deeplabv3_mobilenet_v3_large`` are
DeepLabv3 (no decoder, output stride 8), given the same backbone weights; the table says so. Mask
R-CNN is the same network with the same weights and the same detection settings on both sides.
Times are ms per frame (median and 95th percentile of the batch time, divided by the batch), end
to end from numpy frames to numpy results; the stages come from CUDA events of the same runs.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from seg_models.backends.device_pipeline import DeviceOptions, StageClock
from seg_models.configs import InstanceFilter, InstanceModelConfig, SemanticModelConfig, build_config

STAGES = ('upload', 'preprocess', 'model', 'postprocess', 'download')
DEFAULT_ARCHITECTURES = ('deeplabv3plus_resnet50', 'deeplabv3plus_mobilenet_v3_large', 'maskrcnn_resnet50_fpn')
# torchvision's model for each of ours (DeepLabv3 where we run DeepLabv3+)
TORCHVISION_MODELS = {'deeplabv3plus_resnet50': 'deeplabv3_resnet50',
                      'deeplabv3plus_mobilenet_v3_large': 'deeplabv3_mobilenet_v3_large',
                      'maskrcnn_resnet50_fpn': 'maskrcnn_resnet50_fpn'}
# Every published detection is pasted: torchvision's own box threshold, at most 50 per image
# (random weights score every class near 1/9, so each frame has the full 50 to paste).
INSTANCE_FILTER = InstanceFilter(score_threshold=0.05, max_instances=50)


@dataclass
class Row:
    name: str
    per_frame_ms: list[float]  # per iteration: batch time / batch size
    stages_ms: dict[str, float] = dataclasses.field(default_factory=dict)  # medians per frame

    @property
    def median(self) -> float:
        return float(np.median(self.per_frame_ms))

    @property
    def p95(self) -> float:
        return float(np.percentile(self.per_frame_ms, 95))


def timed(run: Callable[[], object], batch: int, iterations: int, warmup: int, pipeline=None) -> Row:
    """``run()`` ``warmup`` times, then ``iterations`` timed ones (each returns numpy results, so
    the device has finished); stage times from ``pipeline``'s clock where there is one."""
    for _ in range(warmup):
        run()
    per_frame, stages = [], {stage: [] for stage in STAGES}
    for _ in range(iterations):
        if pipeline is not None:
            pipeline.clock = StageClock(cuda=pipeline.cuda)
        started = time.perf_counter()
        run()
        per_frame.append((time.perf_counter() - started) * 1e3 / batch)
        if pipeline is not None:
            for stage, value in pipeline.clock.durations_ms().items():
                stages.setdefault(stage, []).append(value / batch)
    if pipeline is not None:
        pipeline.clock = None
    return Row('', per_frame, {stage: float(np.median(values)) for stage, values in stages.items() if values})


def any_grouped_convolution(architecture: str) -> bool:
    """Whether ``architecture`` has depthwise convolutions (the channels-last choice depends on it)."""
    return 'mobilenet' in architecture


def our_segmenter(architecture: str, precision: str, camera_size, input_size, device: str,
                  device_side: bool = True, options: DeviceOptions = DeviceOptions()):
    """Our segmenter for ``architecture`` on the PyTorch backend (untrained weights, reproducible)."""
    from seg_models.backends.pytorch import PyTorchBackend
    from seg_models.segmenters.instance import InstanceSegmenter, instance_deployment
    from seg_models.segmenters.semantic import SemanticSegmenter, semantic_deployment

    if architecture.startswith('maskrcnn'):
        config = build_config(InstanceModelConfig, dict(architecture=architecture, input_size=input_size,
                                                        max_detections=INSTANCE_FILTER.max_instances,
                                                        output_filter=INSTANCE_FILTER))
        graph, labels, classes, source = instance_deployment(config)
        backend = PyTorchBackend(graph.module, graph.output_names, device, precision, device_side, options)
        return InstanceSegmenter(backend, labels, input_size, classes, config.output_filter, None, source)
    config = build_config(SemanticModelConfig, dict(architecture=architecture, input_size=input_size))
    graph, labels, source = semantic_deployment(config)
    backend = PyTorchBackend(graph.module, graph.output_names, device, precision, device_side, options)
    return SemanticSegmenter(backend, labels, input_size, source)


def torchvision_runner(architecture: str, ours, precision: str, device: str) -> Callable[[list], object]:
    """torchvision's eager model with our weights (the backbone's, for DeepLabv3), run as its users
    do; returns frames -> numpy results."""
    import torchvision

    name = TORCHVISION_MODELS[architecture]
    builder = getattr(torchvision.models.segmentation if name.startswith('deeplab') else
                      torchvision.models.detection, name)
    module = ours.backend.module
    if name.startswith('deeplab'):
        model = builder(weights=None, weights_backbone=None, num_classes=ours.label_set.num_classes, aux_loss=False)
        ours_backbone = {key: value.float() for key, value in module.network.backbone.state_dict().items()}
        shared = {key: value for key, value in ours_backbone.items()
                  if key in model.backbone.state_dict() and model.backbone.state_dict()[key].shape == value.shape}
        model.backbone.load_state_dict(shared, strict=False)
    else:
        height, width = ours.transform.input_size
        model = builder(weights=None, weights_backbone=None, num_classes=len(ours.class_map),
                        min_size=height, max_size=width, box_score_thresh=INSTANCE_FILTER.score_threshold,
                        box_detections_per_img=INSTANCE_FILTER.max_instances)
        model.load_state_dict(module.model.state_dict())
    model = model.eval().to(device)
    mean = torch.tensor((0.485, 0.456, 0.406), device=device).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225), device=device).view(1, 3, 1, 1)

    @torch.inference_mode()
    def run(frames: list) -> object:
        batch = torch.from_numpy(np.stack(frames)).to(device).permute(0, 3, 1, 2).float() / 255
        with torch.autocast('cuda', dtype=torch.float16, enabled=precision == 'fp16'):
            if name.startswith('deeplab'):
                return model((batch - mean) / std)['out'].argmax(1).to(torch.uint8).cpu().numpy()
            detections = model(list(batch))
        return [{key: (value > 0.5 if key == 'masks' else value).cpu().numpy() for key, value in d.items()}
                for d in detections]
    return run


def bench_rows(architecture: str, batch: int, camera_size, input_size, iterations: int, warmup: int,
               device: str, precisions: Sequence[str]) -> list[Row]:
    """Every row of one network at one batch size."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (*camera_size, 3), dtype=np.uint8) for _ in range(batch)]
    semantic = not architecture.startswith('maskrcnn')
    variants = [(f'ours {precision}', precision, True, DeviceOptions()) for precision in precisions]
    if 'fp16' in precisions and batch == 1:  # each optimisation left out once
        if semantic:
            variants.append(('ours fp16, autocast (fp32 weights)', 'fp16', True, DeviceOptions(half_weights=False)))
            variants.append(('ours fp16, no CUDA graph', 'fp16', True, DeviceOptions(cuda_graphs=False)))
        variants.append(('ours fp16, channels-last flipped', 'fp16', True,
                         DeviceOptions(channels_last=any_grouped_convolution(architecture))))
    variants += [(f'ours {precision}, host pre/post', precision, False, DeviceOptions()) for precision in precisions]
    rows = []
    for name, precision, device_side, options in variants:
        segmenter = our_segmenter(architecture, precision, camera_size, input_size, device, device_side, options)
        row = timed(lambda: segmenter.segment(frames), batch, iterations, warmup, segmenter.backend.device_pipeline)
        rows.append(dataclasses.replace(row, name=name))
        if name == f'ours {precisions[0]}':
            reference = segmenter
        else:
            del segmenter
        torch.cuda.empty_cache()
    for precision in precisions:
        torchvision_run = torchvision_runner(architecture, reference, precision, device)
        row = timed(lambda: torchvision_run(frames), batch, iterations, warmup)
        rows.append(dataclasses.replace(row, name=f'torchvision {TORCHVISION_MODELS[architecture]} {precision}'))
        torch.cuda.empty_cache()
    return rows


def print_table(title: str, rows: list[Row]) -> None:
    """Rows with per-stage figures and the speed-up against torchvision at the same precision."""
    torchvision = {row.name.split()[-1]: row.median for row in rows if row.name.startswith('torchvision')}
    print(f'\n{title}')
    print(f'{"path":<48} {"median":>7} {"p95":>7} ' + ' '.join(f'{stage[:8]:>8}' for stage in STAGES) +
          '  vs torchvision')
    for row in rows:
        precision = next((p for p in torchvision if p in row.name.split(', ')[0].split()), None)
        ratio = f'{torchvision[precision] / row.median:6.2f}x' if precision and not row.name.startswith('torch') else ''
        stages = ' '.join(f'{row.stages_ms[stage]:8.2f}' if stage in row.stages_ms else f'{"-":>8}' for stage in STAGES)
        print(f'{row.name:<48} {row.median:7.2f} {row.p95:7.2f} {stages}  {ratio}')


def run_device_benchmark(architectures: Sequence[str], batches: Sequence[int], camera_size: tuple[int, int],
                         input_size: Optional[tuple[int, int]], precisions: Sequence[str], iterations: int,
                         warmup: int, device: str = 'cuda') -> int:
    """Print one table per network and batch size; ``device`` cpu runs the same code (a smoke test)."""
    if device.startswith('cuda') and not torch.cuda.is_available():
        print('seg-models bench --device cuda: PyTorch sees no CUDA GPU here')
        return 1
    input_size = tuple(input_size or camera_size)
    import torchvision

    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith('cuda') else 'CPU'
    print(f'{name}, torch {torch.__version__}, torchvision {torchvision.__version__}, CUDA '
          f'{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; camera frames {camera_size[0]}x'
          f'{camera_size[1]}, network input {input_size[0]}x{input_size[1]}; {iterations} timed runs after {warmup}; '
          f'ms per frame; stages are medians from CUDA events ("-": inside a CUDA graph replay, counted in model)')
    for architecture in architectures:
        for batch in batches:
            rows = bench_rows(architecture, batch, camera_size, input_size, iterations, warmup, device, precisions)
            note = ' (torchvision: DeepLabv3, output stride 8, same backbone weights)' \
                if not architecture.startswith('maskrcnn') else \
                f' (up to {INSTANCE_FILTER.max_instances} instances per frame, same weights both sides)'
            print_table(f'{architecture}, batch {batch}{note}', rows)
    return 0
