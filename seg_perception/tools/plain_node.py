"""The baseline of the ``versus`` benchmark: a segmentation node written the way community nodes are.

Deliberately plain, not a product: the model runs in the subscription callback (PyTorch eager,
torchvision's own Mask R-CNN with its transform and paste), the subscription keeps rclpy's default
depth-10 reliable queue, and instances go out as full-frame mono8 masks (one Image per instance,
in an InstanceMaskArray whose boxes span the frame). It uses the same networks and weights as our
nodes (seg_models builds them), so the benchmark compares the node around the model, not models.

    python -m seg_perception.tools.plain_node --ros-args -p task:=semantic -r image:=/camera/image_raw
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from rclpy.node import Node
from seg_perception_msgs.msg import InstanceMask, InstanceMaskArray
from sensor_msgs.msg import Image, RegionOfInterest

from seg_models.configs import DEFAULT_INPUT_SIZE, InstanceModelConfig, SemanticModelConfig
from seg_models.data.labels import get_label_set
from seg_models.models.maskrcnn import network_classes_for
from seg_models.models.semantic_graph import IMAGENET_MEAN, IMAGENET_STD
from seg_models.segmenters.instance import build_instance_network
from seg_models.segmenters.semantic import build_semantic_network
from seg_perception.messages.images import array_to_image_msg
from seg_perception.messages.topics import INSTANCE_OUTPUT, SEMANTIC_OUTPUT
from seg_perception.runtime.node_main import main_for
from seg_perception.runtime.parameters import ParameterSpec, declare_parameters

PLAIN_NODE = 'plain_segmentation'
QUEUE_DEPTH = 10  # rclpy's usual create_subscription(..., 10)
PLAIN_PARAMETERS = (
    ParameterSpec('task', 'semantic', 'semantic (DeepLabv3+) or instance (Mask R-CNN).',
                  choices=('semantic', 'instance')),
    ParameterSpec('checkpoint', '', 'Weights, as for our nodes; empty: the same untrained weights.'),
    ParameterSpec('input_height', DEFAULT_INPUT_SIZE[0], 'Network input height.', value_range=(32, 8192)),
    ParameterSpec('input_width', DEFAULT_INPUT_SIZE[1], 'Network input width.', value_range=(32, 8192)),
    ParameterSpec('score_threshold', 0.5, 'Instances published at or above this score.', value_range=(0.0, 1.0)),
)


class PlainSegmentationNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(PLAIN_NODE, **kwargs)
        self.settings = declare_parameters(self, PLAIN_PARAMETERS)
        size = (self.settings['input_height'], self.settings['input_width'])
        torch.set_grad_enabled(False)
        if self.settings['task'] == 'semantic':
            config = SemanticModelConfig(checkpoint=self.settings['checkpoint'], input_size=size)
            self.model, _ = build_semantic_network(config, get_label_set(config.label_set))
            self.publisher = self.create_publisher(Image, SEMANTIC_OUTPUT, QUEUE_DEPTH)
            callback = self.on_image_semantic
        else:
            config = InstanceModelConfig(checkpoint=self.settings['checkpoint'], input_size=size)
            self.model, _ = build_instance_network(config, network_classes_for(get_label_set(config.label_set)))
            self.model.transform.min_size, self.model.transform.max_size = (size[0],), size[1]
            self.publisher = self.create_publisher(InstanceMaskArray, INSTANCE_OUTPUT, QUEUE_DEPTH)
            callback = self.on_image_instance
        self.model.eval()
        self.size = size
        self.create_subscription(Image, 'image', callback, QUEUE_DEPTH)

    @staticmethod
    def to_tensor(msg: Image) -> torch.Tensor:
        rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)  # rgb8 only
        return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255

    def on_image_semantic(self, msg: Image) -> None:
        image = self.to_tensor(msg)[None]
        mean, std = (torch.tensor(values).view(1, 3, 1, 1) / 255 for values in (IMAGENET_MEAN, IMAGENET_STD))
        network_input = F.interpolate((image - mean) / std, size=self.size, mode='bilinear', align_corners=False)
        logits = F.interpolate(self.model(network_input), size=(msg.height, msg.width), mode='bilinear',
                               align_corners=False)
        labels = logits.argmax(1)[0].to(torch.uint8).numpy()
        self.publisher.publish(array_to_image_msg(labels, 'mono8', msg.header))

    def on_image_instance(self, msg: Image) -> None:
        detections = self.model([self.to_tensor(msg)])[0]
        answer = InstanceMaskArray(header=msg.header, image_height=msg.height, image_width=msg.width)
        for index in torch.nonzero(detections['scores'] >= self.settings['score_threshold']).flatten().tolist():
            mask = (detections['masks'][index, 0] > 0.5).to(torch.uint8).numpy() * 255
            answer.instances.append(InstanceMask(
                instance_id=index, class_id=int(detections['labels'][index]) - 1,
                score=float(detections['scores'][index]),
                box=RegionOfInterest(x_offset=0, y_offset=0, height=msg.height, width=msg.width),
                mask=array_to_image_msg(mask, 'mono8', msg.header)))
        self.publisher.publish(answer)


def main() -> None:
    main_for(PlainSegmentationNode, __doc__, lambda: PLAIN_PARAMETERS)


if __name__ == '__main__':
    main()
