"""rosbag2 files through ``rosbags`` (MCAP or sqlite3), with rclpy messages on our side.

Messages are stored as CDR, exactly as ``ros2 bag record`` stores them, so bags made here play in
ROS 2 and bags recorded on a vehicle read here. rclpy (de)serialises; rosbags' typestore only
supplies the message definitions the MCAP schema needs, our own messages registered from their
.msg files.
"""
from __future__ import annotations

import importlib
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from seg_perception.messages.topics import (CAMERA, CAMERA_INFO_NAME, COMPRESSED_SUFFIX, CameraBagTopics,
                                            camera_bag_topics, camera_namespace, output_in_namespace)
from seg_perception.package_share import INTERFACE_PACKAGE, data_path

STORAGE_PLUGINS = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'



class BagError(ValueError):
    """A bag that cannot be used as asked (missing, empty, lacking a topic)."""


@lru_cache(maxsize=1)
def typestore():
    """ROS 2 Kilted's message definitions plus seg_perception_msgs (from its .msg files)."""
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted(data_path('msg', INTERFACE_PACKAGE).glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(), f'{INTERFACE_PACKAGE}/msg/{path.stem}'))
    store.register(types)
    return store


def msgtype_of(msg: Any) -> str:
    """'sensor_msgs/msg/Image' for an rclpy sensor_msgs.msg.Image."""
    package = type(msg).__module__.split('.')[0]
    return f'{package}/msg/{type(msg).__name__}'


def message_class(msgtype: str) -> type:
    package, _, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{package}.msg'), name)


class BagWriter:
    """Writes rclpy messages; connections are created on first use of a topic."""

    def __init__(self, path: str | Path, storage: str = 'mcap') -> None:
        if storage not in STORAGE_PLUGINS:
            raise BagError(f'storage {storage!r} is not one of {", ".join(STORAGE_PLUGINS)}')
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f'{self.path} exists already; rosbag2 writes a new folder')
        self._writer = Writer(self.path, version=9, storage_plugin=STORAGE_PLUGINS[storage])
        self._connections: dict[str, Any] = {}

    def __enter__(self) -> 'BagWriter':
        self._writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self._writer.close()

    def write(self, topic: str, msg: Any, timestamp_ns: int) -> None:
        self.write_raw(topic, msgtype_of(msg), serialize_message(msg), timestamp_ns)

    def write_raw(self, topic: str, msgtype: str, data: bytes, timestamp_ns: int) -> None:
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(topic, msgtype, typestore=typestore())
            self._connections[topic] = connection
        self._writer.write(connection, timestamp_ns, data)


def open_reader(path: str | Path) -> Reader:
    path = Path(path)
    if not (path / 'metadata.yaml').is_file():
        raise BagError(f'{path} is not a rosbag2 folder (no metadata.yaml)')
    return Reader(path)


def bag_topics(path: str | Path) -> dict[str, tuple[str, int]]:
    """topic -> (message type, message count)."""
    with open_reader(path) as reader:
        return {connection.topic: (connection.msgtype, connection.msgcount) for connection in reader.connections}


def topic_listing(available: dict[str, tuple[str, int]]) -> str:
    """One line per topic: name, type, message count (for error messages about missing topics)."""
    return '\n'.join(f'  {topic} ({msgtype}, {count} messages)'
                     for topic, (msgtype, count) in sorted(available.items()))


def require_topics(path: str | Path, topics: Sequence[str]) -> dict[str, tuple[str, int]]:
    """The bag's topics, after checking it has messages and every topic asked for; the error lists
    what the bag does have."""
    available = bag_topics(path)
    if not any(count for _, count in available.values()):
        raise BagError(f'bag {path} holds no messages')
    missing = [topic for topic in topics if topic not in available]
    if missing:
        raise BagError(f'bag {path} has no topic {", ".join(missing)}; it has:\n{topic_listing(available)}')
    return available


def camera_topic_in_bag(available: dict[str, tuple[str, int]], camera_topic: str) -> str:
    """``camera_topic``, or its /compressed variant, whichever the bag has."""
    for candidate in (camera_topic, camera_topic + COMPRESSED_SUFFIX):
        if candidate in available:
            return candidate
    raise BagError(f'the bag has no camera topic {camera_topic} (nor {camera_topic + COMPRESSED_SUFFIX}); it has:\n'
                   f'{topic_listing(available)}')


def cameras_in_bag(available: dict[str, tuple[str, int]], named: Sequence[str] = ()) -> list[CameraBagTopics]:
    """The cameras to replay or evaluate: those ``named`` (each as itself or its /compressed
    variant), or every image topic with a CameraInfo topic beside it (the ROS camera convention).
    A bag of one camera uses the classic topic names; with several, each camera has its own
    ground truth and predictions in its namespace (``camera_bag_topics``)."""
    found = sorted(topic for topic, (msgtype, _) in available.items() if msgtype in IMAGE_TYPES and available.get(
        output_in_namespace(camera_namespace(topic), '', CAMERA_INFO_NAME), ('',))[0] == CAMERA_INFO_TYPE)
    chosen = [camera_topic_in_bag(available, name) for name in named] or found or [
        camera_topic_in_bag(available, CAMERA)]
    if len(set(found) | set(chosen)) == 1:
        return [camera_bag_topics(chosen[0])]
    order = sorted(set(found) | set(chosen))
    return [camera_bag_topics(topic, order.index(topic)) for topic in chosen]


def read_messages(path: str | Path, topics: Optional[Sequence[str]] = None
                  ) -> Iterator[tuple[str, int, Any]]:
    """(topic, bag timestamp ns, rclpy message) in bag time order."""
    with open_reader(path) as reader:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        classes = {c.id: message_class(c.msgtype) for c in connections}
        for connection, timestamp, data in reader.messages(connections=connections):
            yield connection.topic, timestamp, deserialize_message(data, classes[connection.id])


def read_raw(path: str | Path, topics: Optional[Sequence[str]] = None) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, message type, bag timestamp ns, CDR bytes) in bag time order, for copying."""
    with open_reader(path) as reader:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        for connection, timestamp, data in reader.messages(connections=connections):
            yield connection.topic, connection.msgtype, timestamp, data
