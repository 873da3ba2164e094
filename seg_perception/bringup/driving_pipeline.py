"""The nodes of the driving pipeline, read by launch/driving.launch.py and by the pipeline runner.

One description serves both, so ``ros2 launch seg_perception driving.launch.py`` and
``run_pipeline`` (for machines without ``launch``) start the same nodes with the same config.
Kept free of heavy imports: launch files import it.
"""
from __future__ import annotations

from dataclasses import dataclass

from seg_perception.messages.topics import (CAMERA, CAMERA_INPUT, INSTANCE_NODE, INSTANCE_OUTPUT, SEMANTIC_NODE,
                                            SEMANTIC_OUTPUT)

PACKAGE = 'seg_perception'
CONFIG_FILE = 'driving.yaml'
CONFIG_PATH = 'config/' + CONFIG_FILE  # in the source tree and in the installed share folder
DEFAULT_CAMERA_TOPIC = CAMERA


@dataclass(frozen=True)
class PipelineNode:
    """One node of the pipeline: how it is started and what it is called."""

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

    @property
    def task(self) -> str:
        """What the node does: semantic or instance."""
        return self.name.split('_')[0]

    @property
    def checkpoint_argument(self) -> str:
        """Launch/runner argument that overrides the node's checkpoint, e.g. "semantic_checkpoint"."""
        return self.task + '_checkpoint'


def camera_list(text: str) -> list[str]:
    """Camera topics from a launch or command-line argument: '[/front/image_raw, /rear/image_raw]'
    (YAML, as ``-p cameras:=`` takes it) or '/front/image_raw,/rear/image_raw'; '' gives []."""
    return [name.strip().strip('\'"') for name in text.strip().strip('[]').split(',') if name.strip()]


DRIVING_PIPELINE = (
    PipelineNode(executable='semantic_node', module='seg_perception.nodes.semantic_segmentation',
                 node_class='SemanticSegmentationNode', name=SEMANTIC_NODE, output=SEMANTIC_OUTPUT),
    PipelineNode(executable='instance_node', module='seg_perception.nodes.instance_segmentation',
                 node_class='InstanceSegmentationNode', name=INSTANCE_NODE, output=INSTANCE_OUTPUT),
)
