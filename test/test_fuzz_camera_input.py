"""A seeded fuzz campaign against real node processes: thousands of generated camera messages, raw
and compressed, broken in every way a field can be (encodings, sizes, steps, data, stamps, CDR
bytes, compressed formats and corruptions), interleaved with valid frames of every encoding,
size and odd header.

Both segmentation nodes serve the same two cameras (one raw, one compressed). Asserted: every
valid frame is answered by both nodes with its header and size; no invalid message is answered;
the nodes examined most invalid messages (their /diagnostics count them as not answered), are
alive and answering at the end; their logs stay bounded in lines and line length, with no
traceback. Bounded in time: generation stops at ``TIME_BUDGET_SEC`` whatever the count.
"""
from __future__ import annotations

import io
import itertools
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from PIL import Image as PILImage
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image
from seg_perception_msgs.msg import InstanceMaskArray
from std_msgs.msg import Header

from camera_encodings import ALL_ENCODINGS, encode_image_msg
from ros_helpers import NodeProcess, ProbeNode
from seg_perception.messages.topics import (INSTANCE_NODE, INSTANCE_OUTPUT, OUTPUT_QOS, SEMANTIC_NODE,
                                            SEMANTIC_OUTPUT, camera_output_topic, stamp_key)
from seg_perception.runtime.diagnostics import status_values

pytestmark = pytest.mark.ros

SEED = 20261122
INVALID_MESSAGES = 3000
VALID_EVERY = 60  # one valid frame, answered before going on, after this many invalid messages
TIME_BUDGET_SEC = 150.0
ANSWER_TIMEOUT_SEC = 60.0
MAX_PIXELS = 200_000
RAW_CAMERA = '/fuzz/raw/image'
COMPRESSED_CAMERA = '/fuzz/compressed/image/compressed'
MAX_LOG_LINES = 400  # throttled per kind of problem: a few dozen kinds over a few minutes
MAX_LOG_LINE_CHARS = 700  # ThrottledErrorLog's 400 characters, plus the logger's prefix and a suffix


@dataclass
class Message:
    camera: str
    payload: Any  # Image, CompressedImage or serialized bytes
    valid: bool
    size: Optional[tuple[int, int]] = None  # (height, width) a valid frame is answered with
    header: Optional[Header] = None


class Campaign:
    """Seeded generators of valid and invalid camera messages; each message gets its own stamp."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self._stamps = itertools.count(100)

    def header(self, odd: bool = True) -> Header:
        sec, nanosec = next(self._stamps), int(self.rng.integers(0, 1_000_000_000))
        frame_id = 'camera'
        if odd:  # valid, if unusual: before the epoch, last nanosecond, far future, long or unicode ids
            choice = self.rng.integers(0, 6)
            if choice == 0:
                sec = -sec
            elif choice == 1:
                nanosec = 999_999_999
            elif choice == 2:
                sec += 2**31 - 10_000
            elif choice == 3:
                frame_id = 'ü_кадр_相机_' + 'x' * int(self.rng.integers(0, 2000))
            elif choice == 4:
                frame_id = ''
        return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)

    def rgb(self, even: bool = True) -> np.ndarray:
        height, width = (int(self.rng.integers(2, 80)) * (2 if even else 1) for _ in range(2))
        return self.rng.integers(0, 256, (height, width, 3), dtype=np.uint8)

    # --- valid ----------------------------------------------------------------------------------
    def valid_raw(self) -> Message:
        rgb, encoding = self.rgb(), str(self.rng.choice(ALL_ENCODINGS))
        msg = encode_image_msg(rgb, encoding, self.header())
        if self.rng.random() < 0.3:  # padded rows, as some drivers send them
            pad = int(self.rng.integers(1, 64))
            rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
            msg.data = np.pad(rows, ((0, 0), (0, pad))).tobytes()
            msg.step += pad
        return Message(RAW_CAMERA, msg, True, rgb.shape[:2], msg.header)

    def valid_compressed(self) -> Message:
        rgb = self.rgb(even=False)
        kind = self.rng.integers(0, 3)
        if kind == 0:
            data, fmt = cv2.imencode('.jpg', rgb)[1].tobytes(), 'rgb8; jpeg compressed bgr8'
        elif kind == 1:
            data, fmt = cv2.imencode('.png', rgb)[1].tobytes(), 'rgb8; png compressed bgr8'
        else:
            data, fmt = cv2.imencode('.png', rgb.astype(np.uint16) * 257)[1].tobytes(), 'rgb16; png compressed bgr16'
        header = self.header()
        return Message(COMPRESSED_CAMERA, CompressedImage(header=header, format=fmt, data=data), True,
                       rgb.shape[:2], header)

    # --- invalid --------------------------------------------------------------------------------
    def invalid_raw(self) -> Message:
        msg = encode_image_msg(self.rgb(), str(self.rng.choice(ALL_ENCODINGS)), self.header(odd=False))
        size = msg.step * msg.height
        breakers: list[Callable[[], None]] = [
            lambda: setattr(msg, 'encoding', self.text()),
            lambda: setattr(msg, 'encoding', str(self.rng.choice(['32FC1', '16UC3', '8SC1', 'jpeg', '', 'RGB8']))),
            lambda: setattr(msg, 'data', bytes(msg.data[:int(self.rng.integers(0, size))])),
            lambda: setattr(msg, 'step', int(self.rng.integers(0, msg.step))),
            lambda: setattr(msg, 'step', int(self.rng.integers(size + 1, 2**32))),
            lambda: setattr(msg, 'height', 0),
            lambda: setattr(msg, 'width', 0),
            lambda: setattr(msg, 'height', int(self.rng.integers(msg.height + 1, 2**32))),
            lambda: setattr(msg, 'width', int(self.rng.integers(msg.width + 1, 2**32))),
            lambda: (setattr(msg, 'height', 4000), setattr(msg, 'width', 4000),
                     setattr(msg, 'step', 12000)),  # above max_image_pixels, data far too short too
            lambda: setattr(msg.header.stamp, 'nanosec', int(self.rng.integers(1_000_000_000, 2**32))),
        ]
        breakers[int(self.rng.integers(0, len(breakers)))]()
        if self.rng.random() < 0.1:  # not even CDR: bytes that do not deserialize as an Image
            return Message(RAW_CAMERA, self.broken_cdr(serialize_message(msg)), False)
        return Message(RAW_CAMERA, msg, False, header=msg.header)

    def invalid_compressed(self) -> Message:
        header = self.header(odd=False)
        rgb = self.rgb(even=False)
        jpeg = cv2.imencode('.jpg', rgb)[1].tobytes()
        png = cv2.imencode('.png', rgb)[1].tobytes()
        makers: list[Callable[[], bytes]] = [
            lambda: b'',
            lambda: self.rng.bytes(int(self.rng.integers(1, 5000))),
            lambda: jpeg[:int(self.rng.integers(2, len(jpeg) - 2))],
            lambda: png[:int(self.rng.integers(8, len(png) - 12))],
            lambda: b'\xff\xd8\xff' + self.rng.bytes(int(self.rng.integers(10, 3000))),
            lambda: b'\x89PNG\r\n\x1a\n' + self.rng.bytes(int(self.rng.integers(10, 3000))),
            lambda: self.jpeg_declaring_more(jpeg),
            lambda: self.png_claiming(int(self.rng.integers(2000, 60000)), int(self.rng.integers(2000, 60000))),
            lambda: cv2.imencode(str(self.rng.choice(['.tiff', '.bmp', '.webp', '.ppm'])), rgb)[1].tobytes(),
            lambda: cv2.imencode('.tiff', rgb.astype(np.float32))[1].tobytes(),
            lambda: self.gif(rgb),
        ]
        if self.rng.random() < 0.08:  # a good JPEG under an impossible stamp
            header.stamp.nanosec = int(self.rng.integers(1_000_000_000, 2**32))
            data = jpeg
        else:
            data = makers[int(self.rng.integers(0, len(makers)))]()
        msg = CompressedImage(header=header, format=str(self.rng.choice(['jpeg', 'png', self.text()])), data=data)
        if self.rng.random() < 0.1:
            return Message(COMPRESSED_CAMERA, self.broken_cdr(serialize_message(msg)), False)
        return Message(COMPRESSED_CAMERA, msg, False, header=header)

    # --- pieces ---------------------------------------------------------------------------------
    def text(self) -> str:
        return ''.join(map(chr, self.rng.integers(32, 0x3000, int(self.rng.integers(0, 9000)))))

    def broken_cdr(self, serialized: bytes) -> bytes:
        cut = serialized[:int(self.rng.integers(0, max(1, len(serialized) // 2)))]
        return cut if self.rng.random() < 0.5 else serialized[:4] + self.rng.bytes(int(self.rng.integers(0, 200)))

    @staticmethod
    def jpeg_declaring_more(jpeg: bytes) -> bytes:
        data = bytearray(jpeg)
        start = data.index(b'\xff\xc0')
        data[start + 5:start + 9] = struct.pack('>HH', 1, 65000)
        return bytes(data)

    @staticmethod
    def png_claiming(width: int, height: int) -> bytes:
        data = bytearray(cv2.imencode('.png', np.zeros((2, 2), np.uint8))[1].tobytes())
        data[16:24] = struct.pack('>II', width, height)
        data[29:33] = struct.pack('>I', zlib.crc32(bytes(data[12:29])))
        return bytes(data)

    @staticmethod
    def gif(rgb: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        PILImage.fromarray(rgb).save(buffer, format='GIF')
        return buffer.getvalue()


class Outputs:
    """Every node's answers, by camera and stamp; the nodes' camera statuses on /diagnostics."""

    def __init__(self, probe: ProbeNode) -> None:
        self.answers: dict[tuple[str, str], dict] = {}
        for camera in (RAW_CAMERA, COMPRESSED_CAMERA):
            for node, output, msg_type in ((SEMANTIC_NODE, SEMANTIC_OUTPUT, Image),
                                           (INSTANCE_NODE, INSTANCE_OUTPUT, InstanceMaskArray)):
                store = self.answers[(node, camera)] = {}
                probe.node.create_subscription(msg_type, camera_output_topic(camera, node, output),
                                               lambda msg, store=store: store.setdefault(stamp_key(msg.header), msg),
                                               OUTPUT_QOS)
        self.statuses: dict[str, dict[str, str]] = {}
        probe.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = status_values(status)
            if 'input topic' in values:
                self.statuses[f'{status.name.split(":")[0]} {values["input topic"]}'] = values

    def answered(self, message: Message) -> bool:
        key = stamp_key(message.header)
        return all(key in store for (_, camera), store in self.answers.items() if camera == message.camera)

    def any_answer(self, header: Header) -> list[str]:
        key = stamp_key(header)
        return [f'{node} {camera}' for (node, camera), store in self.answers.items() if key in store]

    def check_answer(self, message: Message) -> None:
        key = stamp_key(message.header)
        for (node, camera), store in self.answers.items():
            if camera != message.camera:
                continue
            answer = store[key]
            assert answer.header == message.header, f'{node} changed the header of {key}'
            size = (answer.height, answer.width) if node == SEMANTIC_NODE else (answer.image_height,
                                                                               answer.image_width)
            assert size == message.size, f'{node} answered {key} at {size}, sent {message.size}'


def test_fuzzed_camera_messages_never_get_answers_nor_stop_the_nodes(tmp_path):
    cameras = f'cameras:=[{RAW_CAMERA}, {COMPRESSED_CAMERA}]'
    common = [cameras, 'input_height:=64', 'input_width:=128', 'input_reliability:=reliable', 'lazy:=false',
              f'max_image_pixels:={MAX_PIXELS}', 'max_batch:=1']
    nodes = [NodeProcess(f'seg_perception.nodes.{module}', [arg for value in common + extra for arg in ('-p', value)],
                         tmp_path / f'{module}.log')
             for module, extra in (('semantic_segmentation', []), ('instance_segmentation', []))]
    campaign = Campaign(SEED)
    probe = ProbeNode('fuzz_probe')
    try:
        for node in nodes:
            node.__enter__()
        outputs = Outputs(probe)
        publishers = {RAW_CAMERA: probe.node.create_publisher(Image, RAW_CAMERA, OUTPUT_QOS),
                      COMPRESSED_CAMERA: probe.node.create_publisher(CompressedImage, COMPRESSED_CAMERA, OUTPUT_QOS)}

        def alive() -> None:
            for node in nodes:
                node.assert_alive()

        assert probe.spin_until(lambda: all(p.get_subscription_count() == 2 for p in publishers.values()), 180,
                                alive), 'the nodes never subscribed to both cameras'

        def send_valid(message: Message) -> None:
            publishers[message.camera].publish(message.payload)
            assert probe.spin_until(lambda: outputs.answered(message), ANSWER_TIMEOUT_SEC, alive), \
                f'valid frame {stamp_key(message.header)} on {message.camera} not answered by both nodes'
            outputs.check_answer(message)

        for valid in (campaign.valid_raw(), campaign.valid_compressed()):  # the first model calls (warm-up)
            send_valid(valid)
        started, invalid, valid_count = time.monotonic(), [], 0
        while len(invalid) < INVALID_MESSAGES and time.monotonic() - started < TIME_BUDGET_SEC:
            for _ in range(VALID_EVERY):
                message = campaign.invalid_raw() if campaign.rng.random() < 0.5 else campaign.invalid_compressed()
                publishers[message.camera].publish(message.payload)
                invalid.append(message)
                probe.executor.spin_once(timeout_sec=0.003)  # about the pace the nodes refuse them at
            send_valid(campaign.valid_raw() if valid_count % 2 == 0 else campaign.valid_compressed())
            valid_count += 1
        elapsed = time.monotonic() - started
        for valid in (campaign.valid_raw(), campaign.valid_compressed()):  # still answering at the end
            send_valid(valid)
        probe.spin_for(2.5)  # a late answer would show here; the next statuses count everything
        answered_invalid = [(stamp_key(m.header), found) for m in invalid if m.header is not None
                            for found in [outputs.any_answer(m.header)] if found]
        alive()
        statuses = dict(outputs.statuses)
    finally:
        probe.close()
        for node in nodes:
            node.__exit__(None, None, None)
    print(f'\nfuzz: {len(invalid)} invalid and {valid_count + 4} valid messages in {elapsed:.0f} s; '
          + '; '.join(f'{name}: {values["images not answered"]} not answered, {values["frames dropped"]} dropped'
                      for name, values in sorted(statuses.items())))
    assert len(invalid) >= INVALID_MESSAGES // 2, f'only {len(invalid)} invalid messages within the time budget'
    assert not answered_invalid, f'invalid messages answered: {answered_invalid[:5]}'
    assert len(statuses) == 4, statuses
    for name, values in statuses.items():
        # Each node examined at least a third of the invalid messages (the rest were replaced in
        # the newest-frame slot by the next message before the worker was free, and counted).
        assert int(values['images not answered']) >= len(invalid) // 2 // 3, (name, values)
    for node in nodes:
        lines = node.output().splitlines()
        assert 'Traceback' not in node.output(), node.output()
        assert len(lines) <= MAX_LOG_LINES, f'{len(lines)} log lines'
        assert max(map(len, lines)) <= MAX_LOG_LINE_CHARS, max(lines, key=len)
