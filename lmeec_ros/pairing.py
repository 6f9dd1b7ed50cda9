"""Subscribe to both cameras and pair their images by header stamp.

message_filters.ApproximateTimeSynchronizer is used where it is installed (any ROS 2 distribution);
lmeec_core.sync, which has the same semantics, where it is not (ROS 2 from PyPI wheels). Either way
every image is first seen by `on_image` (rates, silent cameras) and stamps going backwards on a
camera (a bag looping, a simulator restarting) empty the synchroniser: the new stamps would
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
                 on_image: Callable[[str, ImageMsg], None],
                 on_pair: Callable[[FramePair], None],
                 on_time_jump: Callable[[str, int], None]) -> None:
        self._node = node
        self._on_image = on_image
        self._on_pair = on_pair
        self._on_time_jump = on_time_jump
        self._last_stamp: dict[str, int] = {}
        if message_filters is not None:
            filters = [message_filters.Subscriber(node, msg_type, topics[v], qos_profile=qos,
                                                  callback_group=callback_group) for v in VIEWS]
            for view, sub in zip(VIEWS, filters):
                sub.registerCallback(self._arrived, view)  # before the synchroniser's own callback
            self._mf_sync = message_filters.ApproximateTimeSynchronizer(filters, queue_size, slop_s)
            self._mf_sync.registerCallback(lambda ego, exo: self._on_pair(FramePair(ego, exo)))
            self._subscriptions = [sub.sub for sub in filters]
        else:
            self._sync: ApproximateTimeSynchronizer[ImageMsg] = ApproximateTimeSynchronizer(
                len(VIEWS), queue_size, slop_s)
            self._subscriptions = [
                node.create_subscription(msg_type, topics[v], lambda msg, v=v: self._arrived_unfiltered(msg, v),
                                         qos, callback_group=callback_group) for v in VIEWS]

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
        stamp = stamp_ns(msg.header.stamp)
        last = self._last_stamp.get(view)
        self._last_stamp[view] = stamp
        if last is not None and stamp < last:
            self.clear()
            self._on_time_jump(view, last - stamp)
        self._on_image(view, msg)

    def _arrived_unfiltered(self, msg: ImageMsg, view: str) -> None:
        self._arrived(msg, view)
        pair = self._sync.add(VIEWS.index(view), stamp_ns(msg.header.stamp), msg)
        if pair is not None:
            self._on_pair(FramePair(*pair))
