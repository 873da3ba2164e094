"""A toy task, registered by test_architecture to show what adding a task takes: this module and
one entry in seg_models.tasks.TASKS, nothing else. Its network calls a pixel bright (class 1) or
dark (class 0); it is exported, cached and run by the same deployment path as the real tasks."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from seg_models.backends.factory import create_backend
from seg_models.configs import BackendSettings
from seg_models.deploy.graph import DeploymentGraph
from seg_models.deploy.onnx_export import INPUT_NAME, export_onnx
from seg_models.segmenters.transform import CameraTransform
from seg_models.tasks import Task


@dataclass(frozen=True)
class ToyConfig:
    architecture: str = 'brightness'
    label_set: str = 'bright_dark'
    checkpoint: str = ''
    input_size: Optional[tuple[int, int]] = (32, 48)
    deployment: BackendSettings = field(default_factory=BackendSettings)


TOY_TASK = Task(name='toy', description='bright or dark, per pixel', config_type=ToyConfig,
                segmenter_factory='toy_task:create_toy_segmenter', deployment='toy_task:toy_deployment',
                agreement='toy_task:toy_agreement')


class Brightness(nn.Module):
    output_names = ('class_ids',)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        return ((images.float().mean(1) > 127.5).to(torch.uint8),)


def toy_deployment(config: ToyConfig) -> tuple[DeploymentGraph]:
    graph = Brightness()
    height, width = config.input_size
    export = functools.partial(export_onnx, graph, example=torch.zeros((1, 3, height, width), dtype=torch.uint8),
                               output_names=graph.output_names, metadata={'kind': 'toy'},
                               dynamic_axes={INPUT_NAME: {0: 'batch'}, 'class_ids': {0: 'batch'}})
    return (DeploymentGraph(name='toy_brightness', output_names=graph.output_names, key={'task': 'toy'},
                            module=graph, export=export, input_size=config.input_size),)


class ToySegmenter:
    is_trained = True  # nothing to learn: brightness is its rule

    def __init__(self, backend, input_size) -> None:
        self.backend, self.transform = backend, CameraTransform(input_size)

    def segment(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        class_ids = self.backend.infer(self.transform.batch(images))['class_ids']
        return [self.transform.map_to_image(ids, image.shape[:2], nearest=True)
                for ids, image in zip(class_ids, images)]


def create_toy_segmenter(config: ToyConfig) -> ToySegmenter:
    return ToySegmenter(create_backend(toy_deployment(config)[0], config.deployment), config.input_size)


def toy_agreement(reference: Sequence[np.ndarray], other: Sequence[np.ndarray], segmenter) -> str:
    same = sum(int(np.count_nonzero(a == b)) for a, b in zip(reference, other))
    return f'{100 * same / sum(a.size for a in reference):.2f}% identical pixels'
