"""The other side of ``versus yolo``: a YOLO-seg node written the way yolo_ros is, Ultralytics'
``predict`` in the image callback, masks published as polygons.

    python test/yolo_ros_style_node.py --ros-args -p model:=yolo.onnx -r image_raw:=/camera/image_raw
    python test/yolo_ros_style_node.py export HEIGHT WIDTH FOLDER   # the fitted YOLO11n-seg, its metadata

It lives in test/, beside fitted_yolo.py, because Ultralytics is AGPL-3.0 and a test-only dependency:
``test_the_product_never_imports_ultralytics`` refuses any import of it, inside functions too, in
seg_perception/ and seg_models/. The benchmark starts this file as a process and imports nothing of it.

What it copies of mgonzs13/yolo_ros as the Python releases have it (yolo_ros/yolo_node.py,
yolo_bringup/launch/yolo.launch.py):

* the subscription on ``image_raw``: reliability from ``image_reliability`` (the launch file's
  default 2, best effort), KEEP_LAST depth 1, volatile; the publisher on ``detections``, depth 10;
* in the callback: cv_bridge's ``imgmsg_to_cv2(msg, 'bgr8')`` (an rgb8 camera: a view of the
  buffer and one cvtColor, as cv_bridge does), then ``YOLO(model).predict(source=bgr, verbose=False,
  stream=False, conf=threshold, iou=iou, imgsz=(imgsz_height, imgsz_width), half=False, max_det,
  augment=False, agnostic_nms=False, retina_masks, device)`` and ``results[0].cpu()``;
* per detection, as its parse_hypothesis, parse_boxes and parse_masks walk the results: class id,
  class name, score, the box and the mask as polygon vertices (each ``mask.xy[0]`` of
  ``results.masks``, float64 x, y in camera pixels), with the image's header.
  Defaults as its launch file: threshold 0.5, iou 0.7, max_det 300, retina_masks false; imgsz is
  the ONNX export's fixed size (the node declares 640x640, the launch file 480x640).

yolo_msgs (its DetectionArray) is not installable here, nor is vision_msgs; a visualization_msgs
MarkerArray would be, but package.xml does not declare it, and its geometry_msgs/Point vertices are
24 bytes against Point2D's 16. So the same numbers go out in the package's
own ``seg_perception_msgs/InstanceMaskArray`` (the image's header), one InstanceMask a detection:
``class_id``, ``class_name``, ``score``, ``box`` (the box's pixels, as a RegionOfInterest: whole
pixels where yolo_msgs has float centre and size) and the polygon as the ``mask`` Image, encoding
64FC2, one pixel a vertex: float64 x, y pairs, 16 bytes a vertex as yolo_msgs' Point2D (one array
where yolo_ros builds a Point2D object a vertex, which only spares this side work). The
vertices, the bulk of an answer, cost what they cost in yolo_msgs; a DetectionArray would carry
about 90 bytes more a detection (its float64 box and score, an empty bbox3d, id and keypoints) and
about 25 bytes less an answer (by their CDR layouts: 28 bytes + about 185 a detection + 16 a vertex,
against 52 + about 92 + 16 here).
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from seg_perception_msgs.msg import InstanceMask, InstanceMaskArray
from sensor_msgs.msg import Image, RegionOfInterest

from fitted_yolo import export_yolo_onnx, fitted_yolo, ultralytics_offline
from seg_perception.messages.images import array_to_image_msg, image_msg_pixels
from seg_perception.runtime.node_main import main_for
from seg_perception.runtime.parameters import ParameterSpec, declare_parameters

YOLO_NODE = 'yolo_node'
DETECTIONS = 'detections'
PUBLISHER_DEPTH = 10  # yolo_ros: create_lifecycle_publisher(DetectionArray, 'detections', 10)
YOLO_PARAMETERS = (
    ParameterSpec('model', '', 'The YOLO-seg ONNX file (Ultralytics export).'),
    ParameterSpec('device', 'cpu', 'Ultralytics device (yolo_ros: cuda:0; this machine has none).'),
    ParameterSpec('threshold', 0.5, 'conf of predict: detections below it are dropped.', value_range=(0.0, 1.0)),
    ParameterSpec('iou', 0.7, 'NMS IoU of predict.', value_range=(0.0, 1.0)),
    ParameterSpec('imgsz_height', 640, 'Network input height (the ONNX export\'s).', value_range=(32, 8192)),
    ParameterSpec('imgsz_width', 640, 'Network input width (the ONNX export\'s).', value_range=(32, 8192)),
    ParameterSpec('max_det', 300, 'At most this many detections an image.', value_range=(1, 10000)),
    ParameterSpec('retina_masks', False, 'Masks at the camera\'s resolution before the polygons are traced.'),
    ParameterSpec('image_reliability', int(QoSReliabilityPolicy.BEST_EFFORT),
                  'Image subscription reliability: 0 system default, 1 reliable, 2 best effort.', choices=(0, 1, 2)),
)


class YoloRosStyleNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(YOLO_NODE, **kwargs)
        self.settings = declare_parameters(self, YOLO_PARAMETERS)
        ultralytics_offline()
        from ultralytics import YOLO

        self.yolo = YOLO(self.settings['model'], task='segment')
        image_qos = QoSProfile(reliability=QoSReliabilityPolicy(self.settings['image_reliability']),
                               history=QoSHistoryPolicy.KEEP_LAST, durability=QoSDurabilityPolicy.VOLATILE, depth=1)
        self.publisher = self.create_publisher(InstanceMaskArray, DETECTIONS, PUBLISHER_DEPTH)
        self.create_subscription(Image, 'image_raw', self.image_cb, image_qos)

    def image_cb(self, msg: Image) -> None:
        pixels, _ = image_msg_pixels(msg)
        bgr = pixels if msg.encoding == 'bgr8' else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
        results = self.yolo.predict(
            source=bgr, verbose=False, stream=False, conf=self.settings['threshold'], iou=self.settings['iou'],
            imgsz=(self.settings['imgsz_height'], self.settings['imgsz_width']), half=False,
            max_det=self.settings['max_det'], augment=False, agnostic_nms=False,
            retina_masks=self.settings['retina_masks'], device=self.settings['device'])[0].cpu()
        answer = InstanceMaskArray(header=msg.header, image_height=msg.height, image_width=msg.width)
        polygons = [mask.xy[0] for mask in results.masks] if results.masks is not None else []
        for index, (box, polygon) in enumerate(zip(results.boxes, polygons)):
            class_id = int(box.cls)
            x1, y1, x2, y2 = (float(value) for value in box.xyxy[0])
            left, top = int(np.floor(x1)), int(np.floor(y1))
            vertices = np.asarray(polygon, np.float64).reshape(1, -1, 2)  # masks.xy: float32 (N, 2)
            answer.instances.append(InstanceMask(
                instance_id=index, class_id=class_id, class_name=self.yolo.names[class_id], score=float(box.conf),
                box=RegionOfInterest(x_offset=left, y_offset=top, width=int(np.ceil(x2)) - left,
                                     height=int(np.ceil(y2)) - top),
                mask=array_to_image_msg(vertices, '64FC2', msg.header)))
        self.publisher.publish(answer)


def export(height: int, width: int, folder: Path) -> Path:
    """The fitted YOLO11n-seg (test/fitted_yolo.py) exported by Ultralytics at ``height`` x ``width``;
    the metadata file our instance node reads it by."""
    return export_yolo_onnx(fitted_yolo(), (height, width), folder)


def main() -> None:
    if sys.argv[1:2] == ['export']:
        height, width, folder = sys.argv[2:5]
        print(export(int(height), int(width), Path(folder)))
        return
    main_for(YoloRosStyleNode, __doc__, lambda: YOLO_PARAMETERS)


if __name__ == '__main__':
    main()
