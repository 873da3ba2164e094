"""Every name on the ROS graph this package uses, and the QoS each kind of topic gets.

Node outputs are relative, so a node pushed into a namespace publishes under it (in the root
namespace they resolve to /segmentation/...); node-private ones are ``~/...`` and resolve under
the node's name (``private_topic``).

Several cameras, one node (the ``cameras`` parameter), one rule: each camera's outputs are what a
single-camera node in that camera's namespace would publish (``output_in_namespace``). Camera
``/front/image_raw`` (namespace ``/front``) gives ``/front/segmentation/semantic``, its
``/label_info`` and ``/confidence``, and ``/front/<node name>/color``, ``/overlay``. The default
camera ``image`` (remapped to the camera topic) keeps the node's own names, as before.

The bag topics are what ``seg_bag`` writes, replays and evaluates (each configurable on its
command line, for bags recorded elsewhere).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# --- nodes and their topics -------------------------------------------------------------------
SEMANTIC_NODE = 'semantic_segmentation'  # default node names (their private topics live under them)
INSTANCE_NODE = 'instance_segmentation'
PANOPTIC_NODE = 'panoptic_segmentation'

CAMERA_INPUT = 'image'  # image_transport-style input name; launch remaps it to the camera topic
DEFAULT_CAMERAS = (CAMERA_INPUT,)  # the ``cameras`` parameter's default: one camera, the node's own output names
COMPRESSED_SUFFIX = '/compressed'  # image_transport's compressed transport: <image topic>/compressed
SEMANTIC_OUTPUT = 'segmentation/semantic'
CONFIDENCE_OUTPUT = SEMANTIC_OUTPUT + '/confidence'
INSTANCE_OUTPUT = 'segmentation/instances'
PANOPTIC_OUTPUT = 'segmentation/panoptic'  # fused from the two above, frame by frame
LABEL_INFO_SUFFIX = '/label_info'  # <output>/label_info: the label set of that output
COLOR_OUTPUT = '~/color'
OVERLAY_OUTPUT = '~/overlay'
PROCESSING_TIME_OUTPUT = '~/processing_time'
DIAGNOSTICS = '/diagnostics'

# --- bags (seg_bag make / replay / evaluate) ----------------------------------------------------
CAMERA = '/camera/image_raw'  # also the driving pipeline's default camera topic
CAMERA_INFO_NAME = 'camera_info'  # beside the image topic, as image_transport's camera publishers put it
CAMERA_INFO = '/camera/' + CAMERA_INFO_NAME
GROUND_TRUTH = 'ground_truth'  # in a multi-camera bag, each camera's ground truth is <camera namespace>/ground_truth/..
GROUND_TRUTH_SEMANTIC = '/ground_truth/semantic'
GROUND_TRUTH_INSTANCES = '/ground_truth/instances'
GROUND_TRUTH_INFO = '/ground_truth/info'
CLOCK = '/clock'
REPLAY_SUMMARY = '/evaluation/replay_summary'


def camera_namespace(camera_topic: str) -> str:
    """The namespace a camera's outputs go to: its topic's parent ('/front/image_raw' -> '/front',
    '/image_raw' -> '/'); a trailing /compressed (the transport) is not part of the camera's name."""
    if camera_topic.endswith(COMPRESSED_SUFFIX):
        camera_topic = camera_topic[:-len(COMPRESSED_SUFFIX)]
    return camera_topic.rsplit('/', 1)[0] or '/'


def output_in_namespace(namespace: str, node_name: str, output: str) -> str:
    """What ``output`` (relative 'a/b' or private '~/x') of node ``node_name`` resolves to when the
    node is in ``namespace``: ('/front', 'n', 'a/b') -> '/front/a/b', ('/front', 'n', '~/x') -> '/front/n/x'."""
    prefix = namespace.rstrip('/')
    if output.startswith('~/'):
        return f'{prefix}/{node_name}/{output[len("~/"):]}'
    return f'{prefix}/{output}'


def camera_output_topic(camera: str, node_name: str, output: str) -> str:
    """Where ``output`` of the ``cameras`` entry ``camera`` lands for a node in the root namespace:
    the default camera "image" keeps the node's own names, any other camera goes to its namespace."""
    if camera == CAMERA_INPUT:
        return output_in_namespace('/', node_name, output)
    return output_in_namespace(camera_namespace('/' + camera.lstrip('/')), node_name, output)


def in_root_namespace(relative: str) -> str:
    """What a node's relative topic resolves to in the root namespace: 'a/b' -> '/a/b'."""
    return output_in_namespace('/', '', relative)


def private_topic(node_name: str, private: str) -> str:
    """What a node's private topic resolves to in the root namespace: ('n', '~/x') -> '/n/x'."""
    return output_in_namespace('/', node_name, private)


@dataclass(frozen=True)
class CameraBagTopics:
    """One camera's topics in a bag: its images, CameraInfo, ground truth and the nodes' predictions.

    A bag of one camera uses the classic names (/ground_truth/..., the default camera's outputs
    /segmentation/...); with several cameras each has them in its namespace, as the nodes publish
    them (``camera_output_topic``): /front/ground_truth/semantic, /front/segmentation/semantic ...
    """

    camera: str  # the image topic (sensor_msgs/Image; its /compressed variant for CompressedImage)
    camera_info: str
    ground_truth_semantic: str
    ground_truth_instances: str
    semantic_prediction: str
    instance_prediction: str
    frame_prefix: str  # names this camera's frames in reports and Cityscapes files (no underscore)
    panoptic_prediction: str = ''  # the panoptic node's output, where it ran (replay --panoptic)

    @property
    def predictions(self) -> tuple[str, str]:
        return self.semantic_prediction, self.instance_prediction

    @property
    def ground_truths(self) -> tuple[str, str]:
        return self.ground_truth_semantic, self.ground_truth_instances


def camera_bag_topics(camera: str, index: Optional[int] = None) -> CameraBagTopics:
    """The topics of ``camera`` in a bag: the classic single-camera names with ``index`` None, else
    those in the camera's namespace (``index`` numbers the camera: its frame prefix)."""
    namespace = camera_namespace(camera)
    camera_info = output_in_namespace(namespace, '', CAMERA_INFO_NAME)
    if index is None:
        return CameraBagTopics(camera, camera_info, GROUND_TRUTH_SEMANTIC, GROUND_TRUTH_INSTANCES,
                               in_root_namespace(SEMANTIC_OUTPUT), in_root_namespace(INSTANCE_OUTPUT), 'frame',
                               in_root_namespace(PANOPTIC_OUTPUT))
    ground_truth = output_in_namespace(namespace, '', GROUND_TRUTH)
    return CameraBagTopics(camera, camera_info, f'{ground_truth}/semantic', f'{ground_truth}/instances',
                           output_in_namespace(namespace, '', SEMANTIC_OUTPUT),
                           output_in_namespace(namespace, '', INSTANCE_OUTPUT), f'camera{index}',
                           output_in_namespace(namespace, '', PANOPTIC_OUTPUT))


SEMANTIC_PREDICTION = in_root_namespace(SEMANTIC_OUTPUT)  # what replay records from the nodes
INSTANCE_PREDICTION = in_root_namespace(INSTANCE_OUTPUT)
PREDICTIONS = (SEMANTIC_PREDICTION, INSTANCE_PREDICTION)
RECORDED_BY_DEFAULT = PREDICTIONS + tuple(prediction + LABEL_INFO_SUFFIX for prediction in PREDICTIONS) + (
    DIAGNOSTICS, private_topic(SEMANTIC_NODE, PROCESSING_TIME_OUTPUT),
    private_topic(INSTANCE_NODE, PROCESSING_TIME_OUTPUT))

# --- QoS --------------------------------------------------------------------------------------
RELIABILITY_CHOICES = ('best_effort', 'reliable')
TRANSPORT_CHOICES = ('raw', 'compressed')


def input_qos(reliability: str) -> QoSProfile:
    """Camera subscription: keep only the newest frame, so a slow model never builds a backlog.

    best_effort is the sensor-data convention for live cameras; reliable suits bag replay.
    """
    policy = ReliabilityPolicy.BEST_EFFORT if reliability == 'best_effort' else ReliabilityPolicy.RELIABLE
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=policy)


# Outputs are reliable: they match best-effort and reliable subscribers alike.
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
# Reliable + transient local: a subscriber that joins later (with transient-local durability)
# still receives the one label-set message published at start-up.
LABEL_INFO_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
DIAGNOSTICS_QOS = QoSProfile(depth=10)


def stamp_key(header) -> tuple[int, int]:
    """(sec, nanosec) of a std_msgs/Header: how every tool matches a frame's messages to each other."""
    return header.stamp.sec, header.stamp.nanosec


def stamp_seconds(key: tuple[int, int]) -> float:
    """A ``stamp_key`` in seconds, as the tracker takes a frame's stamp."""
    return key[0] + key[1] * 1e-9


# An image stamp further from the node's clock than this is not a latency but another clock (a camera
# stamping time since boot, an unsynchronised host, a stamp past 2038 wrapped): no latency figure.
PLAUSIBLE_STAMP_PAST_SEC = 3600.0
PLAUSIBLE_STAMP_FUTURE_SEC = 10.0


def stamp_latency_ms(now_ns: int, stamp) -> Optional[float]:
    """Milliseconds from an image stamp to ``now_ns``; None for a stamp at or before the epoch (a camera
    without a clock) and for one that is not plausible (more than an hour old or 10 s ahead: another
    clock), so one odd stamp never poisons a latency window. Plain integers: rclpy's Time refuses
    negative stamps."""
    stamp_ns = stamp.sec * 10**9 + stamp.nanosec
    if stamp_ns <= 0:
        return None
    latency_ms = (now_ns - stamp_ns) / 1e6
    if not -PLAUSIBLE_STAMP_FUTURE_SEC * 1e3 <= latency_ms <= PLAUSIBLE_STAMP_PAST_SEC * 1e3:
        return None
    return latency_ms
