"""Score the tracker on a rosbag2 recording without ROS: pair the cameras as the node does, track, compare with GT.

This is `lmeec evaluate-bag`, and the shared half of the ROS bag tools: `lmeec_ros.bag_score` scores a
node's recorded outputs with the same ground-truth lookup and `BagScore`, and the ROS replay pairs
images with the same `pair_by_stamp`. So a bag replayed through the node (in lockstep) and the same bag
evaluated here go through the same pairs, prompts and scoring, and their metrics can be compared.

Ground truth is a mono8 mask topic per camera whose messages carry the stamp of their image (what
`lmeec_core.data.bags.write_scene_bag` writes), and optionally a mono8 instance-id topic per camera,
which gives the mask of any object (`ObjectTruth`). A result is scored against the GT mask of its
target image's stamp, exactly; recordings are streamed, never loaded whole.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from rosbags.rosbag2 import Reader
from tqdm import tqdm

from .data.bags import (
    EGO_IMAGE_TOPIC,
    EGO_INSTANCES_TOPIC,
    EGO_MASK_TOPIC,
    EXO_IMAGE_TOPIC,
    EXO_INSTANCES_TOPIC,
    EXO_MASK_TOPIC,
    read_bag_images,
)
from .errors import InputError
from .metrics import MetricAccumulator
from .scoring import Scale
from .sync import NS_PER_S, ApproximateTimeSynchronizer
from .tracker import VIEWS, Correspondence, CorrespondenceTracker

T = TypeVar("T")

SLOP_S = 0.05  # the node's default `slop` parameter (lmeec_ros/params.py)
QUEUE_SIZE = 10  # the node's default `queue_size` parameter
PROTOCOLS = ("robot", "benchmark")
CAMERA_SCALE = Scale()  # bags hold masks at the camera's resolution


@dataclass(frozen=True)
class BagTopics:
    """Where a bag keeps each camera's images, the target's ground-truth masks and the instance ids."""

    ego_image: str = EGO_IMAGE_TOPIC
    exo_image: str = EXO_IMAGE_TOPIC
    ego_mask: str = EGO_MASK_TOPIC
    exo_mask: str = EXO_MASK_TOPIC
    ego_instances: str = EGO_INSTANCES_TOPIC
    exo_instances: str = EXO_INSTANCES_TOPIC

    def images(self) -> dict[str, str]:
        return {"ego": self.ego_image, "exo": self.exo_image}

    def masks(self) -> dict[str, str]:
        return {"ego": self.ego_mask, "exo": self.exo_mask}

    def instances(self) -> dict[str, str]:
        return {"ego": self.ego_instances, "exo": self.exo_instances}


@dataclass(frozen=True)
class Pair(Generic[T]):
    """One ego and one exo message whose stamps agree within the slop, as the node pairs them."""

    ego: T
    exo: T
    ego_stamp_ns: int
    exo_stamp_ns: int

    def of(self, view: str) -> T:
        return self.ego if view == "ego" else self.exo

    def stamp_of(self, view: str) -> int:
        return self.ego_stamp_ns if view == "ego" else self.exo_stamp_ns

    @property
    def stamp_ns(self) -> int:
        """A pair is as recent as its newer image (the node's rule for late pairs and the tracker's clock)."""
        return max(self.ego_stamp_ns, self.exo_stamp_ns)


def pair_by_stamp(messages: Iterable[tuple[str, int, T]], slop_s: float = SLOP_S,
                  queue_size: int = QUEUE_SIZE) -> Iterator[Pair[T]]:
    """Pairs of (view, stamp_ns, payload) messages taken in arrival (record) order.

    The node pairs with the same synchroniser and the same defaults, and drops a pair that is not
    newer than the last one it processed; so does this, so that offline and replayed runs see the
    same pairs.
    """
    sync: ApproximateTimeSynchronizer[tuple[int, T]] = ApproximateTimeSynchronizer(len(VIEWS), queue_size, slop_s)
    last_ns: int | None = None
    for view, stamp_ns, payload in messages:
        matched = sync.add(VIEWS.index(view), stamp_ns, (stamp_ns, payload))
        if matched is None:
            continue
        (ego_ns, ego), (exo_ns, exo) = matched
        pair = Pair(ego, exo, ego_ns, exo_ns)
        if last_ns is not None and pair.stamp_ns <= last_ns:
            continue
        last_ns = pair.stamp_ns
        yield pair


class StampWindow(Generic[T]):
    """Looks items of a stream up by (key, stamp) while holding only a window of it.

    Bags are written in arrival order, so stamps rise with a little disorder (camera jitter, per-topic
    delays). Items are read until one is stamped more than `ahead_s` after the stamp asked for, and
    dropped once they are `behind_s` older than it, so an hour-long recording is never held whole.
    Lookups must therefore come in roughly rising stamp order, as a node's outputs and a bag's pairs do.
    """

    def __init__(self, items: Iterable[tuple[str, int, T]], ahead_s: float = 1.0, behind_s: float = 10.0) -> None:
        self._items = iter(items)
        self._ahead_ns = int(ahead_s * NS_PER_S)
        self._behind_ns = int(behind_s * NS_PER_S)
        self._held: dict[tuple[str, int], T] = {}
        self._order: deque[tuple[str, int]] = deque()
        self._newest_ns: int | None = None

    def get(self, key: str, stamp_ns: int) -> T | None:
        """The item of `key` stamped exactly `stamp_ns`, or None when the stream has none."""
        while self._newest_ns is None or self._newest_ns <= stamp_ns + self._ahead_ns:
            item = next(self._items, None)
            if item is None:
                break
            item_key, item_ns, payload = item
            self._held[(item_key, item_ns)] = payload
            self._order.append((item_key, item_ns))
            self._newest_ns = item_ns if self._newest_ns is None else max(self._newest_ns, item_ns)
        while self._order and self._order[0][1] < stamp_ns - self._behind_ns:
            self._held.pop(self._order.popleft(), None)
        return self._held.get((key, stamp_ns))


class MaskLookup(Protocol):
    """GT masks by view and stamp (a `StampWindow`, or one object of an `ObjectTruth`)."""

    def get(self, view: str, stamp_ns: int) -> np.ndarray | None: ...


def _view_images(bag: str | Path, topics: dict[str, str]) -> Iterator[tuple[str, int, np.ndarray]]:
    view_of = {topic: view for view, topic in topics.items()}
    return ((view_of[m.topic], m.stamp_ns, m.image) for m in read_bag_images(bag, list(view_of)))


def ground_truth(bag: str | Path, topics: BagTopics = BagTopics()) -> StampWindow[np.ndarray]:
    """The bag's GT masks of its target (bool [H, W]) by view and stamp."""
    return StampWindow((view, stamp, image != 0) for view, stamp, image in _view_images(bag, topics.masks()))


class ObjectTruth:
    """GT masks of any object of a bag by view and stamp: `instance` None is the room's target (the GT
    mask topics, which every recording has), an instance id is that object (the instance-id topics).

    Each kind of topic is read once, on first use, however many objects are looked up; lookups come
    in roughly rising stamp order, as for a `StampWindow`.
    """

    def __init__(self, bag: str | Path, topics: BagTopics = BagTopics()) -> None:
        self._bag, self._topics = bag, topics
        self._masks: StampWindow[np.ndarray] | None = None
        self._instances: StampWindow[np.ndarray] | None = None

    def require(self, instances: Iterable[int | None]) -> None:
        """Refuse, before any replay, a bag that lacks the topics these objects are looked up in."""
        wanted = set(instances)
        topics = {*(self._topics.masks().values() if None in wanted else ()),
                  *(self._topics.instances().values() if wanted - {None} else ())}
        missing = sorted(t for t in topics if count_messages(self._bag, t) == 0)
        if missing:
            others = sorted(wanted - {None})
            raise InputError(f"bag {self._bag} has no messages on {missing}; expected mono8 GT mask topics for "
                             f"the room's target" + (f" and instance-id topics for instances {others}" if others else ""))

    def get(self, view: str, stamp_ns: int, instance: int | None = None) -> np.ndarray | None:
        """The mask (bool [H, W]) of `instance` in the `view` image stamped `stamp_ns`; None without GT there."""
        if instance is None:
            if self._masks is None:
                self._masks = ground_truth(self._bag, self._topics)
            return self._masks.get(view, stamp_ns)
        if self._instances is None:
            self._instances = StampWindow(_view_images(self._bag, self._topics.instances()))
        ids = self._instances.get(view, stamp_ns)
        return None if ids is None else ids == instance

    def of(self, instance: int | None) -> MaskLookup:
        """The masks of one object, as `BagScore` looks them up."""
        return _ObjectMasks(self, instance)


@dataclass(frozen=True)
class _ObjectMasks:
    truth: ObjectTruth
    instance: int | None

    def get(self, view: str, stamp_ns: int) -> np.ndarray | None:
        return self.truth.get(view, stamp_ns, self.instance)


@dataclass
class BagScore:
    """EgoExo4D metrics of target-view masks, each against the GT mask of its stamp.

    Masks are scored at the camera's resolution with `lmeec evaluate`'s rules for it (the location
    error over sqrt(2) x the long side, as the official scorers' square masks), so a bag's figures
    and an evaluation's can be compared.
    """

    gt: MaskLookup
    metrics: MetricAccumulator = field(default_factory=MetricAccumulator)
    without_gt: int = 0  # results whose stamp has no GT mask in the bag (not scored)

    def add(self, view: str, stamp_ns: int, mask: np.ndarray) -> None:
        gt = self.gt.get(view, stamp_ns)
        if gt is None:
            self.without_gt += 1
            return
        if gt.shape != mask.shape:
            raise InputError(f"{view} result of stamp {stamp_ns} is {mask.shape[1]}x{mask.shape[0]} but its GT "
                             f"mask is {gt.shape[1]}x{gt.shape[0]}; expected masks at the camera's resolution")
        self.metrics.add(gt, mask, size=CAMERA_SCALE.location_size(gt.shape))

    def summary(self) -> dict[str, float | int]:
        """MetricAccumulator's totals (iou, ca, le, ba, n_frames, n_frames_with_gt) and `results_without_gt`."""
        return {**self.metrics.summary(), "results_without_gt": self.without_gt}


def bag_pairs(bag: str | Path, topics: BagTopics = BagTopics(), slop_s: float = SLOP_S,
              queue_size: int = QUEUE_SIZE) -> Iterator[Pair[np.ndarray]]:
    """The bag's synchronised ego/exo images (uint8 RGB), in the order the node would process them."""
    return pair_by_stamp(_view_images(bag, topics.images()), slop_s, queue_size)


def count_messages(bag: str | Path, topic: str) -> int:
    """Messages of `topic` in the bag, from its index (for progress bars)."""
    with Reader(Path(bag)) as reader:
        return sum(c.msgcount for c in reader.connections if c.topic == topic)


def evaluate_bag(bag: str | Path, tracker: CorrespondenceTracker, source_view: str = "ego",
                 protocol: str = "robot", topics: BagTopics = BagTopics(), max_pairs: int | None = None,
                 slop_s: float = SLOP_S, queue_size: int = QUEUE_SIZE, progress: bool = True) -> dict[str, Any]:
    """Track the GT target of `source_view` through the bag and score the other view; returns JSON-able figures.

    robot: the target is given once, as the source view's GT mask on the first pair where it is
    visible, and tracked from there; every later pair is scored, as the node publishes a result for
    each (where the source view lost the target, what the tracker's `source_lost` makes of it). This is
    what a lockstep replay through the node computes. benchmark: the source GT mask is given on every
    pair and pairs without it are neither predicted nor scored (the official protocol).
    """
    if source_view not in VIEWS:
        raise InputError(f"source view {source_view!r}; expected one of {VIEWS}")
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol {protocol!r}; expected one of {PROTOCOLS}")
    target_view = "exo" if source_view == "ego" else "ego"
    gt = ground_truth(bag, topics)
    score = BagScore(gt)
    pairs = bag_pairs(bag, topics, slop_s, queue_size)
    total = count_messages(bag, topics.images()[source_view])
    seen, target_set_ns = 0, None
    for pair in tqdm(pairs, total=min(total, max_pairs or total), desc="evaluate-bag", unit="pair",
                     disable=not progress):
        if max_pairs is not None and seen >= max_pairs:
            break
        seen += 1
        source_mask = gt.get(source_view, pair.stamp_of(source_view))
        if target_set_ns is None:
            if source_mask is None or not source_mask.any():
                continue
            target_set_ns = pair.stamp_of(source_view)
            result = tracker.set_target(source_view, pair.ego, pair.exo, mask=source_mask)
        else:
            result = _step(tracker, pair, source_mask, protocol)
            if result is None:
                continue
        score.add(target_view, pair.stamp_of(target_view), result.mask)
    return {"bag": str(bag), "source_view": source_view, "target_view": target_view, "protocol": protocol,
            "pairs": seen, "target_set_at_ns": target_set_ns, "metrics": score.summary()}


def _step(tracker: CorrespondenceTracker, pair: Pair[np.ndarray], source_mask: np.ndarray | None,
          protocol: str) -> Correspondence | None:
    """One tracker step on `pair`; None where the benchmark protocol predicts nothing (no source object)."""
    stamp_s = pair.stamp_ns / NS_PER_S
    if protocol == "robot":
        return tracker.step(pair.ego, pair.exo, stamp=stamp_s)
    if source_mask is None:
        source_mask = np.zeros(pair.of(tracker.source_view).shape[:2], bool)
    result = tracker.step(pair.ego, pair.exo, source_mask=source_mask, stamp=stamp_s)
    return None if result.skipped else result
