"""lmeec_core.sync and message_filters.ApproximateTimeSynchronizer pair the same messages.

Runs wherever message_filters is installed (any ROS 2 distribution); skipped with ROS 2 from PyPI,
which lacks it. Each scenario feeds both synchronisers the same arrivals and compares every pair.
"""
import random

import pytest

from ros_helpers import require_ros

require_ros()
message_filters = pytest.importorskip(
    "message_filters", reason="message_filters is not installed (ROS 2 from PyPI); this runs on a ROS install")

from std_msgs.msg import Header  # noqa: E402

from lmeec_core.sync import ApproximateTimeSynchronizer  # noqa: E402

MS = 1_000_000


class Stamped:
    """What message_filters needs of a message: a header with a stamp."""

    def __init__(self, stamp_ns: int, index: int) -> None:
        self.header = Header()
        self.header.stamp.sec, self.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        self.stamp_ns, self.index = stamp_ns, index


def scenario(seed: int, period_ms: int, jitter_ms: int, drop: float, shuffle: int) -> list[tuple[int, int]]:
    """Arrivals (input, stamp): two jittered cameras, frames dropped, arrival order locally shuffled."""
    rng = random.Random(seed)
    arrivals = [(index, 10**9 + i * period_ms * MS + offset + rng.randint(-jitter_ms, jitter_ms) * MS)
                for i in range(300) for index, offset in ((0, 0), (1, 3 * MS)) if rng.random() > drop]
    for start in range(0, len(arrivals), shuffle):
        window = arrivals[start:start + shuffle]
        rng.shuffle(window)
        arrivals[start:start + shuffle] = window
    return arrivals


@pytest.mark.parametrize("seed, period_ms, jitter_ms, drop, shuffle, queue_size, slop_s", [
    (0, 33, 4, 0.0, 1, 10, 0.015),
    (1, 33, 12, 0.2, 3, 10, 0.02),
    (2, 66, 30, 0.3, 6, 3, 0.05),
    (3, 20, 20, 0.1, 8, 5, 0.01),
])
def test_same_pairs_as_message_filters(seed, period_ms, jitter_ms, drop, shuffle, queue_size, slop_s):
    inputs = [message_filters.SimpleFilter(), message_filters.SimpleFilter()]
    reference = message_filters.ApproximateTimeSynchronizer(inputs, queue_size, slop_s)
    expected = []
    reference.registerCallback(lambda a, b: expected.append((a.stamp_ns, b.stamp_ns)))
    ours = ApproximateTimeSynchronizer(2, queue_size, slop_s)
    got = []
    for index, stamp in scenario(seed, period_ms, jitter_ms, drop, shuffle):
        inputs[index].signalMessage(Stamped(stamp, index))
        pair = ours.add(index, stamp, stamp)
        if pair is not None:
            got.append(pair)
    assert len(expected) > 50
    assert got == expected
