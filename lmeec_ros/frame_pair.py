"""Synchronised ego/exo frame pairs, and the short history that set_target stamps refer to."""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Union

from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

from lmeec_core.sync import NS_PER_S

ImageMsg = Union[Image, CompressedImage]
VIEWS = ("ego", "exo")


def stamp_ns(stamp: Time) -> int:
    return stamp.sec * NS_PER_S + stamp.nanosec


def other_view(view: str) -> str:
    return "exo" if view == "ego" else "ego"


@dataclass(frozen=True)
class FramePair:
    """One ego and one exo image whose stamps agree within the node's slop."""
    ego: ImageMsg
    exo: ImageMsg

    def msg(self, view: str) -> ImageMsg:
        return self.ego if view == "ego" else self.exo

    def view_stamp_ns(self, view: str) -> int:
        return stamp_ns(self.msg(view).header.stamp)

    @property
    def stamp_ns(self) -> int:
        """A pair is as recent as its newer image."""
        return max(self.view_stamp_ns("ego"), self.view_stamp_ns("exo"))


class PairHistory:
    """The last `size` pairs, newest last; thread-safe (filled by subscriptions, read by services)."""

    def __init__(self, size: int) -> None:
        self._pairs: deque[FramePair] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, pair: FramePair) -> None:
        with self._lock:
            self._pairs.append(pair)

    def clear(self) -> None:
        with self._lock:
            self._pairs.clear()

    def latest(self) -> FramePair | None:
        with self._lock:
            return self._pairs[-1] if self._pairs else None

    def find(self, view: str, stamp: int, tolerance_ns: int) -> FramePair | None:
        """The pair whose `view` image is nearest to `stamp`, if within `tolerance_ns`."""
        with self._lock:
            pairs = list(self._pairs)
        if not pairs:
            return None
        nearest = min(pairs, key=lambda p: abs(p.view_stamp_ns(view) - stamp))
        return nearest if abs(nearest.view_stamp_ns(view) - stamp) <= tolerance_ns else None

    def describe(self, view: str) -> str:
        """The stamps held for `view`, for refusal messages."""
        with self._lock:
            stamps = [p.view_stamp_ns(view) for p in self._pairs]
        if not stamps:
            return "no pairs held"
        return f"{len(stamps)} pairs held, {view} stamps {min(stamps) / NS_PER_S:.3f} .. {max(stamps) / NS_PER_S:.3f} s"
