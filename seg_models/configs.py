"""Every setting of a segmenter, typed, with the one set of defaults that nodes and the CLI share.

Nodes declare their ROS parameters from these dataclasses' defaults and build them back with
``build_config`` from the parameter values; ``seg-models`` builds them the same way from its flags.
So a default (the architecture, the backend ...) is written once, here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, TypeVar

#: inference backends; auto picks the fastest one available (see backends/factory.py)
BACKENDS = ('auto', 'pytorch', 'onnxruntime', 'tensorrt')
#: arithmetic precisions a backend may offer (int8: TensorRT only)
PRECISIONS = ('fp32', 'fp16', 'int8')

Config = TypeVar('Config')


@dataclass(frozen=True)
class BackendSettings:
    """How to run a model: backend, device, precision and where built artifacts are cached."""

    backend: str = 'auto'
    device: str = 'auto'  # cpu, cuda, cuda:N; auto: cuda where PyTorch sees a GPU. TensorRT always runs on CUDA
    precision: str = 'fp32'
    engine_dir: str = ''  # engine cache folder; empty: the default cache (see engine_cache)
    calibration_images: str = ''  # folder of images for INT8 calibration
    # Images per backend call at most. It is, at once: the node worker's batch (the newest frame of
    # up to this many cameras), the largest batch of a TensorRT engine's optimization profile, and,
    # for instance graphs, the fixed batch baked into the ONNX graph and engine (padded when short).
    # 1 by default: on a CPU a batch of N costs N images; on a GPU set it to the number of cameras.
    max_batch: int = 1
    remeasure: bool = False  # backend auto: measure the candidates again instead of reusing the recorded choice


@dataclass(frozen=True)
class SemanticFilter:
    """What the semantic segmenter keeps of the network's answer."""

    confidence_threshold: float = 0.0  # less confident pixels become unlabeled (0: every pixel keeps its class)


@dataclass(frozen=True)
class InstanceFilter:
    """Which detections become published instances."""

    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    max_instances: int = 100
    class_ids: tuple[int, ...] = ()  # empty: every class
    # Detections from this score up to score_threshold are kept apart (InstanceResult.low_score_instances)
    # for a tracker's second stage (ByteTrack), which publishes those that continue a track; None: not
    # kept. The default is TrackerSettings.low_score: the instance node tracks by default, and
    # `seg-models build` must build the graph that node loads.
    track_low_score: Optional[float] = 0.1

    @property
    def lowest_kept_score(self) -> float:
        """The least score the segmenter keeps: the graph's threshold."""
        if self.track_low_score is None:
            return self.score_threshold
        return min(self.score_threshold, self.track_low_score)


@dataclass(frozen=True)
class TrackerSettings:
    """How instance ids persist across one camera's frames (seg_models.tracking): ByteTrack's two
    stages on the mask IoU of box-cropped masks."""

    enabled: bool = True
    similarity: str = 'mask'  # mask: IoU of the masks (pairs whose boxes overlap); box: IoU of the boxes
    high_score: float = 0.6  # detections at least this sure are matched first and may start tracks
    low_score: float = 0.1  # detections between low_score and high_score are matched second, to tracks left
    match_iou: float = 0.2  # least IoU of a first-stage match (ByteTrack: cost 1 - IoU below 0.8)
    low_match_iou: float = 0.5  # least IoU of a second-stage match (ByteTrack: 0.5)
    max_age: int = 30  # frames a track survives unmatched
    min_hits: int = 2  # matched frames before a track's id is published (0 until then)
    max_gap: float = 1.0  # seconds between frames (and 3 x the usual interval) beyond which tracks are reset
    motion: bool = True  # constant-velocity prediction of a track's box before matching


@dataclass(frozen=True)
class PanopticSettings:
    """How semantic and instance results of one frame become one panoptic scene (Panoptic FPN's
    combination, detectron2's defaults)."""

    overlap_threshold: float = 0.5  # an instance is skipped when more than this part of it is taken
    instance_score_threshold: float = 0.5  # instances below it are left out
    stuff_area_limit: int = 4096  # least stuff segment area in pixels at a 1024x2048 camera, scaled to the camera


# The network input both tasks run at by default (and config/driving.yaml deploys): a Cityscapes
# frame at half resolution. Camera images of any size are resized to it and the outputs back.
DEFAULT_INPUT_SIZE = (512, 1024)


@dataclass(frozen=True)
class SemanticModelConfig:
    """Everything needed to build a semantic segmenter."""

    architecture: str = 'deeplabv3plus_mobilenet_v3_large'
    output_stride: int = 16
    label_set: str = 'cityscapes'
    checkpoint: str = ''  # empty: untrained weights (loudly reported)
    model_metadata: str = ''  # bring your own model: metadata .yaml naming an ONNX file (see external.py)
    # (height, width); None: each image's own size (opt in: a full-resolution network on whatever arrives)
    input_size: Optional[tuple[int, int]] = DEFAULT_INPUT_SIZE
    with_confidence: bool = False
    output_filter: SemanticFilter = field(default_factory=SemanticFilter)
    deployment: BackendSettings = field(default_factory=BackendSettings)


@dataclass(frozen=True)
class InstanceModelConfig:
    """Everything needed to build an instance segmenter."""

    architecture: str = 'maskrcnn_resnet50_fpn'
    label_set: str = 'cityscapes_things'  # classes the network was trained on (coco_things for COCO weights)
    output_label_set: str = ''  # classes to publish; empty: the network's own
    checkpoint: str = ''
    model_metadata: str = ''  # another exporter's model: metadata .yaml naming an ONNX file (external_instance.py)
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE  # fixed (height, width), multiples of 32
    max_detections: int = 100
    output_filter: InstanceFilter = field(default_factory=InstanceFilter)
    # max_batch is the batch size baked into the instance graph (ONNX / TensorRT), padded when short
    deployment: BackendSettings = field(default_factory=BackendSettings)


def field_default(config_type: type, name: str) -> Any:
    """The default of field ``name`` of the dataclass ``config_type`` (parameter tables read it)."""
    return getattr(config_type(), name)


def build_config(config_type: type[Config], values: Mapping[str, Any], **derived: Any) -> Config:
    """A ``config_type`` with its defaults replaced by ``values`` of the same names."""
    return replace_fields(config_type(), values, **derived)


def replace_fields(config: Config, values: Mapping[str, Any], **derived: Any) -> Config:
    """``config`` with each field taken from ``values`` by name (None values are skipped); a nested
    dataclass field that ``values`` does not give is filled the same way from the same values;
    ``derived`` gives the fields that are computed from several values, and wins."""
    changes = {}
    for config_field in dataclasses.fields(config):
        name, current = config_field.name, getattr(config, config_field.name)
        if name in derived:
            changes[name] = derived[name]
        elif values.get(name) is not None:
            changes[name] = values[name]
        elif dataclasses.is_dataclass(current):
            changes[name] = replace_fields(current, values)
    return dataclasses.replace(config, **changes)
