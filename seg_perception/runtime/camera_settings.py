"""How a node takes its cameras, and the ROS parameters that set it: one table, read by the node
that declares them, the camera channels that apply them and the generated parameter reference."""
from __future__ import annotations

from dataclasses import dataclass

from seg_perception.messages.images import DEFAULT_MAX_PIXELS
from seg_perception.messages.topics import DEFAULT_CAMERAS, RELIABILITY_CHOICES, TRANSPORT_CHOICES
from seg_perception.runtime.parameters import ParameterSpec


@dataclass(frozen=True)
class CameraInputSettings:
    """How a node takes its cameras: which, transport, QoS, limits, lazy mode, health reporting."""

    cameras: tuple[str, ...] = DEFAULT_CAMERAS
    input_transport: str = 'raw'
    input_reliability: str = 'best_effort'
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    lazy: bool = True
    diagnostics_period_sec: float = 1.0
    input_timeout_sec: float = 5.0


CAMERA_INPUT_PARAMETERS = tuple(ParameterSpec.of_field(CameraInputSettings, name, description, **options)
                                for name, description, options in (
    ('cameras', 'Camera image topics served by this node, one batched model for all. Default [image]: one camera, '
                'remapped to the camera topic, outputs under the node\'s own names. Any other topic, e.g. '
                '/front/image_raw, publishes its outputs in its namespace: /front/segmentation/..., '
                '/front/<node>/color. An entry ending in /compressed is a CompressedImage topic.', {}),
    ('input_transport', 'raw: sensor_msgs/Image on "image"; compressed: sensor_msgs/CompressedImage (JPEG/PNG) on '
                        '"image/compressed". Remap "image" to the camera topic either way.',
     {'choices': TRANSPORT_CHOICES}),
    ('input_reliability', 'QoS reliability of the camera subscription: best_effort (sensor data) for live cameras, '
                          'reliable for bag replay. Either way only the newest frame is kept.',
     {'choices': RELIABILITY_CHOICES}),
    ('max_image_pixels', 'Images with more pixels are refused with an error.', {'value_range': (1, 2**31 - 1)}),
    ('lazy', 'Run nothing (not even the camera subscription) while no one subscribes to any output; false: always '
             'run.', {}),
    ('diagnostics_period_sec', 'Period of the status on /diagnostics.', {'value_range': (0.1, 60.0)}),
    ('input_timeout_sec', 'Subscribed, no image and no answer for this long while no frame awaits the model: warning '
                          'in the log and on /diagnostics (missing or misnamed camera topic).',
     {'value_range': (0.1, 3600.0)}),
))
