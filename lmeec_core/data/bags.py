"""rosbag2 files (MCAP or sqlite3) of synthetic scenes, and camera images read back from bags.

Uses the pure-Python `rosbags` package only, so bags are written and read without a ROS install
and lmeec_core never imports rclpy. Written bags look like a real two-camera recording: each camera
stamps its own frames (independent jitter, the exo camera a little offset from the ego one), so
exact-stamp pairing fails and approximate-time pairing is needed, and each message is recorded a
few milliseconds after its stamp. Besides the target's GT masks a bag carries per-camera instance-id
images and the room's object catalogue (bag metadata), so that any object can be marked and scored.
"""
from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from lmeec_core.data.synthetic import SyntheticFrame
from lmeec_core.errors import InputError

EGO_IMAGE_TOPIC = "/ego/image_raw"
EXO_IMAGE_TOPIC = "/exo/image_raw"
EGO_MASK_TOPIC = "/ego/gt_mask"
EXO_MASK_TOPIC = "/exo/gt_mask"
EGO_INSTANCES_TOPIC = "/ego/gt_instances"  # mono8, pixel = instance id (see synthetic.object_names), 0 = none
EXO_INSTANCES_TOPIC = "/exo/gt_instances"
CAMERA_TOPICS = {  # view -> (image, GT mask of the target, GT instance ids), as written
    "ego": (EGO_IMAGE_TOPIC, EGO_MASK_TOPIC, EGO_INSTANCES_TOPIC),
    "exo": (EXO_IMAGE_TOPIC, EXO_MASK_TOPIC, EXO_INSTANCES_TOPIC),
}
OBJECTS_KEY = "lmeec.objects"  # metadata custom_data: JSON {name: {"instance": id, "on_table": bool}}
FRAME_IDS = {"ego": "ego_camera", "exo": "exo_camera"}
IMAGE_MSGTYPE = "sensor_msgs/msg/Image"
BAG_VERSION = 9  # rosbag2 metadata version of Jazzy and Kilted
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
# Encoding -> (channels, channel order giving RGB); mono8 stays single-channel.
ENCODINGS = {
    "rgb8": (3, [0, 1, 2]),
    "bgr8": (3, [2, 1, 0]),
    "rgba8": (4, [0, 1, 2]),
    "bgra8": (4, [2, 1, 0]),
    "mono8": (1, [0]),
}

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
_Image = TYPESTORE.types[IMAGE_MSGTYPE]
_Header = TYPESTORE.types["std_msgs/msg/Header"]
_Time = TYPESTORE.types["builtin_interfaces/msg/Time"]


@dataclass(frozen=True)
class CameraTiming:
    """How header stamps and record times of a written bag deviate from the ideal frame times."""

    start_ns: int = 1_700_000_000_000_000_000  # header stamp of frame 0 (wall-clock epoch, like a robot)
    exo_offset_s: float = 0.012  # the exo camera fires this much after the ego camera
    jitter_s: float = 0.004  # each header stamp moves uniformly within +-jitter_s, per camera
    delay_s: tuple[float, float] = (0.002, 0.012)  # record time - header stamp, uniform per message
    seed: int = 0


class BagImage(NamedTuple):
    topic: str
    stamp_ns: int  # from the message header
    image: np.ndarray  # uint8 RGB [H, W, 3], or [H, W] for mono8


def write_scene_bag(
    path: str | Path,
    frames: Iterable[SyntheticFrame],
    *,
    storage: Literal["mcap", "sqlite3"] = "mcap",
    timing: CameraTiming = CameraTiming(),
    objects: Mapping[str, Mapping[str, int | bool]] | None = None,
) -> Path:
    """Record synthetic frames as a rosbag2: images (rgb8), the target's GT masks (mono8 0/255) and the
    instance-id images (mono8) of both cameras; `objects` (see `synthetic.object_catalogue`) goes to
    the bag's metadata.

    A mask carries the same header stamp as its image. Messages are written in record-time order,
    which is what `ros2 bag play` replays.
    """
    path = Path(path)
    if storage not in STORAGES:
        raise InputError(f"storage {storage!r} is not supported; expected one of {list(STORAGES)}")
    if path.exists():
        raise InputError(f"bag path {path} already exists; expected a path to create")
    rng = np.random.default_rng(timing.seed)
    pending: list[tuple[int, int, str, bytes]] = []  # heap of (record_ns, sequence, topic, cdr)
    sequence = itertools.count()
    lead_ns = int((timing.jitter_s + abs(timing.exo_offset_s)) * 1e9)
    with Writer(path, version=BAG_VERSION, storage_plugin=STORAGES[storage]) as writer:
        if objects is not None:
            writer.set_custom_data(OBJECTS_KEY, json.dumps(objects))
        connections = {
            topic: writer.add_connection(topic, IMAGE_MSGTYPE, typestore=TYPESTORE)
            for topics in CAMERA_TOPICS.values() for topic in topics
        }
        for frame in frames:
            nominal_ns = timing.start_ns + round(frame.stamp_s * 1e9)
            for view, (image_topic, mask_topic, instances_topic) in CAMERA_TOPICS.items():
                offset_s = timing.exo_offset_s if view == "exo" else 0.0
                jitter_s = rng.uniform(-timing.jitter_s, timing.jitter_s)
                stamp_ns = nominal_ns + round((offset_s + jitter_s) * 1e9)
                serialized = partial(_serialize_image, stamp_ns=stamp_ns, frame_id=FRAME_IDS[view])
                image = serialized(getattr(frame, f"{view}_image"), "rgb8")
                mask = serialized(getattr(frame, f"{view}_mask").astype(np.uint8) * 255, "mono8")
                instances = serialized(getattr(frame, f"{view}_instances"), "mono8")
                # One record time for the image, one for its ground truth (mask and instances together).
                for messages in (((image_topic, image),), ((mask_topic, mask), (instances_topic, instances))):
                    record_ns = stamp_ns + round(rng.uniform(*timing.delay_s) * 1e9)
                    for topic, cdr in messages:
                        heapq.heappush(pending, (record_ns, next(sequence), topic, cdr))
            # Later frames cannot be recorded before this frame's earliest possible stamp.
            while pending and pending[0][0] < nominal_ns - lead_ns:
                _write(writer, connections, heapq.heappop(pending))
        while pending:
            _write(writer, connections, heapq.heappop(pending))
    return path


def _write(writer: Writer, connections: dict[str, Any], item: tuple[int, int, str, bytes]) -> None:
    record_ns, _, topic, cdr = item
    writer.write(connections[topic], record_ns, cdr)


def _serialize_image(pixels: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> bytes:
    """CDR bytes of a sensor_msgs/Image holding `pixels` (uint8 [H, W] or [H, W, C]) unpadded."""
    height, width = pixels.shape[:2]
    channels = ENCODINGS[encoding][0]
    message = _Image(
        header=_Header(stamp=_Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels,
        data=np.ascontiguousarray(pixels, dtype=np.uint8).reshape(-1),
    )
    return bytes(TYPESTORE.serialize_cdr(message, IMAGE_MSGTYPE))


def _reader(path: str | Path) -> Reader:
    """A reader of the bag at `path`, to open with `with`; InputError when there is none."""
    if not Path(path).exists():
        raise InputError(f"bag {path} does not exist; expected a rosbag2 folder or .mcap/.db3 file")
    return Reader(Path(path))


def read_scene_objects(path: str | Path) -> dict[str, dict[str, int | bool]]:
    """The object catalogue a bag was written with (`write_scene_bag`'s `objects`); empty when it has none.

    It lives in the folder's metadata.yaml (rosbag2's `custom_data`), so a bare .mcap/.db3 file has none.
    """
    with _reader(path) as reader:
        text = (reader.storage.metadata.custom or {}).get(OBJECTS_KEY)
    return json.loads(text) if text else {}


def read_bag_images(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[BagImage]:
    """Yield the images of `topics` (all Image topics when None) in record order, decoded.

    Colour images come back RGB whatever their encoding (rgb8, bgr8, rgba8, bgra8), mono8 as
    [H, W]; row padding (`step`) is honoured.
    """
    with _reader(path) as reader:
        available = {c.topic: c for c in reader.connections}
        if topics is None:
            topics = [t for t, c in available.items() if c.msgtype == IMAGE_MSGTYPE]
        wanted = list(topics)
        for topic in wanted:
            if topic not in available or available[topic].msgtype != IMAGE_MSGTYPE:
                found = {t: c.msgtype for t, c in available.items()}
                raise InputError(f"bag {path} has no {IMAGE_MSGTYPE} topic {topic!r}; found {found}")
        for connection, _, raw in reader.messages([available[t] for t in wanted]):
            message = TYPESTORE.deserialize_cdr(raw, connection.msgtype)
            stamp = message.header.stamp
            yield BagImage(connection.topic, stamp.sec * 10**9 + stamp.nanosec, decode_image(message))


def decode_image(message: Any) -> np.ndarray:
    """Pixels of a sensor_msgs/Image-like object (height, width, encoding, step, data) as uint8.

    RGB [H, W, 3] for colour encodings (alpha dropped, BGR reordered), [H, W] for mono8.
    """
    if message.encoding not in ENCODINGS:
        raise InputError(
            f"image encoding {message.encoding!r} is not supported; expected one of {list(ENCODINGS)}"
        )
    channels, order = ENCODINGS[message.encoding]
    height, width, step = message.height, message.width, message.step
    data = np.frombuffer(message.data, np.uint8)
    if step < width * channels or data.size < step * height:
        raise InputError(
            f"{message.encoding} image of {width}x{height} has step {step} and {data.size} bytes; expected "
            f"step >= {width * channels} and at least step * height = {step * height} bytes"
        )
    rows = data[: step * height].reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if channels == 1:
        return rows[..., 0]
    return np.ascontiguousarray(rows[..., order])
