"""Instance segmentation of camera images: Mask R-CNN through any backend, instances at camera size.

``InstanceSegmenter`` resizes each image to the network's fixed input size, runs the deployment
graph (seg_models.models.instance_inference) in batches, and maps detections back: boxes scaled
to camera pixels, masks pasted once at camera resolution, network classes mapped to the output
label set (e.g. a COCO model publishing Cityscapes thing classes).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import cv2
import numpy as np
import torch

from seg_models.backends.base import Backend
from seg_models.backends.factory import BackendSettings, DeploymentGraph, create_backend
from seg_models.checkpoints import load_state_dict_strict, read_state_dict, reproducible_untrained_weights
from seg_models.checkpoint_formats import strip_wrapper_prefix
from seg_models.export import export_instance_onnx
from seg_models.instance_postprocess import InstanceFilter, InstanceResult, instances_from_outputs
from seg_models.labels import COCO_TO_CITYSCAPES_THINGS, LabelSet, get_label_set
from seg_models.models.instance_inference import InstanceInference
from seg_models.models.maskrcnn import MASK_RCNN_ARCHITECTURES, mask_rcnn, network_classes_for

LOGGER = logging.getLogger(__name__)
UNTRAINED_WARNING = (
    'NO CHECKPOINT GIVEN: Mask R-CNN runs with UNTRAINED (random) weights and its detections are '
    'meaningless. Pass a checkpoint to get real instances.')


@dataclass(frozen=True)
class InstanceModelConfig:
    """Everything needed to build an instance segmenter; nodes fill it from their parameters."""

    architecture: str = 'maskrcnn_resnet50_fpn'
    label_set: str = 'cityscapes_things'  # classes the network was trained on (coco_things for COCO weights)
    output_label_set: str = ''  # classes to publish; empty: the network's own
    checkpoint: str = ''
    input_size: tuple[int, int] = (1024, 2048)  # fixed (height, width), multiples of 32
    batch_size: int = 1  # images per backend call (baked into ONNX/TensorRT graphs)
    max_detections: int = 100
    selection: InstanceFilter = field(default_factory=InstanceFilter)
    backend: str = 'auto'
    device: str = 'cpu'
    precision: str = 'fp32'
    engine_dir: str = ''
    calibration_images: str = ''

    def backend_settings(self) -> BackendSettings:
        return BackendSettings(backend=self.backend, device=self.device, precision=self.precision,
                               engine_dir=self.engine_dir, calibration_images=self.calibration_images,
                               max_batch=self.batch_size)


def class_map(network_classes: list[str], network_label_set: LabelSet, output_label_set: LabelSet) -> np.ndarray:
    """network class index -> output label-set id, -1 where the output set has no such class.

    Between different sets, classes are matched through ``COCO_TO_CITYSCAPES_THINGS``.
    """
    output_ids = {label.name: label.id for label in output_label_set.classes}
    network_names = set(network_label_set.names)
    mapping = np.full(len(network_classes), -1, dtype=np.int64)
    for index, name in enumerate(network_classes):
        if name not in network_names:
            continue  # background and placeholders
        if network_label_set.name != output_label_set.name:
            name = COCO_TO_CITYSCAPES_THINGS.get(name) if network_label_set.name == 'coco_things' else None
        if name in output_ids:
            mapping[index] = output_ids[name]
    if (mapping < 0).all():
        raise ValueError(f'no class of {network_label_set.name} maps onto {output_label_set.name}')
    return mapping


class InstanceSegmenter:
    """Backend + class mapping + the resizing between camera pixels and network pixels."""

    def __init__(self, backend: Backend, label_set: LabelSet, input_size: tuple[int, int], class_map: np.ndarray,
                 selection: InstanceFilter, batch_size: Optional[int] = None, weights_source: str = '') -> None:
        self.backend = backend
        self.label_set = label_set
        self.input_size = input_size
        self.class_map = class_map
        self.selection = selection
        self.batch_size = batch_size  # None: the backend takes any batch
        self.weights_source = weights_source

    @property
    def is_trained(self) -> bool:
        return bool(self.weights_source)

    def infer_raw(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's padded outputs for ``images`` (RGB uint8, any sizes), in batches it accepts."""
        height, width = self.input_size
        batch = np.stack([image if image.shape[:2] == self.input_size
                          else cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
                          for image in images]).transpose(0, 3, 1, 2)
        step = self.batch_size or len(images)
        chunks = []
        for start in range(0, len(images), step):
            chunk = batch[start:start + step]
            real = len(chunk)
            if self.batch_size and real < self.batch_size:  # fixed-batch graphs: pad with black frames
                chunk = np.concatenate([chunk, np.zeros((self.batch_size - real, *chunk.shape[1:]), chunk.dtype)])
            outputs = self.backend.infer(np.ascontiguousarray(chunk))
            chunks.append({name: value[:real] for name, value in outputs.items()})
        return {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}

    def segment(self, images: Sequence[np.ndarray]) -> list[InstanceResult]:
        """Instances of each image at its own resolution, filtered by ``selection``."""
        if not images:
            return []
        outputs = self.infer_raw(images)
        return [instances_from_outputs(outputs, position, self.input_size, image.shape[:2], self.class_map,
                                       self.label_set.names, self.selection)
                for position, image in enumerate(images)]


def build_instance_network(config: InstanceModelConfig, network_classes: list[str]) -> tuple[torch.nn.Module, str]:
    """Mask R-CNN with the checkpoint's weights (torchvision layout, e.g. torchvision's COCO weights)."""
    with reproducible_untrained_weights():
        network = mask_rcnn(config.architecture, len(network_classes), max_detections=config.max_detections,
                            score_threshold=min(0.05, config.selection.score_threshold))
    if not config.checkpoint:
        LOGGER.warning(UNTRAINED_WARNING)
        return network, ''
    load_state_dict_strict(network, strip_wrapper_prefix(read_state_dict(config.checkpoint)), config.checkpoint)
    return network, config.checkpoint


def create_instance_segmenter(config: InstanceModelConfig) -> InstanceSegmenter:
    """Build network, weights and backend from ``config``; the backend choice is logged with its reason."""
    if config.architecture not in MASK_RCNN_ARCHITECTURES:
        raise ValueError(f'unknown instance architecture {config.architecture!r}; '
                         f'known: {", ".join(MASK_RCNN_ARCHITECTURES)}')
    if any(side % 32 for side in config.input_size):
        raise ValueError(f'Mask R-CNN input size {config.input_size} must be a multiple of 32 on both sides')
    network_label_set = get_label_set(config.label_set)
    output_label_set = get_label_set(config.output_label_set or config.label_set)
    network_classes = network_classes_for(network_label_set)
    network, weights_source = build_instance_network(config, network_classes)
    graph = InstanceInference(network)
    deployment = DeploymentGraph(
        name=f'{config.architecture}_{network_label_set.name}_b{config.batch_size}',
        output_names=graph.output_names, module=graph, input_size=config.input_size,
        fixed_batch=config.batch_size,
        export=lambda path: export_instance_onnx(graph, path, network_label_set.name, network_classes,
                                                 config.input_size, config.batch_size),
        key={'label_set': network_label_set.name, 'input_size': list(config.input_size),
             'max_detections': config.max_detections, 'box_score_threshold': network.roi_heads.score_thresh,
             'normalisation': {
                 'mean': graph.mean.flatten().tolist(), 'std': graph.std.flatten().tolist()}})
    backend = create_backend(deployment, config.backend_settings())
    LOGGER.info('instance segmenter: %s, classes %s -> %s, backend %s', config.architecture,
                network_label_set.name, output_label_set.name, backend.describe())
    fixed_batch = None if backend.name == 'pytorch' else config.batch_size
    return InstanceSegmenter(backend, output_label_set, config.input_size,
                             class_map(network_classes, network_label_set, output_label_set), config.selection,
                             fixed_batch, weights_source)
