"""Bring your own semantic model: any ONNX file plus a small metadata file that says how to feed it.

Metadata (YAML), paths relative to the metadata file::

    onnx: my_model.onnx
    label_set: cityscapes          # a registered name or a label-set .yaml
    input_size: [512, 1024]        # [height, width]; omit for models with dynamic spatial axes
    mean: [123.675, 116.28, 103.53]  # per channel, on the 0-255 scale, in the model's channel order
    std: [58.395, 57.12, 57.375]
    channel_order: rgb             # rgb or bgr
    output: logits                 # logits (N, C, H, W) or class_ids (N, H, W)
    void_class: 19                 # optional: the model's background/void class, published as the
                                   # label set's ignore id (its other classes keep their order)

The metadata is checked against the ONNX graph at start-up: input size, the output's class count
against the label set (plus ``void_class``), mean/std on the 0-255 scale. The adapter normalises
on the host and takes the argmax of logits, so the model runs through the same backends (ONNX
Runtime, TensorRT) and the same nodes as our own exports; ids outside the label set are never
published (they become its ignore id).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from seg_models.backends.base import Backend, BackendError
from seg_models.data.labels import LabelSet, get_label_set

OUTPUT_KINDS = ('logits', 'class_ids')
CHANNEL_ORDERS = ('rgb', 'bgr')


@dataclass(frozen=True)
class ExternalModelSpec:
    onnx: Path
    label_set: str
    input_size: Optional[tuple[int, int]]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str
    output: str
    output_name: str = 'output'
    batch_size: Optional[int] = None  # fixed batch of the ONNX input, None: dynamic
    void_class: Optional[int] = None  # the model's "no class" output: published as the label set's ignore id

    def as_key(self) -> dict:
        return {'input_size': list(self.input_size) if self.input_size else None, 'mean': list(self.mean),
                'std': list(self.std), 'channel_order': self.channel_order, 'output': self.output,
                'void_class': self.void_class}


def load_external_model(metadata_path: str | Path) -> ExternalModelSpec:
    """Read a metadata file and check it, and the ONNX graph it names, against each other; every
    problem is named in one ValueError."""

    metadata_path = Path(metadata_path)
    document = read_metadata_document(metadata_path)
    onnx_path, label_set = onnx_file_and_label_set(metadata_path, document, _metadata_problems(document))
    graph = read_onnx_graph(onnx_path)
    spec = ExternalModelSpec(onnx=onnx_path, label_set=label_set,
                             input_size=tuple(document['input_size']) if document.get('input_size') else None,
                             mean=tuple(float(v) for v in document['mean']),
                             std=tuple(float(v) for v in document['std']),
                             channel_order=document.get('channel_order', 'rgb'), output=document['output'],
                             output_name=graph.output[0].name, void_class=document.get('void_class'))
    spec, problems = _checked_against_graph(spec, graph, get_label_set(label_set).num_classes)
    if problems:
        raise ValueError(f'model metadata {metadata_path} does not match {onnx_path.name}: ' + '; '.join(problems))
    return spec


def read_metadata_document(metadata_path: Path) -> dict:
    """The metadata file's mapping of fields; an unreadable file or another document is one ValueError."""
    import yaml

    try:
        document = yaml.safe_load(metadata_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f'model metadata {metadata_path} is unreadable: {error}') from None
    if not isinstance(document, dict):
        raise ValueError(f'model metadata {metadata_path} must be a mapping of fields (onnx, label_set, mean, '
                         f'std, ...), not a {type(document).__name__}')
    return document


def onnx_file_and_label_set(metadata_path: Path, document: dict, problems: list[str]) -> tuple[Path, str]:
    """The ONNX file and label set the metadata names (relative to the metadata file); a missing
    file or label set joins ``problems``, which are raised as one ValueError."""
    onnx_path = metadata_path.parent / str(document.get('onnx', ''))
    if not document.get('onnx') or not onnx_path.is_file():
        problems.append(f'onnx: file {onnx_path} not found')
    if 'label_set' not in document:
        problems.append('label_set: missing')
    if problems:
        raise ValueError(f'model metadata {metadata_path}: ' + '; '.join(problems))
    label_set = str(document['label_set'])
    if label_set.endswith(('.yaml', '.yml')):
        label_set = str(metadata_path.parent / label_set)
    return onnx_path, label_set


def _metadata_problems(document: dict) -> list[str]:
    problems = []
    for field_name in ('mean', 'std'):
        values = document.get(field_name)
        if not (isinstance(values, list) and len(values) == 3 and all(isinstance(v, (int, float)) for v in values)):
            problems.append(f'{field_name}: three numbers expected, got {values!r}')
    if not problems and min(document['std']) <= 0:
        problems.append(f'std {document["std"]}: every value must be above 0 (pixels are divided by it)')
    elif not problems and max(document['mean']) <= 1.0 and max(document['std']) <= 1.0:
        problems.append(f'mean/std {document["mean"]}/{document["std"]} look like the 0-1 scale: give them on the '
                        f'0-255 scale the camera pixels come in (multiply by 255)')
    if document.get('channel_order', 'rgb') not in CHANNEL_ORDERS:
        problems.append(f'channel_order: one of {CHANNEL_ORDERS} expected')
    if document.get('output') not in OUTPUT_KINDS:
        problems.append(f'output: one of {OUTPUT_KINDS} expected, got {document.get("output")!r}')
    input_size = document.get('input_size')
    if input_size is not None and not (isinstance(input_size, list) and len(input_size) == 2
                                       and all(isinstance(v, int) and v > 0 for v in input_size)):
        problems.append(f'input_size: [height, width] expected, got {input_size!r}')
    void_class = document.get('void_class')
    if void_class is not None and not (isinstance(void_class, int) and void_class >= 0):
        problems.append(f'void_class: a class index (0 or more) expected, got {void_class!r}')
    return problems


def read_onnx_graph(onnx_path: Path, with_metadata: bool = False):
    """The ONNX file's graph (its whole model, metadata included, ``with_metadata``); a damaged file
    is one ValueError."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - protobuf raises DecodeError, RuntimeError ... for damaged files
        raise ValueError(f'{onnx_path} is not a readable ONNX model ({type(error).__name__}: {error})') from None
    return model if with_metadata else model.graph


def static_dims(value_info) -> list[Optional[int]]:
    """Dimensions of a graph input or output; None where symbolic (dynamic)."""
    return [dim.dim_value if dim.HasField('dim_value') else None for dim in value_info.type.tensor_type.shape.dim]


def _checked_against_graph(spec: ExternalModelSpec, graph, num_classes: int) -> tuple[ExternalModelSpec, list[str]]:
    """The spec with what the graph fixes filled in (input size, batch), and where they disagree."""
    problems = []
    initializers = {tensor.name for tensor in graph.initializer}
    model_input = next(value for value in graph.input if value.name not in initializers)
    dims = static_dims(model_input)
    if len(dims) != 4 or dims[1] not in (None, 3):
        return spec, [f'the ONNX input {model_input.name} is {dims}, not (N, 3, H, W)']
    graph_size = tuple(dims[2:]) if None not in dims[2:] else None
    if spec.input_size and graph_size and spec.input_size != graph_size:
        problems.append(f'input_size {list(spec.input_size)} contradicts the ONNX input {model_input.name}, '
                        f'which is fixed at {list(graph_size)}')
    output_dims = static_dims(graph.output[0])
    expected_rank = 4 if spec.output == 'logits' else 3
    channels = num_classes + (spec.void_class is not None)
    if len(output_dims) != expected_rank:
        problems.append(f'output {spec.output} needs a rank-{expected_rank} ONNX output, {spec.output_name} is '
                        f'{output_dims}')
    elif spec.output == 'logits' and output_dims[1] is not None and output_dims[1] != channels:
        void = ' plus the void class' if spec.void_class is not None else ''
        problems.append(f'the ONNX output {spec.output_name} has {output_dims[1]} channels, but the label set '
                        f'{spec.label_set} has {num_classes} classes{void}; map a background/void channel with '
                        f'void_class')
    if spec.void_class is not None and spec.void_class >= channels:
        problems.append(f'void_class {spec.void_class} is not one of the {channels} model classes')
    return replace(spec, input_size=spec.input_size or graph_size, batch_size=dims[0] or None), problems


class ExternalSemanticBackend(Backend):
    """Wraps the backend running a foreign ONNX file so it honours our interface: uint8 RGB
    (N, 3, H, W) in, ``class_ids`` [and ``confidence``] out, or, from a model that outputs logits
    without a confidence asked, the ``logits`` in label-set order (a void class last), which the
    segmenter upsamples bilinearly straight to each camera's size before the argmax, as upstreams
    do (SegFormer's ``post_process_semantic_segmentation`` to the target size)."""

    def __init__(self, inner: Backend, spec: ExternalModelSpec, label_set: LabelSet,
                 with_confidence: bool = False) -> None:
        if with_confidence and spec.output != 'logits':
            raise BackendError('confidence needs a model that outputs logits')
        self.inner = inner
        self.spec = spec
        self.num_classes, self.ignore_id = label_set.num_classes, label_set.ignore_id
        self.name = f'{inner.name} (external model)'
        self.mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self.scale = 1.0 / np.asarray(spec.std, dtype=np.float32).reshape(1, 3, 1, 1)
        if spec.output == 'logits' and not with_confidence:
            outputs = ('logits',)
        else:
            outputs = ('class_ids', 'confidence') if with_confidence else ('class_ids',)
        super().__init__(outputs, inner.device, inner.precision)

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        pixels = images[:, ::-1] if self.spec.channel_order == 'bgr' else images
        normalised = np.ascontiguousarray((pixels.astype(np.float32) - self.mean) * self.scale)
        step = self.spec.batch_size or len(normalised)  # models exported with a fixed batch run in chunks
        raw = np.concatenate([self.inner.infer(normalised[start:start + step])[self.spec.output_name]
                              for start in range(0, len(normalised), step)])
        if self.spec.output == 'class_ids':
            return {'class_ids': self._in_label_set(raw.astype(np.int64))}
        if self.output_names == ('logits',):
            return {'logits': self._void_last(raw)}
        if raw.shape[-2:] != images.shape[-2:]:  # e.g. SegFormer's 1/4: logits upsampled before the argmax
            raw = F.interpolate(torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32)),
                                size=images.shape[-2:], mode='bilinear', align_corners=False).numpy()
        outputs = {'class_ids': self._in_label_set(raw.argmax(axis=1))}
        if 'confidence' in self.output_names:
            shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
            outputs['confidence'] = (1.0 / shifted.sum(axis=1)).astype(np.float32)
        return outputs

    def _void_last(self, logits: np.ndarray) -> np.ndarray:
        """(N, C, h, w) logits with the void class's channel moved last: channel k is label-set class
        k, and the void class's argmax (index num_classes) is outside the label set."""
        void = self.spec.void_class
        if void is None:
            return logits
        order = [channel for channel in range(logits.shape[1]) if channel != void] + [void]
        return logits[:, order]

    def _in_label_set(self, ids: np.ndarray) -> np.ndarray:
        """Model class ids as label-set ids: the void class and anything outside the set (a class_ids
        model can emit any number) become the ignore id; classes after the void class move down one."""
        if self.spec.void_class is not None:
            void = ids == self.spec.void_class
            ids = np.where(ids > self.spec.void_class, ids - 1, ids)
            ids[void] = self.ignore_id
        return np.where((ids >= 0) & (ids < self.num_classes), ids, self.ignore_id)
