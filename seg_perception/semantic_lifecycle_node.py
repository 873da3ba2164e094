"""The semantic node as a lifecycle (managed) node: starts unconfigured and follows
``ros2 lifecycle set`` (or a lifecycle manager): configure loads the model or engine, activate
subscribes, deactivate stops inference and frees the GPU, cleanup destroys the publishers."""
from seg_perception.node_main import main_for
from seg_perception.semantic_node import ManagedSemanticSegmentationNode


def main() -> None:
    main_for(ManagedSemanticSegmentationNode)


if __name__ == '__main__':
    main()
