"""Bring your own semantic model: any ONNX file plus a small metadata file that says how to feed it.

Metadata (YAML), paths relative to the metadata file::

    onnx: my_model.onnx
    label_set: cityscapes          # a registered name or a label-set .yaml
    input_size: [512, 1024]        # [height, width]; omit for models with dynamic spatial axes
    mean: [123.675, 116.28, 103.53]  # per channel, on the 0-255 scale, in the model's channel order
    std: [58.395, 57.12, 57.375]
    channel_order: rgb             # rgb or bgr
    output: logits                 # logits (N, C, H, W) or class_ids (N, H, W)

The adapter normalises on the host and takes the argmax of logits, so the model runs through the
same backends (ONNX Runtime, TensorRT) and the same nodes as our own exports.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from seg_models.backends.base import Backend, BackendError

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

    def as_key(self) -> dict:
        return {'input_size': list(self.input_size) if self.input_size else None, 'mean': list(self.mean),
                'std': list(self.std), 'channel_order': self.channel_order, 'output': self.output}


def load_external_model(metadata_path: str | Path) -> ExternalModelSpec:
    """Read and check a metadata file; every problem is named in one ValueError."""
    import yaml

    metadata_path = Path(metadata_path)
    try:
        document = yaml.safe_load(metadata_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f'model metadata {metadata_path} is unreadable: {error}') from None
    problems = []
    onnx_path = metadata_path.parent / str(document.get('onnx', ''))
    if not document.get('onnx') or not onnx_path.is_file():
        problems.append(f'onnx: file {onnx_path} not found')
    for field_name in ('mean', 'std'):
        values = document.get(field_name)
        if not (isinstance(values, list) and len(values) == 3 and all(isinstance(v, (int, float)) for v in values)):
            problems.append(f'{field_name}: three numbers expected, got {values!r}')
    if document.get('channel_order', 'rgb') not in CHANNEL_ORDERS:
        problems.append(f'channel_order: one of {CHANNEL_ORDERS} expected')
    if document.get('output') not in OUTPUT_KINDS:
        problems.append(f'output: one of {OUTPUT_KINDS} expected, got {document.get("output")!r}')
    input_size = document.get('input_size')
    if input_size is not None and not (isinstance(input_size, list) and len(input_size) == 2
                                       and all(isinstance(v, int) and v > 0 for v in input_size)):
        problems.append(f'input_size: [height, width] expected, got {input_size!r}')
    if 'label_set' not in document:
        problems.append('label_set: missing')
    if problems:
        raise ValueError(f'model metadata {metadata_path}: ' + '; '.join(problems))
    label_set = str(document['label_set'])
    if label_set.endswith(('.yaml', '.yml')):
        label_set = str(metadata_path.parent / label_set)
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0].dim_value
    return ExternalModelSpec(onnx=onnx_path, label_set=label_set,
                             input_size=tuple(input_size) if input_size else None,
                             mean=tuple(float(v) for v in document['mean']),
                             std=tuple(float(v) for v in document['std']),
                             channel_order=document.get('channel_order', 'rgb'), output=document['output'],
                             output_name=graph.output[0].name, batch_size=batch_dim or None)


class ExternalSemanticBackend(Backend):
    """Wraps the backend running a foreign ONNX file so it honours our interface: uint8 RGB
    (N, 3, H, W) in, ``class_ids`` [and ``confidence``] out."""

    def __init__(self, inner: Backend, spec: ExternalModelSpec, with_confidence: bool = False) -> None:
        if with_confidence and spec.output != 'logits':
            raise BackendError('confidence needs a model that outputs logits')
        self.inner = inner
        self.spec = spec
        self.name = f'{inner.name} (external model)'
        self.mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self.scale = 1.0 / np.asarray(spec.std, dtype=np.float32).reshape(1, 3, 1, 1)
        outputs = ('class_ids', 'confidence') if with_confidence else ('class_ids',)
        super().__init__(outputs, inner.device, inner.precision)

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        pixels = images[:, ::-1] if self.spec.channel_order == 'bgr' else images
        normalised = np.ascontiguousarray((pixels.astype(np.float32) - self.mean) * self.scale)
        step = self.spec.batch_size or len(normalised)  # models exported with a fixed batch run in chunks
        raw = np.concatenate([self.inner.infer(normalised[start:start + step])[self.spec.output_name]
                              for start in range(0, len(normalised), step)])
        if self.spec.output == 'class_ids':
            return {'class_ids': raw.astype(np.int64)}
        outputs = {'class_ids': raw.argmax(axis=1)}
        if 'confidence' in self.output_names:
            shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
            outputs['confidence'] = (1.0 / shifted.sum(axis=1)).astype(np.float32)
        return outputs
