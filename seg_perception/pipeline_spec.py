"""The nodes of the driving pipeline, read by launch/driving.launch.py and by the pipeline runner.

One description serves both, so ``ros2 launch seg_perception driving.launch.py`` and
``run_pipeline`` (for machines without ``launch``) start the same nodes with the same config.
Kept free of heavy imports: launch files import it.
"""
from __future__ import annotations

from dataclasses import dataclass

from seg_perception.topics import CAMERA_INPUT, INSTANCE_OUTPUT, SEMANTIC_OUTPUT

PACKAGE = 'seg_perception'
CONFIG_FILE = 'driving.yaml'
DEFAULT_CAMERA_TOPIC = '/camera/image_raw'


@dataclass(frozen=True)
class PipelineNode:
    executable: str  # console script installed under lib/seg_perception
    module: str  # the Python module whose main() that script runs
    name: str  # node name: the key of its section in config/driving.yaml
    output: str  # its main output topic (in the root namespace: /<output>)
    camera_input: str = CAMERA_INPUT  # input remapped onto the camera topic


DRIVING_PIPELINE = (
    PipelineNode(executable='semantic_node', module='seg_perception.semantic_node', name='semantic_segmentation',
                 output=SEMANTIC_OUTPUT),
    PipelineNode(executable='instance_node', module='seg_perception.instance_node', name='instance_segmentation',
                 output=INSTANCE_OUTPUT),
)


def checkpoint_argument(node: PipelineNode) -> str:
    """Launch/runner argument that overrides a node's checkpoint, e.g. "semantic_checkpoint"."""
    return node.name.split('_')[0] + '_checkpoint'
