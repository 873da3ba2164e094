"""The tasks seg_models can do: one table, and a lookup that names the known entries.

Each task registers once what every tool needs of it: its model config type (whose defaults are
the task's architecture and label set) and, by import path, the functions that build its
segmenter, give its deployment graph and compare two runs' answers. The ``seg-models`` CLI, the
nodes, the fleet worker, replay and the benchmarks look tasks up here instead of branching on
their names; the ROS side keys its node table (seg_perception.bringup.driving_pipeline) by the
same names. Entries name functions as ``module:function`` and are imported on first use, so this
table stays cheap to import (launch files read it).

Adding a task: one entry here, the module its functions live in, and (for a node) one entry in
the driving pipeline's node table.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from seg_models.configs import InstanceModelConfig, SemanticModelConfig


@dataclass(frozen=True)
class Task:
    """One task: its settings and where the code that serves it lives."""

    name: str
    description: str
    config_type: type  # a dataclass of every setting (seg_models.configs), defaults included
    #: ``module:function`` taking a config and returning a segmenter (``segment(images)``, ``is_trained``)
    segmenter_factory: str
    #: ``module:function`` taking a config and returning (DeploymentGraph, ...): what is exported
    #: and converted without creating a backend (``seg-models export``, ``build --onnx-only``)
    deployment: str
    #: ``module:function`` (reference results, other results, segmenter) -> one line saying how
    #: closely they agree (``seg-models bench --precisions``)
    agreement: str
    #: ``module:function`` taking a config and returning it with what its weights fix filled in (a
    #: named checkpoint fetched, the model card's settings, the shipped demo model); '' where the
    #: config is taken as it is
    resolve: str = ''

    @property
    def default_label_set(self) -> str:
        return self.config_type().label_set

    @property
    def default_architecture(self) -> str:
        return self.config_type().architecture

    def create_segmenter(self, config: Any) -> Any:
        return _resolve(self.segmenter_factory)(config)

    def deployment_graph(self, config: Any) -> Any:
        """The task's DeploymentGraph for ``config``."""
        return _resolve(self.deployment)(config)[0]

    def describe_agreement(self, reference: Any, results: Any, segmenter: Any) -> str:
        return _resolve(self.agreement)(reference, results, segmenter)

    def weights_source(self, config: Any) -> str:
        """Where ``config``'s weights come from (a checkpoint, a bring-your-own model, the demo
        model); '' for untrained weights, whose outputs mean nothing."""
        config = _resolve(self.resolve)(config) if self.resolve else config
        return config.checkpoint or getattr(config, 'model_metadata', '')


TASKS: dict[str, Task] = {
    'semantic': Task(
        name='semantic', description='DeepLabv3+ (or a bring-your-own ONNX model): a class id per pixel',
        config_type=SemanticModelConfig,
        segmenter_factory='seg_models.segmenters.semantic:create_semantic_segmenter',
        deployment='seg_models.segmenters.semantic:semantic_deployment',
        agreement='seg_models.bench.fidelity:semantic_agreement',
        resolve='seg_models.checkpoints.model_card:resolved_semantic_config'),
    'instance': Task(
        name='instance', description='Mask R-CNN: a box, class, score and mask per object',
        config_type=InstanceModelConfig,
        segmenter_factory='seg_models.segmenters.instance:create_instance_segmenter',
        deployment='seg_models.segmenters.instance:instance_deployment',
        agreement='seg_models.bench.fidelity:instance_agreement_line',
        resolve='seg_models.checkpoints.named:resolved_instance_config'),
}


def get_task(name: str) -> Task:
    """The task registered as ``name``; an unknown name is refused naming the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f'unknown task {name!r}; known: {", ".join(TASKS)}') from None


def task_of(config: Any) -> Task:
    """The task whose config type ``config`` is."""
    for task in TASKS.values():
        if type(config) is task.config_type:
            return task
    raise ValueError(f'{type(config).__name__} is the config of no registered task ({", ".join(TASKS)})')


def _resolve(target: str) -> Callable:
    module, _, function = target.partition(':')
    return getattr(importlib.import_module(module), function)
