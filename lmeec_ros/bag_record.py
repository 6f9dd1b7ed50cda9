"""Record the node's outputs to a rosbag2 (MCAP or sqlite3) without `ros2 bag`, which PyPI-only ROS lacks.

Subscriptions are raw: the CDR bytes the node published go to the bag unchanged, so what is scored
later is exactly what a consumer received. The bag is written with `rosbags`, whose type store knows
the standard messages; this package's Correspondence is registered from its .msg text, so the bag
carries its definition and any rosbag2 reader can decode it.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore
from sensor_msgs.msg import Image

from lmeec_core.data.bags import BAG_VERSION, STORAGES
from lmeec_core.errors import InputError
from lmeec_ros.msg import Correspondence

CORRESPONDENCE_TYPE = "lmeec_ros/msg/Correspondence"
# The node's result topics, relative to its name (`/lmeec` by default), and their types.
OUTPUT_TOPICS: dict[str, type] = {"correspondence": Correspondence, "mask": Image, "source_mask": Image}
# Reliable like the node's publishers; deep enough that a slow disk never loses a result.
RECORD_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# Before closing a replay's recording: how long the topics must stay quiet, and the longest wait.
SETTLE_QUIET_S, SETTLE_TIMEOUT_S = 0.5, 10.0


def correspondence_definition() -> str:
    """The text of Correspondence.msg: installed (ament prefixes, this Python's prefix) or in the source tree."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    candidates = [Path(p) / "share" / "lmeec_ros" / "msg" / "Correspondence.msg" for p in prefixes]
    candidates.append(Path(__file__).resolve().parents[1] / "msg" / "Correspondence.msg")
    for path in candidates:
        if path.is_file():
            return path.read_text()
    raise InputError("Correspondence.msg not found; expected it in " + ", ".join(str(c) for c in candidates))


def output_typestore() -> Typestore:
    """A Kilted type store that also knows lmeec_ros/msg/Correspondence."""
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg(correspondence_definition(), CORRESPONDENCE_TYPE))
    return store


def msgtype_of(message_class: type) -> str:
    """rosbag2's name of an rclpy message class: sensor_msgs.msg.Image -> 'sensor_msgs/msg/Image'."""
    return f"{message_class.__module__.split('.')[0]}/msg/{message_class.__name__}"


def output_topics(node_name: str = "/lmeec") -> dict[str, type]:
    """Absolute result topics of the node called `node_name`, and their types."""
    return {f"{node_name.rstrip('/')}/{name}": cls for name, cls in OUTPUT_TOPICS.items()}


class OutputRecorder:
    """Writes every message of `topics` to a new bag, as received, until `close()`.

    Record times are this machine's wall clock at reception (as `ros2 bag record` without
    use_sim_time); scoring pairs results with ground truth by header stamp, not by record time.
    """

    def __init__(self, node: Node, path: str | Path, topics: dict[str, type], storage: str = "mcap") -> None:
        if storage not in STORAGES:
            raise InputError(f"storage {storage!r}; expected one of {list(STORAGES)}")
        self.path = Path(path)
        if self.path.exists():
            raise InputError(f"bag path {self.path} already exists; expected a path to create")
        self._node = node
        self._lock = threading.Lock()
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        self._writer.open()
        store = output_typestore()
        self.counts = {topic: 0 for topic in topics}
        self._connections = {topic: self._writer.add_connection(topic, msgtype_of(cls), typestore=store)
                             for topic, cls in topics.items()}
        self._subscriptions = [
            node.create_subscription(cls, topic, lambda raw, topic=topic: self._write(topic, raw), RECORD_QOS,
                                     raw=True)
            for topic, cls in topics.items()]

    def _write(self, topic: str, raw: bytes) -> None:
        with self._lock:
            if self._writer is None:
                return
            self._writer.write(self._connections[topic], time.time_ns(), raw)
            self.counts[topic] += 1

    def matched(self) -> bool:
        """Whether every recorded topic has a publisher matched (results published before are not seen)."""
        return all(sub.get_publisher_count() > 0 for sub in self._subscriptions)

    def wait_for_publishers(self, timeout_s: float) -> bool:
        """Whether every recorded topic has a matched publisher within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not self.matched():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def settle(self, quiet_s: float = SETTLE_QUIET_S, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
        """Return once no message has arrived for `quiet_s` (at most `timeout_s`).

        The node publishes a pair's ~/correspondence before its ~/mask and ~/source_mask, and each
        topic is delivered on its own: when a replay has seen the last result, that pair's masks may
        still be on their way. Closing only after the topics fall quiet keeps them in the bag.
        """
        deadline = time.monotonic() + timeout_s
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            with self._lock:
                total = sum(self.counts.values())
            if total != last:
                last, quiet_since = total, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return
            time.sleep(0.02)

    def close(self) -> dict[str, Any]:
        """Stop recording and finish the bag; returns the messages written per topic."""
        for sub in self._subscriptions:
            self._node.destroy_subscription(sub)
        self._subscriptions = []
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        return dict(self.counts)
