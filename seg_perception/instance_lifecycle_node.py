"""The instance node as a lifecycle (managed) node; transitions as for semantic_lifecycle_node."""
from seg_perception.instance_node import ManagedInstanceSegmentationNode
from seg_perception.node_main import main_for


def main() -> None:
    main_for(ManagedInstanceSegmentationNode)


if __name__ == '__main__':
    main()
