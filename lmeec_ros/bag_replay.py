"""Replay a rosbag2's camera topics into the node, without `ros2 bag play` (absent from PyPI-only ROS).

Two ways to pace it:
* paced (default): every image is published at its record time, scaled by `rate`, as `ros2 bag play`
  does; the node keeps up or drops pairs, exactly as with live cameras.
* lockstep: once the node has published its first result, each synchronised pair is published only
  after the previous pair's result arrived, so the node processes every pair whatever the machine's
  speed and the run is reproducible. Before the first result (no target yet) pairs go at the bag's pace.

Images are published as the bag's CDR bytes (no decoding), with `/clock` set to each message's record
time so that a node with use_sim_time follows the bag's clock. Pairs are formed with the node's own
rule (`lmeec_core.bag_eval.pair_by_stamp`), so a hook called on each pair, such as
`TargetsFromGroundTruth`, names the pairs the node holds. In lockstep the hook runs once the node has
answered the pair, so a target changed on it replaces one that already saw it, the same way on every
run. A hook may publish its pair again: DDS matches a new publisher on each side separately, so the
node can miss the very first images although this side already counts its subscription.
"""
from __future__ import annotations

import importlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from rclpy.client import Client
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Header

from lmeec_core.bag_eval import QUEUE_SIZE, SLOP_S, BagTopics, ObjectTruth, Pair, pair_by_stamp
from lmeec_core.data.bags import TYPESTORE
from lmeec_core.errors import InputError
from lmeec_core.sync import NS_PER_S
from lmeec_core.target_schedule import Prompted, Schedule, TargetChange, prompt_as_json
from lmeec_core.tracker import VIEWS
from lmeec_ros.bag_record import RECORD_QOS
from lmeec_ros.frame_pair import stamp_ns
from lmeec_ros.image_codec import mask_to_image
from lmeec_ros.msg import Correspondence
from lmeec_ros.srv import RemoveTarget, SetTarget

# Reliable matches both best-effort and reliable subscribers; keep-last never blocks the replay.
REPLAY_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
PENDING_LIMIT = 1000  # published pairs remembered for latency while waiting for their result
SET_TARGET_RETRY_S = 10.0  # a refused set_target is retried this long, its pair published again each time


class RawImage(NamedTuple):
    """One camera message of a bag, kept as the CDR bytes to publish."""

    view: str
    record_ns: int
    stamp_ns: int  # header stamp
    cdr: bytes


PairHook = Callable[[Pair[RawImage], Callable[[], None]], None]  # (pair, publish the pair again)


def ros_time(ns: int) -> Time:
    sec, nanosec = divmod(ns, NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def message_class(msgtype: str) -> type:
    """The rclpy class of a rosbag2 type name: 'sensor_msgs/msg/Image' -> sensor_msgs.msg.Image."""
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"message type {msgtype} is not importable here ({exc}); expected its "
                         "Python package to be installed") from exc


def read_raw_images(bag: str | Path, topics: dict[str, str]) -> Iterator[RawImage]:
    """The image messages of `topics` (view -> bag topic) in record order, as CDR with their stamps."""
    path = Path(bag)
    if not path.exists():
        raise InputError(f"bag {path} does not exist; expected a rosbag2 folder or .mcap/.db3 file")
    view_of = {topic: view for view, topic in topics.items()}
    with Reader(path) as reader:
        connections = [c for c in reader.connections if c.topic in view_of]
        missing = set(view_of) - {c.topic for c in connections}
        if missing:
            found = sorted({c.topic for c in reader.connections})
            raise InputError(f"bag {path} has no topic {sorted(missing)}; found {found}")
        for connection, record_ns, raw in reader.messages(connections):
            header = TYPESTORE.deserialize_cdr(raw, connection.msgtype).header
            yield RawImage(view_of[connection.topic], record_ns, stamp_ns(header.stamp), bytes(raw))


class Pacer:
    """Sleeps so that bag time runs `rate` times as fast as wall time; time spent `paused()` is not counted."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise InputError(f"rate {rate}; expected > 0 (1 = the bag's own speed)")
        self.rate = rate
        self._origin: tuple[int, float] | None = None  # (bag ns, monotonic s) of the first message

    def wait_until(self, bag_ns: int) -> None:
        if self._origin is None:
            self._origin = (bag_ns, time.monotonic())
            return
        due = self._origin[1] + (bag_ns - self._origin[0]) / NS_PER_S / self.rate
        time.sleep(max(0.0, due - time.monotonic()))

    @contextmanager
    def paused(self) -> Iterator[None]:
        started = time.monotonic()
        yield
        if self._origin is not None:
            self._origin = (self._origin[0], self._origin[1] + time.monotonic() - started)


class ResultMonitor:
    """Follows the node's ~/correspondence: which published pairs got a result, and how long it took.

    Latency is measured here, on one clock, from publishing a pair to receiving its result: it holds
    transport, waiting and inference, and needs no agreement between the bag's and the node's clocks.
    """

    def __init__(self, node: Node, topic: str) -> None:
        self._cond = threading.Condition()
        self._published: OrderedDict[int, float] = OrderedDict()  # image stamp -> monotonic publish time
        self._answered: set[int] = set()  # target-image stamps with a result
        self.latencies_ms: list[float] = []
        self.first_result_ns: int | None = None
        self._subscription = node.create_subscription(Correspondence, topic, self._on_result, RECORD_QOS)

    def published(self, pair: Pair[Any]) -> None:
        now = time.monotonic()
        with self._cond:
            for stamp in (pair.ego_stamp_ns, pair.exo_stamp_ns):
                self._published[stamp] = now
            while len(self._published) > PENDING_LIMIT:
                self._published.popitem(last=False)

    def _on_result(self, msg: Correspondence) -> None:
        now = time.monotonic()
        stamp = stamp_ns(msg.header.stamp)
        with self._cond:
            self._answered.add(stamp)
            sent = self._published.pop(stamp, None)
            self._published.pop(stamp_ns(msg.source_stamp), None)
            if sent is not None:
                self.latencies_ms.append(1e3 * (now - sent))
            if self.first_result_ns is None:
                self.first_result_ns = stamp
            self._cond.notify_all()

    def _has_result(self, pair: Pair[Any]) -> bool:
        return pair.ego_stamp_ns in self._answered or pair.exo_stamp_ns in self._answered

    def answered(self, pair: Pair[Any]) -> bool:
        with self._cond:
            return self._has_result(pair)

    def wait(self, pair: Pair[Any], timeout_s: float) -> bool:
        """Whether `pair`'s result arrived within `timeout_s`."""
        with self._cond:
            return self._cond.wait_for(partial(self._has_result, pair), timeout_s)

    def close(self, node: Node) -> None:
        node.destroy_subscription(self._subscription)

    def wait_for_publisher(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._subscription.get_publisher_count() == 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


@dataclass(frozen=True)
class ReplayOptions:
    topics: BagTopics = BagTopics()  # the bag's image topics (its mask topics, for GT targets)
    remap: dict[str, str] = field(default_factory=dict)  # bag topic -> published topic
    rate: float = 1.0  # bag seconds per wall second (paced mode, and lockstep before the first result)
    lockstep: bool = False
    clock: bool = True  # publish /clock with each message's record time
    results_topic: str = "/lmeec/correspondence"
    result_timeout_s: float = 30.0  # lockstep: longest wait for one pair's result; also the final drain
    slop_s: float = SLOP_S  # the node's pairing parameters, to name the pairs it forms
    queue_size: int = QUEUE_SIZE


@dataclass
class ReplayStats:
    """What a replay published and what came back; JSON-able through `as_dict()`."""

    mode: str
    images_published: int = 0
    pairs: int = 0
    pairs_before_first_result: int = 0
    results: int = 0  # pairs (from the first result on) that got a result
    dropped: int = 0  # pairs from the first result on that got none (paced: the node was busy)
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        figures = {k: v for k, v in vars(self).items() if k != "latencies_ms"}
        ms = np.array(self.latencies_ms) if self.latencies_ms else None
        figures["latency_ms_median"] = float(np.median(ms)) if ms is not None else None
        figures["latency_ms_p95"] = float(np.percentile(ms, 95)) if ms is not None else None
        return figures


class BagPlayer:
    """Publishes a bag's ego/exo images (and /clock) from `node`; `on_pair` is called on every pair formed."""

    def __init__(self, node: Node, bag: str | Path, options: ReplayOptions = ReplayOptions(),
                 on_pair: PairHook = lambda pair, republish: None) -> None:
        self.bag = Path(bag)
        self.options = options
        self._node = node
        self._on_pair = on_pair
        self._pacer = Pacer(options.rate)
        self._monitor = ResultMonitor(node, options.results_topic)
        self._clock = node.create_publisher(Clock, "/clock", REPLAY_QOS) if options.clock else None
        with Reader(self.bag) as reader:
            msgtypes = {c.topic: c.msgtype for c in reader.connections}
        self._publishers = {}
        for view, topic in options.topics.images().items():
            if topic not in msgtypes:
                raise InputError(f"bag {self.bag} has no topic {topic}; found {sorted(msgtypes)}")
            self._publishers[view] = node.create_publisher(message_class(msgtypes[topic]),
                                                           options.remap.get(topic, topic), REPLAY_QOS)
        self._stats = ReplayStats("lockstep" if options.lockstep else f"paced x{options.rate:g}")

    def wait_for_node(self, timeout_s: float) -> bool:
        """Whether both camera topics have a subscriber and the results topic a publisher within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while any(pub.get_subscription_count() == 0 for pub in self._publishers.values()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return self._monitor.wait_for_publisher(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Remove this player's publishers and subscription from the node."""
        for publisher in (*self._publishers.values(), self._clock):
            if publisher is not None:
                self._node.destroy_publisher(publisher)
        self._monitor.close(self._node)

    def run(self) -> ReplayStats:
        """Replay the whole bag, wait for the last result, and say what happened."""
        started = time.monotonic()
        published: list[Pair[RawImage]] = []
        for pair in pair_by_stamp(self._arrivals(), self.options.slop_s, self.options.queue_size):
            if self.options.lockstep:
                self._publish(max(pair.ego.record_ns, pair.exo.record_ns), pair.ego, pair.exo)
            self._monitor.published(pair)
            published.append(pair)
            if self._locked():  # the pair's result under the current target, before the hook may change it
                self._monitor.wait(pair, self.options.result_timeout_s)
            with self._pacer.paused():
                self._on_pair(pair, partial(self._publish_again, pair))
            if self._locked():  # the result of a first target the hook has just set
                self._monitor.wait(pair, self.options.result_timeout_s)
        if published and self._monitor.first_result_ns is not None:
            self._monitor.wait(published[-1], self.options.result_timeout_s)
        self._count(published)
        self._stats.wall_s = time.monotonic() - started
        return self._stats

    def _locked(self) -> bool:
        """Lockstep is engaged once the node answers (before, there is nothing to wait for)."""
        return self.options.lockstep and self._monitor.first_result_ns is not None

    def _arrivals(self) -> Iterator[tuple[str, int, RawImage]]:
        """The bag's images in record order, each published when due unless lockstep publishes pairs."""
        for image in read_raw_images(self.bag, self.options.topics.images()):
            if not self._locked():
                self._pacer.wait_until(image.record_ns)
            if not self.options.lockstep:
                self._publish(image.record_ns, image)
            yield image.view, image.stamp_ns, image

    def _publish(self, clock_ns: int, *images: RawImage) -> None:
        if self._clock is not None:
            self._clock.publish(Clock(clock=ros_time(clock_ns)))
        for image in images:
            self._publishers[image.view].publish(image.cdr)
            self._stats.images_published += 1

    def _publish_again(self, pair: Pair[RawImage]) -> None:
        """Both images of `pair` once more, without /clock (the node keeps one pair per stamp)."""
        for image in (pair.ego, pair.exo):
            self._publishers[image.view].publish(image.cdr)

    def _count(self, published: list[Pair[RawImage]]) -> None:
        first = self._monitor.first_result_ns
        after = [p for p in published if first is not None and p.stamp_ns >= first]
        answered = sum(self._monitor.answered(p) for p in after)
        self._stats.pairs = len(published)
        self._stats.pairs_before_first_result = len(published) - len(after)
        self._stats.results, self._stats.dropped = answered, len(after) - answered
        self._stats.latencies_ms = list(self._monitor.latencies_ms)


class TargetsFromGroundTruth:
    """An `on_pair` hook that marks targets as a person would: for each change of a schedule, in order,
    ~/set_target with the object's GT mask, box or click in its view, on the first pair from the
    change's pair on where the object is visible there (see `lmeec_core.target_schedule`).

    The schedule follows one object at a time: a later change first stops the target of the one
    before (~/remove_target), then marks its object as a new target, with a new id."""

    def __init__(self, node: Node, bag: str | Path, changes: Sequence[TargetChange],
                 service: str = "/lmeec/set_target", topics: BagTopics = BagTopics(), timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s
        self.made: list[tuple[Prompted, SetTarget.Response]] = []  # each change made, with the node's answer
        self._schedule = Schedule(changes, ObjectTruth(bag, topics))
        self._pairs_seen = 0
        self._node = node
        self._client: Client = node.create_client(SetTarget, service)
        self._remover: Client = node.create_client(RemoveTarget, service.rsplit("/", 1)[0] + "/remove_target")

    def close(self) -> None:
        self._node.destroy_client(self._client)
        self._node.destroy_client(self._remover)

    def __call__(self, pair: Pair[RawImage], republish: Callable[[], None]) -> None:
        index, self._pairs_seen = self._pairs_seen, self._pairs_seen + 1
        prompted = self._schedule.due(index, {view: pair.stamp_of(view) for view in VIEWS})
        if prompted is not None:
            if self.made and self.made[-1][1].target_id:
                self._remove(self.made[-1][1].target_id)
            request = set_target_request(prompted.change.view, prompted.stamp_ns, prompted.prompt)
            self.made.append((prompted, self._call_until_accepted(request, republish)))

    def _remove(self, target_id: int) -> None:
        if not self._remover.wait_for_service(timeout_sec=self.timeout_s):
            raise TimeoutError(f"{self._remover.service_name} not available within {self.timeout_s} s")
        answer = call_service(self._remover, RemoveTarget.Request(target_id=target_id), self.timeout_s)
        if not answer.success:
            raise RuntimeError(f"{self._remover.service_name}: {answer.message}")

    def summary(self) -> list[dict[str, Any]]:
        """Per change of the schedule, JSON-able: where it was made, the prompt given and the node's answer."""
        figures = []
        for index, change in enumerate(self._schedule.changes):
            entry = {"view": change.view, "prompt": change.prompt, "object": change.object,
                     "from_pair": change.from_pair}
            if index < len(self.made):
                prompted, answer = self.made[index]
                entry.update(pair=prompted.pair, stamp_ns=prompted.stamp_ns, target_id=answer.target_id,
                             answer=answer.message, **prompt_as_json(prompted.prompt))
            else:
                entry.update(pair=None, stamp_ns=None, target_id=0, answer=f"the object ({change.object}) was "
                             f"never visible in {change.view} from pair {change.from_pair} on")
            figures.append(entry)
        return figures

    def _call_until_accepted(self, request: SetTarget.Request, republish: Callable[[], None]) -> SetTarget.Response:
        """The node may not hold the pair (still in flight, or lost before DDS matched): retry a refusal
        for a while, publishing the pair again before each retry."""
        if not self._client.wait_for_service(timeout_sec=self.timeout_s):
            raise TimeoutError(f"{self._client.service_name} not available within {self.timeout_s} s")
        deadline = time.monotonic() + SET_TARGET_RETRY_S
        while True:
            answer = call_service(self._client, request, self.timeout_s)
            if answer.success:
                return answer
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self._client.service_name}: {answer.message}")
            republish()
            time.sleep(0.1)


def set_target_request(view: str, stamp_ns: int, prompt: dict[str, Any]) -> SetTarget.Request:
    """The ~/set_target request of a tracker prompt (`CorrespondenceTracker.set_target`'s mask, box or
    points and labels) drawn on the `view` image stamped `stamp_ns`; `prompt.prompt_from_request` inverts it."""
    request = SetTarget.Request(view=view, stamp=ros_time(stamp_ns))
    if "mask" in prompt:
        request.mask = mask_to_image(prompt["mask"], Header(stamp=request.stamp))
    if "box" in prompt:
        request.box = [float(v) for v in prompt["box"]]
    if "points" in prompt:
        request.points = [Point(x=float(x), y=float(y)) for x, y in prompt["points"]]
        request.labels = [int(v) for v in prompt["labels"]]
    return request


def call_service(client: Client, request: Any, timeout_s: float) -> Any:
    """The response of a service call made from a thread other than the one spinning the node."""
    future = client.call_async(request)
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    if not done.wait(timeout_s):
        client.remove_pending_request(future)
        raise TimeoutError(f"{client.service_name} did not answer within {timeout_s} s")
    return future.result()
