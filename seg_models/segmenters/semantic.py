"""Semantic segmentation of camera images at their own resolution, in batches.

``SemanticSegmenter`` is what nodes and evaluation tools call: its ``CameraTransform`` resizes
images to the network input, a backend runs the whole batch, and class ids come back at each
camera's resolution, with pixels under the confidence threshold unlabeled.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from seg_models.backends.availability import resolved_device
from seg_models.backends.base import Backend, CallTime, release_host_memory
from seg_models.backends.factory import create_backend
from seg_models.checkpoints.formats import import_deeplabv3plus
from seg_models.checkpoints.model_card import DEMO_NOTICE, is_demo_weights, resolved_semantic_config
from seg_models.checkpoints.reading import load_state_dict_strict, read_state_dict, reproducible_untrained_weights
from seg_models.configs import DEFAULT_INPUT_SIZE, SemanticFilter, SemanticModelConfig
from seg_models.data.labels import LabelSet, get_label_set
from seg_models.deploy.graph import DeploymentGraph
from seg_models.deploy.onnx_export import export_semantic_onnx
from seg_models.models.deeplabv3plus import DEEPLABV3PLUS_ARCHITECTURES
from seg_models.models.semantic_graph import SemanticInference
from seg_models.segmenters.transform import CameraTransform

LOGGER = logging.getLogger(__name__)

SEMANTIC_ARCHITECTURES = tuple(DEEPLABV3PLUS_ARCHITECTURES)
# A network run at camera size (input size None, opt-in) costs memory in proportion to the frame:
# about 340 bytes a pixel for DeepLabv3+ MobileNetV3 on the CPU (a 4000x4000 frame took 5.4 GB).
# Frames above this many pixels are refused at camera size; at a fixed input size any frame runs.
CAMERA_SIZE_MAX_PIXELS = 2048 * 2048
BYTES_PER_CAMERA_SIZE_PIXEL = 340
UNTRAINED_WARNING = (
    'NO CHECKPOINT GIVEN: the network runs with UNTRAINED (random) weights and its outputs are '
    'meaningless. Pass a checkpoint to get real segmentation.')


@dataclass
class SemanticResult:
    """One image's result at the image's own resolution."""

    class_ids: np.ndarray  # (H, W) uint8, or uint16 for label sets above 255 classes
    confidence: Optional[np.ndarray] = None  # (H, W) float32 in 0..1 (top softmax probability)

    def unlabel_below(self, threshold: float, ignore_id: int) -> 'SemanticResult':
        """Pixels whose confidence is below ``threshold`` become ``ignore_id`` (unlabeled): better no
        answer than a guess, for consumers that act on every labelled pixel."""
        if threshold <= 0:
            return self
        if self.confidence is None:
            raise ValueError('a confidence threshold needs a model built with confidence output')
        return SemanticResult(np.where(self.confidence < threshold, self.class_ids.dtype.type(ignore_id),
                                       self.class_ids), self.confidence)


class SemanticSegmenter:
    """Backend + label set + the transform between camera pixels and network pixels."""

    def __init__(self, backend: Backend, label_set: LabelSet, input_size: Optional[tuple[int, int]] = None,
                 weights_source: str = '', output_filter: SemanticFilter = SemanticFilter()) -> None:
        self.backend = backend
        self.label_set = label_set
        self.transform = CameraTransform(input_size)
        self.weights_source = weights_source
        self.output_filter = output_filter
        self.backend_time = CallTime()  # of the last ``segment``

    @property
    def is_trained(self) -> bool:
        return bool(self.weights_source)

    def frame_problem(self, size: tuple[int, int]) -> Optional[str]:
        """Why a frame of ``size`` (height, width) is not run, or None: at camera size, one above
        ``CAMERA_SIZE_MAX_PIXELS`` would take gigabytes."""
        height, width = size
        if self.transform.input_size is not None or height * width <= CAMERA_SIZE_MAX_PIXELS:
            return None
        return (f'{width}x{height} frame not run: the network runs at camera size (input_height/input_width 0) and '
                f'would need about {height * width * BYTES_PER_CAMERA_SIZE_PIXEL / 1e9:.1f} GB for it; frames above '
                f'{CAMERA_SIZE_MAX_PIXELS} pixels run only at a fixed input size (set input_height/input_width)')

    def segment(self, images: Sequence[np.ndarray]) -> list[SemanticResult]:
        """Class ids (and confidence where the graph has it) for each image, at its resolution;
        pixels below the confidence threshold are unlabeled.

        Images that share a network size are one backend call (all of them, with a fixed input size);
        on a device pipeline, those that share a camera size too.
        """
        pipeline = self.backend.device_pipeline
        results: list[Optional[SemanticResult]] = [None] * len(images)
        self.backend_time.reset()
        if pipeline is not None:
            self.backend_time.not_separable()
        for indices in self.transform.groups(images, by_camera_size=pipeline is not None):
            group = [images[index] for index in indices]
            if pipeline is None:
                batch = self.transform.batch(group)
                with self.backend_time.timing():
                    outputs = self.backend.infer(batch)
            else:
                outputs = self._on_device(pipeline, group)
            for position, index in enumerate(indices):
                result = self._result_at_camera_size(outputs, position, images[index].shape[:2])
                results[index] = result.unlabel_below(self.output_filter.confidence_threshold, self.label_set.ignore_id)
        return results

    def _on_device(self, pipeline, frames: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs at camera size from the device: frames up as uint8, logits upsampled there
        bilinearly before the argmax, class ids (and confidence) back."""
        with pipeline.session():
            pipeline.mark('start')
            uploaded = pipeline.upload(frames)
            pipeline.mark('upload')
            outputs = pipeline.run(uploaded, self.transform.input_size_for(frames[0].shape), static=True)
            downloaded = pipeline.download(outputs)
            pipeline.mark('download')
        return dict(zip(self.backend.output_names, downloaded))

    def _result_at_camera_size(self, outputs: dict[str, np.ndarray], position: int,
                               size: tuple[int, int]) -> SemanticResult:
        if 'logits' in outputs:  # the CPU graph, external models: upsampled here, straight to the camera's size
            logits, dtype = outputs['logits'][position], self.label_set.class_id_dtype
            wide = len(logits) > np.iinfo(dtype).max  # an external model with more channels than the ids hold
            class_ids = self.transform.argmax_at_image_size(logits, size, np.int64 if wide else dtype)
            class_ids[class_ids >= self.label_set.num_classes] = self.label_set.ignore_id  # a void channel
            class_ids = class_ids.astype(dtype, copy=False)
        else:
            class_ids = self.transform.map_to_image(
                outputs['class_ids'][position].astype(self.label_set.class_id_dtype, copy=False), size, nearest=True)
        confidence = outputs.get('confidence')
        return SemanticResult(
            class_ids=class_ids,
            confidence=None if confidence is None else self.transform.map_to_image(confidence[position], size,
                                                                                   nearest=False))


def build_semantic_network(config: SemanticModelConfig, label_set: LabelSet) -> tuple[torch.nn.Module, str]:
    """The DeepLabv3+ network with the checkpoint's weights; returns (network, weights source).

    The checkpoint's format (ours/torchvision layout, VainF, mmsegmentation) is recognised from its
    keys and decides the head layout. An empty weights source means untrained weights.
    """
    if config.architecture not in DEEPLABV3PLUS_ARCHITECTURES:
        raise ValueError(f'unknown semantic architecture {config.architecture!r}; '
                         f'known: {", ".join(DEEPLABV3PLUS_ARCHITECTURES)}')
    build = DEEPLABV3PLUS_ARCHITECTURES[config.architecture]
    if not config.checkpoint:
        LOGGER.warning('%s %s %s', '*' * 20, UNTRAINED_WARNING, '*' * 20)
        with reproducible_untrained_weights():
            return build(label_set.num_classes, config.output_stride), ''
    if is_demo_weights(config.checkpoint):
        LOGGER.warning('%s %s %s', '*' * 20, DEMO_NOTICE, '*' * 20)
    checkpoint_format, state_dict = import_deeplabv3plus(read_state_dict(config.checkpoint))
    LOGGER.info('checkpoint %s is in %s format (head layout %s)', config.checkpoint, checkpoint_format.name,
                checkpoint_format.head_layout)
    network = build(label_set.num_classes, config.output_stride, checkpoint_format.head_layout)
    load_state_dict_strict(network, state_dict, config.checkpoint)
    return network, config.checkpoint


def semantic_deployment(config: SemanticModelConfig, logits_on_host: Optional[bool] = None
                        ) -> tuple[DeploymentGraph, LabelSet, str]:
    """(the deployment graph, its label set, the weights source) for ``config``: what a backend is
    created from, and what ``seg-models build --onnx-only`` converts without creating one. Settings
    the weights' model card fixes are taken from it (the demo model without a checkpoint).
    ``logits_on_host`` (default: on the CPU, without a confidence output): the graph ends at the
    quarter-resolution logits, upsampled by the host to each camera's size (semantic_graph)."""
    config = resolved_semantic_config(config)
    label_set = get_label_set(config.label_set)
    network, weights_source = build_semantic_network(config, label_set)
    class_id_dtype = torch.uint8 if label_set.class_id_dtype == np.uint8 else torch.int32
    if logits_on_host is None:
        logits_on_host = not config.with_confidence and resolved_device(config.deployment.device) == 'cpu'
    graph = SemanticInference(network, class_id_dtype=class_id_dtype, with_confidence=config.with_confidence,
                              logits_on_host=logits_on_host)
    return semantic_deployment_graph(config, graph, label_set), label_set, weights_source


def create_semantic_segmenter(config: SemanticModelConfig) -> SemanticSegmenter:
    """Build network, weights and backend from ``config``, logging which backend was chosen and why."""
    if config.model_metadata:
        return _external_segmenter(config)
    config = resolved_semantic_config(config)
    deployment, label_set, weights_source = semantic_deployment(config)
    backend = create_backend(deployment, config.deployment)
    del deployment
    if backend.name != 'pytorch':  # the others run their own copy of the weights
        release_host_memory()
    LOGGER.info('semantic segmenter: %s, label set %s, backend %s', config.architecture, label_set.name,
                backend.describe())
    return SemanticSegmenter(backend, label_set, config.input_size, weights_source, config.output_filter)


def semantic_deployment_graph(config: SemanticModelConfig, graph: SemanticInference,
                              label_set: LabelSet) -> DeploymentGraph:
    """How the semantic graph is exported and what its cached artifacts depend on."""
    input_size = config.input_size or DEFAULT_INPUT_SIZE
    # The name tells graph variants apart, so nodes building different ones at once never share a file.
    variant = '_confidence' if graph.with_confidence else '_logits' if graph.logits_on_host else ''
    return DeploymentGraph(
        name=f'{config.architecture}_os{config.output_stride}_{label_set.name}{variant}',
        output_names=graph.output_names, module=graph, input_size=config.input_size,
        export=functools.partial(export_semantic_onnx, graph, label_set=label_set.name, input_size=input_size),
        key={'label_set': label_set.name, 'num_classes': label_set.num_classes,
             'normalisation': {'mean': list(graph.mean.flatten().tolist()), 'std': list(graph.std.flatten().tolist())},
             'outputs': list(graph.output_names), 'class_id_dtype': str(graph.class_id_dtype)})


def _external_segmenter(config: SemanticModelConfig) -> SemanticSegmenter:
    from seg_models.segmenters.external_semantic import ExternalSemanticBackend, load_external_model

    spec = load_external_model(config.model_metadata)
    label_set = get_label_set(spec.label_set)
    graph = DeploymentGraph(name=f'external_{spec.onnx.stem}', output_names=(spec.output_name,),
                            onnx_file=spec.onnx, input_size=spec.input_size,
                            key={'label_set': label_set.name, 'model_metadata': spec.as_key()})
    inner = create_backend(graph, config.deployment)
    backend = ExternalSemanticBackend(inner, spec, label_set, with_confidence=config.with_confidence)
    LOGGER.info('semantic segmenter: external model %s, label set %s, backend %s', spec.onnx, label_set.name,
                backend.describe())
    return SemanticSegmenter(backend, label_set, spec.input_size or config.input_size, str(spec.onnx),
                             config.output_filter)
