"""Approximate-time pairing of stamped streams, with the semantics of message_filters' Python
`ApproximateTimeSynchronizer`.

The ROS node uses message_filters where it is installed and this module where it is not (PyPI-only
ROS); offline tools use it to pair bag messages. Both paths must pair the same frames, so this is a
faithful re-implementation of the Python class (message_filters/__init__.py), minus ROS types:
stamps are integer nanoseconds and payloads are opaque.

The rule, applied on every arrival:
  1. The message joins its input's queue, keyed by stamp (a repeated stamp replaces the older
     message). While a queue holds more than `queue_size` messages, its oldest stamp is dropped,
     which may be the message that just arrived.
  2. Every other queue is searched for stamps within `slop` of the new one; if any queue has none,
     nothing is emitted. Candidates are ordered by distance to the new stamp (ties: arrival order).
  3. The first combination, in that order, whose whole span (max - min) is strictly below `slop` and
     whose messages are all still queued is emitted and removed from the queues.
Matching is greedy and immediate: a set is emitted as soon as it exists, never held back in case a
closer message arrives (that "pivot" search is the C++ ApproximateTime policy, not the Python class
this module mirrors). Unmatched messages stay queued until evicted, so a late message can still
complete a set older than one already emitted: consumers that need monotonic output drop those.
"""
from __future__ import annotations

import itertools
import threading
from typing import Generic, TypeVar

from lmeec_core.errors import ConfigError

T = TypeVar("T")

NS_PER_S = 1_000_000_000


class ApproximateTimeSynchronizer(Generic[T]):
    """Pairs (or, generally, groups) messages of `num_inputs` streams whose stamps nearly agree.

    Thread-safe: `add` may be called from several threads, as subscription callbacks are.
    """

    def __init__(self, num_inputs: int, queue_size: int, slop_s: float) -> None:
        if num_inputs < 2:
            raise ConfigError(f"num_inputs must be at least 2, got {num_inputs}")
        if queue_size < 1:
            raise ConfigError(f"queue_size must be at least 1, got {queue_size}")
        if slop_s < 0:
            raise ConfigError(f"slop must be >= 0 seconds, got {slop_s}")
        self.queue_size = queue_size
        # rclpy's Duration(seconds=slop) truncates the same way.
        self.slop_ns = int(slop_s * NS_PER_S)
        self._queues: list[dict[int, T]] = [{} for _ in range(num_inputs)]
        self._lock = threading.Lock()

    def add(self, index: int, stamp_ns: int, payload: T) -> tuple[T, ...] | None:
        """Queue `payload` of input `index`; return the set it completes, in input order, if any."""
        with self._lock:
            own = self._queues[index]
            own[stamp_ns] = payload
            while len(own) > self.queue_size:
                del own[min(own)]

            candidates: list[list[int]] = []
            for other_index, queue in enumerate(self._queues):
                if other_index == index:
                    continue
                near = [s for s in queue if abs(s - stamp_ns) <= self.slop_ns]
                if not near:
                    return None
                candidates.append(sorted(near, key=lambda s: abs(s - stamp_ns)))

            for others in itertools.product(*candidates):
                stamps = list(others)
                stamps.insert(index, stamp_ns)
                if max(stamps) - min(stamps) >= self.slop_ns:
                    continue
                if any(s not in q for q, s in zip(self._queues, stamps)):
                    continue
                return tuple(q.pop(s) for q, s in zip(self._queues, stamps))
            return None

    def clear(self) -> None:
        """Forget every queued message, e.g. when stamps jump back at a bag loop.

        Without this, messages of the previous loop would hold the queues (they are the newest
        stamps, so eviction removes the new arrivals instead) and pairing would stall.
        """
        with self._lock:
            for queue in self._queues:
                queue.clear()

    def queued(self) -> list[int]:
        """Number of messages waiting in each input's queue."""
        with self._lock:
            return [len(q) for q in self._queues]
