"""Instance segmentation of camera images: Mask R-CNN through any backend, instances at camera size.

``InstanceSegmenter`` resizes each image to the network's fixed input size, runs the deployment
graph (seg_models.models.instance_graph) in batches, and maps detections back: boxes scaled
to camera pixels, masks pasted once at camera resolution, network classes mapped to the output
label set (e.g. a COCO model publishing Cityscapes thing classes).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Optional, Sequence

import numpy as np
import torch

from seg_models.backends.base import Backend, CallTime, release_host_memory
from seg_models.backends.factory import create_backend
from seg_models.checkpoints.formats import frozen_batch_norm_eps, strip_wrapper_prefix
from seg_models.checkpoints.named import resolved_instance_config
from seg_models.checkpoints.reading import load_state_dict_strict, read_state_dict, reproducible_untrained_weights
from seg_models.configs import InstanceFilter, InstanceModelConfig
from seg_models.data.labels import COCO_TO_CITYSCAPES_THINGS, LabelSet, get_label_set
from seg_models.deploy.graph import DeploymentGraph
from seg_models.deploy.onnx_export import export_instance_onnx
from seg_models.models.instance_graph import (FP32_NODES, SIZE_DIVISOR, InstanceInference, PublishedDetections,
                                              keep_published_detections)
from seg_models.models.maskrcnn import MASK_RCNN_BUILDERS, freeze_batch_norm, mask_rcnn, network_classes_for
from seg_models.segmenters.instance_postprocess import (InstanceResult, instance_result, instances_from_outputs,
                                                        paste_masks_in_rois, published)
from seg_models.segmenters.transform import CameraTransform

LOGGER = logging.getLogger(__name__)
UNTRAINED_WARNING = (
    'NO CHECKPOINT GIVEN: Mask R-CNN runs with UNTRAINED (random) weights and its detections are '
    'meaningless. Pass a checkpoint to get real instances.')


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
    """Backend + class mapping + the transform between camera pixels and network pixels."""

    def __init__(self, backend: Backend, label_set: LabelSet, input_size: tuple[int, int], class_map: np.ndarray,
                 output_filter: InstanceFilter, fixed_batch: Optional[int] = None, weights_source: str = '') -> None:
        self.backend = backend
        self.backend_time = CallTime()  # of the last ``segment``
        self.label_set = label_set
        self.transform = CameraTransform(input_size)
        self.class_map = class_map
        self.output_filter = output_filter
        self.fixed_batch = fixed_batch  # the graph's baked-in batch (deployment.max_batch); None: any batch
        self.weights_source = weights_source

    @property
    def is_trained(self) -> bool:
        return bool(self.weights_source)

    def infer_raw(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's padded outputs for ``images`` (RGB uint8, any sizes), in batches it accepts."""
        batch = self.transform.batch(images)
        step = self.fixed_batch or len(images)
        chunks = []
        for start in range(0, len(images), step):
            chunk = batch[start:start + step]
            real = len(chunk)
            if self.fixed_batch and real < self.fixed_batch:  # fixed-batch graphs: pad with black frames
                chunk = np.concatenate([chunk, np.zeros((self.fixed_batch - real, *chunk.shape[1:]), chunk.dtype)])
            chunk = np.ascontiguousarray(chunk)
            with self.backend_time.timing():
                outputs = self.backend.infer(chunk)
            chunks.append({name: value[:real] for name, value in outputs.items()})
        return {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}

    def results(self, outputs: dict[str, np.ndarray], images: Sequence[np.ndarray]) -> list[InstanceResult]:
        """The instances of each image in a batch of graph outputs, at the image's resolution."""
        return [instances_from_outputs(outputs, position, self.transform.box_scale(image.shape[:2]),
                                       image.shape[:2], self.class_map, self.label_set.names, self.output_filter)
                for position, image in enumerate(images)]

    def segment(self, images: Sequence[np.ndarray]) -> list[InstanceResult]:
        """Instances of each image at its own resolution, filtered by ``output_filter``."""
        if not images:
            return []
        self.backend_time.reset()
        if self.backend.device_pipeline is not None:
            self.backend_time.not_separable()
            return self._segment_on_device(self.backend.device_pipeline, images)
        return self.results(self.infer_raw(images), images)

    def _segment_on_device(self, pipeline, images: Sequence[np.ndarray]) -> list[InstanceResult]:
        """Frames up once as uint8 per camera size; the small detection outputs come back, the
        published masks are pasted on the device and only their box-sized crops come back."""
        results: list[Optional[InstanceResult]] = [None] * len(images)
        small_outputs = [name for name in self.backend.output_names if name != 'mask_probs']
        for indices in self.transform.groups(images, by_camera_size=True):
            frames = [images[index] for index in indices]
            size = frames[0].shape[:2]
            with pipeline.session():
                pipeline.mark('start')
                uploaded = pipeline.upload(frames)
                pipeline.mark('upload')
                outputs = dict(zip(self.backend.output_names,
                                   pipeline.run(uploaded, self.transform.input_size_for(size), static=False)))
                host = dict(zip(small_outputs, pipeline.download([outputs[name] for name in small_outputs])))
                detections = [published(host, position, self.transform.box_scale(size), size, self.class_map,
                                        self.output_filter) for position in range(len(frames))]
                rows = outputs['mask_probs'].shape[1]  # one paste for the whole batch: rows of all images
                crops = paste_masks_in_rois(outputs['mask_probs'].flatten(0, 1), [
                    dataclasses.replace(detection, index=position * rows + detection.index)
                    for position, image_detections in enumerate(detections) for detection in image_detections],
                    self.output_filter.mask_threshold)
                pipeline.mark('postprocess')
                masks = iter(pipeline.download_flat(crops))
                pipeline.mark('download')
            for index, image_detections in zip(indices, detections):
                results[index] = instance_result(size, image_detections, [next(masks) for _ in image_detections],
                                                 self.label_set.names, self.output_filter.score_threshold)
        return results


def published_detections(output_filter: InstanceFilter, max_detections: int,
                         classes: np.ndarray) -> PublishedDetections:
    """What the graph keeps, in network terms: ``classes`` maps network class indices to output
    label-set ids (-1: not published), and the class filter names output ids."""
    wanted = classes >= 0
    if output_filter.class_ids:
        wanted &= np.isin(classes, output_filter.class_ids)
    return PublishedDetections(output_filter.lowest_kept_score, min(max_detections, output_filter.max_instances),
                               tuple(int(index) for index in np.flatnonzero(wanted)))


def build_instance_network(config: InstanceModelConfig, network_classes: list[str]) -> tuple[torch.nn.Module, str]:
    """Mask R-CNN with the checkpoint's weights (torchvision layout, e.g. torchvision's COCO weights)."""
    with reproducible_untrained_weights():
        network = mask_rcnn(config.architecture, len(network_classes), max_detections=config.max_detections)
    if not config.checkpoint:
        LOGGER.warning('%s %s %s', '*' * 20, UNTRAINED_WARNING, '*' * 20)
        return network, ''
    state_dict = strip_wrapper_prefix(read_state_dict(config.checkpoint))
    eps = frozen_batch_norm_eps(config.architecture, state_dict)
    if eps is not None:
        freeze_batch_norm(network.backbone.body, eps)
        LOGGER.info('checkpoint %s was saved from FrozenBatchNorm2d (torchvision v1 layout): its backbone runs '
                    'FrozenBatchNorm2d with epsilon %g, as torchvision runs these weights', config.checkpoint, eps)
    load_state_dict_strict(network, state_dict, config.checkpoint)
    return network, config.checkpoint


def instance_deployment(config: InstanceModelConfig) -> tuple[DeploymentGraph, LabelSet, np.ndarray, str]:
    """(the deployment graph, the output label set, the network-to-output class map, the weights
    source) for ``config``: what a backend is created from, and what ``seg-models build --onnx-only``
    converts without creating one."""
    config = resolved_instance_config(config)
    if config.architecture not in MASK_RCNN_BUILDERS:
        raise ValueError(f'unknown instance architecture {config.architecture!r}; '
                         f'known: {", ".join(MASK_RCNN_BUILDERS)}')
    if any(side % SIZE_DIVISOR for side in config.input_size):
        raise ValueError(f'Mask R-CNN input size {config.input_size} must be a multiple of {SIZE_DIVISOR} on both '
                         f'sides')
    network_label_set = get_label_set(config.label_set)
    output_label_set = get_label_set(config.output_label_set or config.label_set)
    network_classes = network_classes_for(network_label_set)
    classes = class_map(network_classes, network_label_set, output_label_set)
    network, weights_source = build_instance_network(config, network_classes)
    published = published_detections(config.output_filter, config.max_detections, classes)
    keep_published_detections(network, published)
    graph = InstanceInference(network)
    deployment = instance_deployment_graph(config, graph, network_label_set, network_classes, published)
    return deployment, output_label_set, classes, weights_source


def create_instance_segmenter(config: InstanceModelConfig) -> InstanceSegmenter:
    """Build network, weights and backend from ``config``; the backend choice is logged with its reason."""
    if config.model_metadata:
        return _external_segmenter(config)
    config = resolved_instance_config(config)
    deployment, output_label_set, classes, weights_source = instance_deployment(config)
    backend = create_backend(deployment, config.deployment)
    del deployment
    if backend.name != 'pytorch':  # the others run their own copy of the weights
        release_host_memory()
    LOGGER.info('instance segmenter: %s, classes %s -> %s, backend %s', config.architecture,
                config.label_set, output_label_set.name, backend.describe())
    fixed_batch = None if backend.name == 'pytorch' else config.deployment.max_batch
    return InstanceSegmenter(backend, output_label_set, config.input_size, classes, config.output_filter,
                             fixed_batch, weights_source)


def instance_deployment_graph(config: InstanceModelConfig, graph: InstanceInference, network_label_set: LabelSet,
                              network_classes: list[str], published: PublishedDetections) -> DeploymentGraph:
    """How the instance graph is exported and what its cached artifacts depend on."""
    batch_size = config.deployment.max_batch
    return DeploymentGraph(
        name=f'{config.architecture}_{network_label_set.name}_b{batch_size}',
        output_names=graph.output_names, module=graph, input_size=config.input_size,
        fixed_batch=batch_size, cpu_memory_arena=False, keep_fp32=FP32_NODES,
        export=functools.partial(export_instance_onnx, graph, label_set=network_label_set.name,
                                 network_classes=network_classes, input_size=config.input_size,
                                 batch_size=batch_size),
        key={'label_set': network_label_set.name, 'input_size': list(config.input_size),
             'published': {'score_threshold': published.score_threshold,
                           'max_detections': published.max_detections, 'classes': list(published.classes)},
             'normalisation': {
                 'mean': graph.mean.flatten().tolist(), 'std': graph.std.flatten().tolist()}})


def _external_segmenter(config: InstanceModelConfig):
    """Another exporter's instance model (YOLO-seg, mmdeploy) from its metadata file."""
    from seg_models.checkpoints.fixed_settings import apply_fixed_settings
    from seg_models.segmenters.external_instance import ExternalInstanceSegmenter, load_instance_model

    spec = load_instance_model(config.model_metadata)
    config = apply_fixed_settings(config, {'label_set': spec.label_set}, config.model_metadata, 'its model metadata')
    network_label_set = get_label_set(spec.label_set)
    output_label_set = get_label_set(config.output_label_set or spec.label_set)
    classes = class_map(network_label_set.names, network_label_set, output_label_set)
    graph = DeploymentGraph(name=f'external_{spec.onnx.stem}', output_names=spec.output_names, onnx_file=spec.onnx,
                            input_size=spec.input_size, fixed_batch=spec.batch_size,
                            key={'label_set': network_label_set.name, 'model_metadata': spec.as_key()})
    backend = create_backend(graph, config.deployment)
    LOGGER.info('instance segmenter: %s model %s, classes %s -> %s, backend %s', spec.format, spec.onnx,
                network_label_set.name, output_label_set.name, backend.describe())
    return ExternalInstanceSegmenter(backend, spec, output_label_set, classes, config.output_filter)
