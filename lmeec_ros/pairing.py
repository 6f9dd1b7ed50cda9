"""Subscribe to both cameras and pair their images by header stamp.

message_filters.ApproximateTimeSynchronizer is used where it is installed (any ROS 2 distribution);
lmeec_core.sync, which has the same semantics, where it is not (ROS 2 from PyPI wheels). Either way
every image is first seen by `on_image`, which may refuse it (an oversized frame) before it changes
anything: neither the synchroniser nor the camera's newest stamp sees it. Stamps going backwards on
a camera (a bag looping, a simulator restarting) empty the synchroniser: the new stamps would
otherwise be evicted in favour of the old, newer-looking ones and pairing would stall.
"""
from __future__ import annotations

from typing import Callable

from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile

from lmeec_core.sync import ApproximateTimeSynchronizer
from lmeec_ros.frame_pair import VIEWS, FramePair, ImageMsg, stamp_ns

try:
    import message_filters
except ImportError:  # ROS 2 from PyPI has no message_filters
    message_filters = None

BACKEND = "message_filters" if message_filters is not None else "lmeec_core.sync"


class CameraPairing:
    """The two image subscriptions and their synchroniser, alive between activate and deactivate."""

    def __init__(self, node: Node, msg_type: type, topics: dict[str, str], qos: QoSProfile,
                 queue_size: int, slop_s: float, callback_group: CallbackGroup,
                 on_image: Callable[[str, ImageMsg], bool],
                 on_pair: Callable[[FramePair], None],
                 on_time_jump: Callable[[str, int], None]) -> None:
        """`on_image(view, msg)` sees every image first and returns whether to pair it."""
        self._node = node
        self._on_image = on_image
        self._on_pair = on_pair
        self._on_time_jump = on_time_jump
        self._last_stamp: dict[str, int] = {}
        if message_filters is not None:
            # The synchroniser reads from filters this class feeds, so refused images never reach it.
            self._inputs = {v: message_filters.SimpleFilter() for v in VIEWS}
            self._mf_sync = message_filters.ApproximateTimeSynchronizer(
                [self._inputs[v] for v in VIEWS], queue_size, slop_s)
            self._mf_sync.registerCallback(lambda ego, exo: self._on_pair(FramePair(ego, exo)))
        else:
            self._sync: ApproximateTimeSynchronizer[ImageMsg] = ApproximateTimeSynchronizer(
                len(VIEWS), queue_size, slop_s)
        self._subscriptions = [
            node.create_subscription(msg_type, topics[v], lambda msg, v=v: self._arrived(msg, v), qos,
                                     callback_group=callback_group) for v in VIEWS]

    def destroy(self) -> None:
        for sub in self._subscriptions:
            self._node.destroy_subscription(sub)
        self._subscriptions = []

    def clear(self) -> None:
        """Forget the images waiting for a partner."""
        if message_filters is not None:
            with self._mf_sync.lock:
                for queue in self._mf_sync.queues:
                    queue.clear()
        else:
            self._sync.clear()

    def _arrived(self, msg: ImageMsg, view: str) -> None:
        if not self._on_image(view, msg):   # refused: its stamp is not the camera's newest either
            return
        stamp = stamp_ns(msg.header.stamp)
        last = self._last_stamp.get(view)
        self._last_stamp[view] = stamp
        if last is not None and stamp < last:
            self.clear()
            self._on_time_jump(view, last - stamp)
        if message_filters is not None:
            self._inputs[view].signalMessage(msg)
        elif (pair := self._sync.add(VIEWS.index(view), stamp, msg)) is not None:
            self._on_pair(FramePair(*pair))
