"""Instance models from other exporters: an ONNX file plus a metadata file that names its format.

Metadata (YAML), paths relative to the metadata file::

    onnx: yolo11n-seg.onnx
    format: ultralytics_seg        # ultralytics_seg | ultralytics_seg_end2end | mmdeploy_instance
    label_set: coco_things         # the model's classes, in its output order
    resize: letterbox              # letterbox (Ultralytics' default) or stretch; default by format
    pad_value: 114                 # letterbox fill (Ultralytics: 114)
    mean: [0, 0, 0]                # on the 0-255 scale; default by format (Ultralytics: 0 and 255)
    std: [255, 255, 255]
    channel_order: rgb
    nms_iou: 0.7                   # ultralytics_seg only: the IoU of its class-aware NMS

The formats (what the ONNX outputs hold, per image ``b``):

- ``ultralytics_seg`` (YOLOv8/YOLO11 ``export(format='onnx')``): ``output0`` (B, 4 + nc + 32, N):
  box centre x, y, width, height in network pixels, nc class scores, 32 mask coefficients;
  ``output1`` (B, 32, H/4, W/4): mask prototypes. Candidates are filtered by score and class and
  kept by class-aware NMS here.
- ``ultralytics_seg_end2end`` (YOLO26): ``output0`` (B, K, 6 + 32): x1, y1, x2, y2, score, class,
  coefficients, already NMS-free; ``output1`` prototypes as above.
- ``mmdeploy_instance`` (RTMDet-Ins, Mask R-CNN through mmdeploy): ``dets`` (B, N, 5) x1, y1, x2,
  y2, score; ``labels`` (B, N); ``masks`` (B, N, H, W) probabilities at the network input.

Boxes come back to camera pixels through the same letterbox (or stretch) the frame went in by.
Masks are assembled only inside each box: the prototype logits (coefficients x prototypes) of the
box's neighbourhood, sampled bilinearly at the camera pixels' centres, thresholded, and cropped to
the box, so no full-frame mask is ever made.
"""
from __future__ import annotations

import ast
import contextlib
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import cv2
import numpy as np
import torch
from torchvision.ops import batched_nms

from seg_models.backends.base import Backend, CallTime
from seg_models.backends.device_pipeline import download_in_one_transfer
from seg_models.configs import InstanceFilter
from seg_models.data.labels import LabelSet, get_label_set
from seg_models.segmenters.instance_postprocess import Instance, InstanceResult, box_rois

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceFormat:
    """What one exporter's ONNX outputs are: their ranks, and the preprocessing it trains with."""

    output_ranks: tuple[int, ...]
    resize: str
    mean: Optional[tuple[float, float, float]]  # None: the metadata must say
    std: Optional[tuple[float, float, float]]


ULTRALYTICS_NORMALISATION = dict(mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0))
INSTANCE_FORMATS = {
    'ultralytics_seg': InstanceFormat((3, 4), 'letterbox', **ULTRALYTICS_NORMALISATION),
    'ultralytics_seg_end2end': InstanceFormat((3, 4), 'letterbox', **ULTRALYTICS_NORMALISATION),
    'mmdeploy_instance': InstanceFormat((3, 2, 4), 'stretch', None, None),
}
RESIZES = ('letterbox', 'stretch')
MASK_COEFFICIENTS = 32  # Ultralytics' prototype count
ULTRALYTICS_MAX_CANDIDATES = 30000  # its NMS input cap (max_nms)


@dataclass(frozen=True)
class InstanceModelSpec:
    onnx: Path
    format: str
    label_set: str
    input_size: tuple[int, int]
    resize: str
    pad_value: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str
    nms_iou: float
    output_names: tuple[str, ...] = ()
    batch_size: Optional[int] = None  # fixed batch of the ONNX input, None: dynamic

    def as_key(self) -> dict:
        return {'format': self.format, 'input_size': list(self.input_size), 'resize': self.resize,
                'pad_value': self.pad_value, 'mean': list(self.mean), 'std': list(self.std),
                'channel_order': self.channel_order}


def load_instance_model(metadata_path: str | Path) -> InstanceModelSpec:
    """Read a metadata file and check it, and the ONNX graph it names, against each other; every
    problem is named in one ValueError."""
    from seg_models.segmenters.external_semantic import (onnx_file_and_label_set, read_metadata_document,
                                                         read_onnx_graph, static_dims)

    metadata_path = Path(metadata_path)
    document = read_metadata_document(metadata_path)
    problems = []
    model_format = INSTANCE_FORMATS.get(document.get('format'))
    if model_format is None:
        problems.append(f'format: one of {", ".join(INSTANCE_FORMATS)} expected, got {document.get("format")!r}')
        model_format = INSTANCE_FORMATS['ultralytics_seg']
    resize = document.get('resize', model_format.resize)
    if resize not in RESIZES:
        problems.append(f'resize: one of {RESIZES} expected, got {resize!r}')
    mean, std = document.get('mean', model_format.mean), document.get('std', model_format.std)
    for name, values in (('mean', mean), ('std', std)):
        if not (isinstance(values, (list, tuple)) and len(values) == 3 and all(isinstance(v, (int, float))
                                                                               for v in values)):
            problems.append(f'{name}: three numbers on the 0-255 scale expected, got {values!r}')
    if not problems and min(std) <= 0:
        problems.append(f'std {list(std)}: every value must be above 0')
    if document.get('channel_order', 'rgb') not in ('rgb', 'bgr'):
        problems.append("channel_order: rgb or bgr expected")
    nms_iou = document.get('nms_iou', 0.7)
    if not (isinstance(nms_iou, (int, float)) and 0 < nms_iou <= 1):
        problems.append(f'nms_iou: a number in (0, 1] expected, got {nms_iou!r}')
    onnx_path, label_set_name = onnx_file_and_label_set(metadata_path, document, problems)
    label_set = get_label_set(label_set_name)
    model = read_onnx_graph(onnx_path, with_metadata=True)
    graph = model.graph
    initializers = {tensor.name for tensor in graph.initializer}
    model_input = next(value for value in graph.input if value.name not in initializers)
    input_dims = static_dims(model_input)
    input_size = document.get('input_size')
    if len(input_dims) != 4 or input_dims[1] not in (None, 3):
        problems.append(f'the ONNX input {model_input.name} is {input_dims}, not (N, 3, H, W)')
    elif None in input_dims[2:] and not input_size:
        problems.append(f'the ONNX input {model_input.name} has dynamic spatial axes: give input_size [height, '
                        f'width] (the size it was exported for)')
    elif None not in input_dims[2:]:
        if input_size and tuple(input_size) != tuple(input_dims[2:]):
            problems.append(f'input_size {input_size} contradicts the ONNX input, fixed at {input_dims[2:]}')
        input_size = input_dims[2:]
    outputs = [static_dims(output) for output in graph.output]
    names = tuple(output.name for output in graph.output)
    ranks = tuple(len(dims) for dims in outputs)
    if ranks != model_format.output_ranks:
        problems.append(f'format {document["format"]} needs outputs of ranks {model_format.output_ranks}, the ONNX '
                        f'file has {dict(zip(names, outputs))}')
    else:
        problems += _class_count_problems(document['format'], outputs, names, label_set, model)
    if problems:
        raise ValueError(f'model metadata {metadata_path} does not match {onnx_path.name}: ' + '; '.join(problems))
    return InstanceModelSpec(onnx=onnx_path, format=document['format'], label_set=label_set_name,
                             input_size=tuple(int(v) for v in input_size), resize=resize,
                             pad_value=int(document.get('pad_value', 114)), mean=tuple(float(v) for v in mean),
                             std=tuple(float(v) for v in std), channel_order=document.get('channel_order', 'rgb'),
                             nms_iou=float(nms_iou), output_names=names, batch_size=input_dims[0] or None)


def _class_count_problems(model_format: str, outputs: list, names: tuple, label_set: LabelSet, model) -> list[str]:
    """The model's class count (its output width; Ultralytics' ``names`` metadata) against the label set."""
    problems = []
    if model_format == 'ultralytics_seg' and outputs[0][1] is not None:
        classes = outputs[0][1] - 4 - MASK_COEFFICIENTS
        if classes != label_set.num_classes:
            problems.append(f'{names[0]} holds {classes} class scores ({outputs[0][1]} = 4 box + {classes} classes + '
                            f'{MASK_COEFFICIENTS} mask coefficients), but label set {label_set.name} has '
                            f'{label_set.num_classes} classes')
    if model_format == 'ultralytics_seg_end2end' and outputs[0][2] not in (None, 6 + MASK_COEFFICIENTS):
        problems.append(f'{names[0]} rows hold {outputs[0][2]} values, not x1 y1 x2 y2 score class + '
                        f'{MASK_COEFFICIENTS} coefficients')
    if model_format.startswith('ultralytics') and outputs[1][1] not in (None, MASK_COEFFICIENTS):
        problems.append(f'{names[1]} holds {outputs[1][1]} prototypes, not {MASK_COEFFICIENTS}')
    exported_names = {entry.key: entry.value for entry in model.metadata_props}.get('names')
    if exported_names:
        try:
            count = len(ast.literal_eval(exported_names))
        except (ValueError, SyntaxError):
            count = None
        if count is not None and count != label_set.num_classes:
            problems.append(f'the exporter recorded {count} class names, but label set {label_set.name} has '
                            f'{label_set.num_classes} classes')
    return problems


@dataclass(frozen=True)
class Letterbox:
    """How a camera frame sits in the network input: scaled by ``scale`` (x, y) and offset by
    ``left``/``top`` pixels of padding, as Ultralytics' LetterBox (centred, rounded the same way) or
    a plain stretch."""

    camera_size: tuple[int, int]
    input_size: tuple[int, int]
    scaled_size: tuple[int, int]  # (height, width) of the frame inside the input
    top: int
    left: int

    @classmethod
    def fit(cls, camera_size: tuple[int, int], input_size: tuple[int, int], resize: str) -> 'Letterbox':
        (height, width), (input_height, input_width) = camera_size, input_size
        if resize == 'stretch':
            return cls(camera_size, input_size, input_size, 0, 0)
        gain = min(input_height / height, input_width / width)
        scaled_height, scaled_width = max(round(height * gain), 1), max(round(width * gain), 1)
        top, left = round((input_height - scaled_height) / 2 - 0.1), round((input_width - scaled_width) / 2 - 0.1)
        return cls(camera_size, input_size, (scaled_height, scaled_width), top, left)

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) network pixels per camera pixel."""
        return self.scaled_size[1] / self.camera_size[1], self.scaled_size[0] / self.camera_size[0]

    def image(self, frame: np.ndarray, pad_value: int) -> np.ndarray:
        """The frame as the network sees it: resized (bilinear) and padded to the input size."""
        scaled_height, scaled_width = self.scaled_size
        if frame.shape[:2] != (scaled_height, scaled_width):
            frame = cv2.resize(frame, (scaled_width, scaled_height), interpolation=cv2.INTER_LINEAR)
        bottom = self.input_size[0] - scaled_height - self.top
        right = self.input_size[1] - scaled_width - self.left
        if self.top or self.left or bottom or right:
            frame = cv2.copyMakeBorder(frame, self.top, bottom, self.left, right, cv2.BORDER_CONSTANT,
                                       value=(pad_value,) * 3)
        return frame

    def boxes_to_camera(self, boxes: np.ndarray) -> np.ndarray:
        """x1y1x2y2 network pixels -> camera pixels, clipped to the frame."""
        scale_x, scale_y = self.scale
        height, width = self.camera_size
        camera = (boxes - [self.left, self.top, self.left, self.top]) / [scale_x, scale_y, scale_x, scale_y]
        return np.clip(camera, 0, [width, height, width, height]).astype(np.float32)

    def sample_positions(self, start: int, count: int, axis: int, stride: float) -> np.ndarray:
        """Continuous (pixel-centre) coordinates, in a map of ``stride`` network pixels per cell, of
        camera pixels ``start .. start + count`` along ``axis`` (0: rows, 1: columns)."""
        scale = self.scale[1 - axis]
        offset = self.left if axis == 1 else self.top
        pixels = np.arange(start, start + count, dtype=np.float64)
        return ((pixels + 0.5) * scale + offset) / stride - 0.5


def bilinear_weights(positions: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """(weights (len(positions), window), first cell): the bilinear interpolation matrix sampling a
    map of ``size`` cells at ``positions``, border-clamped as F.interpolate(align_corners=False)."""
    positions = np.clip(positions, 0, size - 1)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    fraction = positions - low
    first, last = int(low.min()), int(high.max())
    weights = np.zeros((len(positions), last - first + 1), dtype=np.float32)
    rows = np.arange(len(positions))
    np.add.at(weights, (rows, low - first), (1 - fraction).astype(np.float32))
    np.add.at(weights, (rows, high - first), fraction.astype(np.float32))
    return weights, first


def mask_in_roi(cell_values, letterbox: Letterbox, roi: tuple[int, int, int, int], box: Optional[np.ndarray],
                map_size: tuple[int, int], stride: float, threshold: float) -> torch.Tensor:
    """A (roi height, roi width) bool mask on the map's device: the map ``cell_values(rows,
    columns)`` (its values on a window of cells, a tensor) sampled bilinearly at the roi's camera
    pixels, above ``threshold``; with a ``box``, only the pixels whose index lies in [x1, x2) x
    [y1, y2) of it (Ultralytics' crop). The interpolation matrices are a few kilobytes, made on the
    host; the sampling runs where the map is."""
    x, y, width, height = roi
    row_weights, first_row = bilinear_weights(letterbox.sample_positions(y, height, 0, stride), map_size[0])
    column_weights, first_column = bilinear_weights(letterbox.sample_positions(x, width, 1, stride), map_size[1])
    window = cell_values(slice(first_row, first_row + row_weights.shape[1]),
                         slice(first_column, first_column + column_weights.shape[1]))
    row_weights, column_weights = (torch.from_numpy(weights).to(window.device, non_blocking=True)
                                   for weights in (row_weights, column_weights))
    mask = row_weights @ window @ column_weights.T > threshold
    if box is not None:  # a pixel index i is inside [b1, b2) when ceil(b1) <= i < ceil(b2)
        first_y, end_y = math.ceil(box[1]) - y, math.ceil(box[3]) - y
        first_x, end_x = math.ceil(box[0]) - x, math.ceil(box[2]) - x
        mask[:max(first_y, 0)] = False
        mask[max(end_y, 0):] = False
        mask[:, :max(first_x, 0)] = False
        mask[:, max(end_x, 0):] = False
    return mask


@dataclass
class Candidates:
    """One image's detections in network terms, before the camera mapping: tensors on the device
    the model's outputs are on."""

    boxes: torch.Tensor  # (K, 4) x1y1x2y2 network pixels
    scores: torch.Tensor  # (K,)
    classes: torch.Tensor  # (K,) network class index
    rows: torch.Tensor  # (K,) row of each in the model's outputs (mask coefficients or masks)


class ExternalInstanceSegmenter:
    """A foreign instance model behind the same interface as ``InstanceSegmenter``: ``segment(images)``
    gives InstanceResults at each camera's resolution, filtered by ``output_filter``.

    Only the letterbox resize runs on the host. Normalisation, the network, candidate selection,
    NMS and mask assembly run with torch where the backend keeps its outputs: on its CUDA device
    for ONNX Runtime's CUDA provider and TensorRT, so a frame's prototypes never leave the GPU and
    only boxes and box-sized masks come back (one transfer each); on the CPU elsewhere, the same code.
    """

    def __init__(self, backend: Backend, spec: InstanceModelSpec, label_set: LabelSet, class_map: np.ndarray,
                 output_filter: InstanceFilter, device: Optional[str] = None) -> None:
        """``device``: where post-processing runs; default: the backend's CUDA device, else the CPU."""
        self.backend = backend
        self.backend_time = CallTime()
        self.spec = spec
        self.label_set = label_set  # published classes
        self.class_map = class_map  # network class index -> published id, -1: not published
        self.output_filter = output_filter
        self.weights_source = str(spec.onnx)
        self.device = torch.device(device or (backend.device if backend.device.startswith('cuda') else 'cpu'))
        self.mean = torch.tensor(spec.mean, dtype=torch.float32, device=self.device).reshape(1, 3, 1, 1)
        self.scale = 1.0 / torch.tensor(spec.std, dtype=torch.float32, device=self.device).reshape(1, 3, 1, 1)
        self.published_ids = torch.from_numpy(np.asarray(class_map, np.int64)).to(self.device)
        self.wanted_ids = torch.tensor(list(output_filter.class_ids or ()), dtype=torch.int64, device=self.device)

    is_trained = True

    def segment(self, images: Sequence[np.ndarray]) -> list[InstanceResult]:
        self.backend_time.reset()
        letterboxes = [Letterbox.fit(image.shape[:2], self.spec.input_size, self.spec.resize) for image in images]
        with torch.inference_mode():
            outputs = self.infer_raw(images, letterboxes)
            with one_torch_thread(self.device.type == 'cpu'):
                return [self._result(outputs, position, letterbox) for position, letterbox in enumerate(letterboxes)]

    def infer_raw(self, images: Sequence[np.ndarray], letterboxes: Sequence[Letterbox]) -> dict[str, torch.Tensor]:
        """The model's outputs for ``images`` (RGB uint8), in the batches its ONNX input takes, as
        tensors where the backend keeps them."""
        batch = np.stack([letterbox.image(image, self.spec.pad_value) for image, letterbox in zip(images, letterboxes)])
        pixels = torch.from_numpy(batch).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        if self.spec.channel_order == 'bgr':
            pixels = pixels.flip(1)
        normalised = ((pixels.float() - self.mean) * self.scale).contiguous()
        step = self.spec.batch_size or len(normalised)
        chunks = []
        for start in range(0, len(normalised), step):
            with self.backend_time.timing():
                chunks.append(self.backend.infer_tensors(normalised[start:start + step]))
        # non_blocking only towards a GPU: a copy to the host must have landed before the CPU reads it
        return {name: (torch.cat([chunk[name] for chunk in chunks]) if len(chunks) > 1 else chunks[0][name]
                       ).to(self.device, non_blocking=self.device.type == 'cuda') for name in chunks[0]}

    def _published(self, classes: torch.Tensor) -> torch.Tensor:
        """Whether detections of these network classes are published (mapped, and in the class filter)."""
        published = self.published_ids[classes]
        wanted = published >= 0
        if len(self.wanted_ids):
            wanted &= torch.isin(published, self.wanted_ids)
        return wanted

    def _result(self, outputs: dict[str, torch.Tensor], position: int, letterbox: Letterbox) -> InstanceResult:
        candidates = self._candidates(outputs, position)
        order = torch.nonzero(self._published(candidates.classes)).flatten()
        order = order[torch.argsort(-candidates.scores[order], stable=True)][:self.output_filter.max_instances]
        # the few numbers per detection come back in one transfer
        found = torch.cat([candidates.boxes[order].double(), candidates.scores[order, None].double(),
                           self.published_ids[candidates.classes[order], None].double(),
                           candidates.rows[order, None].double()], dim=1).cpu().numpy()
        boxes = letterbox.boxes_to_camera(found[:, :4].astype(np.float32))
        rois = box_rois(boxes, letterbox.camera_size).tolist()
        masks = [self._mask(outputs, position, int(row), letterbox, tuple(roi), box)
                 for row, box, roi in zip(found[:, 6], boxes, rois)]
        instances = [Instance(int(class_id), self.label_set.names[int(class_id)], float(np.float32(score)),
                              tuple(float(v) for v in box), tuple(roi), mask)
                     for class_id, score, box, roi, mask in zip(found[:, 5], found[:, 4], boxes, rois,
                                                                 download_in_one_transfer(masks))]
        return InstanceResult.split_by_score(letterbox.camera_size, instances, self.output_filter.score_threshold)

    def _candidates(self, outputs: dict[str, torch.Tensor], position: int) -> Candidates:
        names, threshold = self.spec.output_names, self.output_filter.lowest_kept_score
        if self.spec.format == 'ultralytics_seg':
            rows = outputs[names[0]][position].T  # (N, 4 + nc + 32)
            scores, classes = rows[:, 4:-MASK_COEFFICIENTS].max(dim=1)
            index = torch.nonzero((scores >= threshold) & self._published(classes)).flatten()
            index = index[torch.argsort(-scores[index], stable=True)][:ULTRALYTICS_MAX_CANDIDATES]
            centre, size = rows[index, :2], rows[index, 2:4]
            boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
            kept = batched_nms(boxes, scores[index], classes[index], self.spec.nms_iou)
            return Candidates(boxes[kept], scores[index][kept], classes[index][kept], index[kept])
        if self.spec.format == 'ultralytics_seg_end2end':
            rows = outputs[names[0]][position]  # (K, 6 + 32)
            index = torch.nonzero(rows[:, 4] >= threshold).flatten()
            return Candidates(rows[index, :4], rows[index, 4], rows[index, 5].long(), index)
        dets, labels = outputs[names[0]][position], outputs[names[1]][position].long()
        index = torch.nonzero(dets[:, 4] >= threshold).flatten()
        return Candidates(dets[index, :4], dets[index, 4], labels[index], index)

    def _mask(self, outputs: dict[str, torch.Tensor], position: int, row: int, letterbox: Letterbox,
              roi: tuple[int, int, int, int], box: np.ndarray) -> torch.Tensor:
        threshold = self.output_filter.mask_threshold
        if self.spec.format.startswith('ultralytics'):
            names = self.spec.output_names
            coefficients = outputs[names[0]][position]
            coefficients = (coefficients[:, row] if self.spec.format == 'ultralytics_seg' else
                            coefficients[row])[-MASK_COEFFICIENTS:]
            prototypes = outputs[names[1]][position]  # (32, h, w)
            stride = self.spec.input_size[1] / prototypes.shape[2]

            def logits(rows: slice, columns: slice) -> torch.Tensor:
                return torch.tensordot(coefficients, prototypes[:, rows, columns], dims=1)

            # sigmoid(logit) > t  <=>  logit > log(t / (1 - t))
            threshold = min(max(threshold, 1e-6), 1 - 1e-6)
            return mask_in_roi(logits, letterbox, roi, box, tuple(prototypes.shape[1:]), stride,
                               math.log(threshold / (1 - threshold)))
        # (H, W) probabilities at the input, pasted by the model: no crop of ours
        masks = outputs[self.spec.output_names[2]][position, row]
        return mask_in_roi(lambda rows, columns: masks[rows, columns], letterbox, roi, None, tuple(masks.shape), 1.0,
                           threshold)


_ONE_THREAD_LOCK = threading.Lock()
_one_thread = {'users': 0, 'threads': 1}  # callers inside one_torch_thread, and torch's threads before the first


@contextlib.contextmanager
def one_torch_thread(on_cpu: bool) -> Iterator[None]:
    """torch on one thread while the post-processing runs on the CPU: its operations there are small
    (a few hundred kilobytes), and torch's OpenMP workers, waiting spun between them, took the cores
    ONNX Runtime needs for the next frame (2-3x slower post-processing on a busy 2-core CPU). The
    thread count is process-wide: the first caller in sets it, the last one out restores it."""
    if not on_cpu:
        yield
        return
    with _ONE_THREAD_LOCK:
        if _one_thread['users'] == 0:
            _one_thread['threads'] = torch.get_num_threads()
            torch.set_num_threads(1)
        _one_thread['users'] += 1
    try:
        yield
    finally:
        with _ONE_THREAD_LOCK:
            _one_thread['users'] -= 1
            if _one_thread['users'] == 0:
                torch.set_num_threads(_one_thread['threads'])
