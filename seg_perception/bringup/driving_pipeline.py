"""The nodes of the driving pipeline, one per task: the ROS side of the task registry.

Read by launch/driving.launch.py, the pipeline runner, replay, the fleet and the benchmarks, so
``ros2 launch seg_perception driving.launch.py`` and ``run_pipeline`` (for machines without
``launch``) start the same nodes with the same config. Each entry is keyed by its task's name in
``seg_models.tasks.TASKS``. Kept free of heavy imports: launch files import it (the node class is
imported only when asked for, by ``node_type``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Sequence

from seg_perception.messages.topics import (CAMERA, CAMERA_INPUT, INSTANCE_NODE, INSTANCE_OUTPUT, PANOPTIC_NODE,
                                            PANOPTIC_OUTPUT, SEMANTIC_NODE, SEMANTIC_OUTPUT)

PACKAGE = 'seg_perception'
CONFIG_FILE = 'driving.yaml'
CONFIG_PATH = 'config/' + CONFIG_FILE  # in the source tree and in the installed share folder
DEFAULT_CAMERA_TOPIC = CAMERA


@dataclass(frozen=True)
class PipelineNode:
    """One node of the pipeline: how it is started and what it is called."""

    task: str  # its task in seg_models.tasks.TASKS: semantic, instance
    executable: str  # console script installed under lib/seg_perception
    module: str  # the Python module that script runs (also run as ``python -m``)
    node_class: str  # the node class in it, whose ``main`` is the script's entry point
    name: str  # node name: the key of its section in config/driving.yaml
    output: str  # its main output topic (in the root namespace: /<output>)
    camera_input: str = CAMERA_INPUT  # input remapped onto the camera topic

    @property
    def entry_point(self) -> str:
        """The console script's target in setup.py, e.g. 'pkg.module:NodeClass.main'."""
        return f'{self.module}:{self.node_class}.main'

    def node_type(self) -> type:
        """The node class: its parameter table (``task_parameters``), its processor (which builds the
        model config from parameter values, ``config_from_parameters``, and names ``answer_type``)."""
        return getattr(importlib.import_module(self.module), self.node_class)

    @property
    def checkpoint_argument(self) -> str:
        """Launch/runner argument that overrides the node's checkpoint, e.g. "semantic_checkpoint"."""
        return self.task + '_checkpoint'


def camera_list(text: str) -> list[str]:
    """Camera topics from a launch or command-line argument: '[/front/image_raw, /rear/image_raw]'
    (YAML, as ``-p cameras:=`` takes it) or '/front/image_raw,/rear/image_raw'; '' gives []."""
    return [name.strip().strip('\'"') for name in text.strip().strip('[]').split(',') if name.strip()]


DRIVING_PIPELINE = (
    PipelineNode(task='semantic', executable='semantic_node', module='seg_perception.nodes.semantic_segmentation',
                 node_class='SemanticSegmentationNode', name=SEMANTIC_NODE, output=SEMANTIC_OUTPUT),
    PipelineNode(task='instance', executable='instance_node', module='seg_perception.nodes.instance_segmentation',
                 node_class='InstanceSegmentationNode', name=INSTANCE_NODE, output=INSTANCE_OUTPUT),
)
TASKS = tuple(node.task for node in DRIVING_PIPELINE)  # the tasks the pipeline has a node for

# Started beside the two model nodes with a switch (launch argument panoptic:=true, run_pipeline
# --panoptic): fuses their results of each frame into one scene. No model, so no task entry and
# no checkpoint; it reads the cameras parameter like them and subscribes to their outputs.
PANOPTIC_FUSION = PipelineNode(task='panoptic', executable='panoptic_node',
                               module='seg_perception.nodes.panoptic_segmentation',
                               node_class='PanopticSegmentationNode', name=PANOPTIC_NODE, output=PANOPTIC_OUTPUT)


def pipeline_nodes(tasks: Sequence[str]) -> list[PipelineNode]:
    """The driving pipeline's nodes for ``tasks``; an unknown task is refused naming the known ones."""
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f'unknown task {", ".join(sorted(unknown))}; the pipeline has {", ".join(TASKS)}')
    return [node for node in DRIVING_PIPELINE if node.task in tasks]


def pipeline_node(task: str) -> PipelineNode:
    """The node of ``task``."""
    return pipeline_nodes([task])[0]
