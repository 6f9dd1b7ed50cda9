"""Score a bag of the node's recorded results against the ground-truth topics of the bag that was replayed.

Each ~/correspondence result is paired with the GT mask of its target camera that has the same stamp
(results carry the target image's header) and scored with the EgoExo4D metrics by
`lmeec_core.bag_eval.BagScore`, the scorer of the offline path, so both give figures of one kind.
With a schedule of target changes (a replay that re-targeted), each result is scored against the GT
of the object its own target marked (results carry `target_id`), per target and in total.
Reading needs `rosbags` and this package's Correspondence.msg, not a running ROS graph.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader

from lmeec_core.bag_eval import BagScore, BagTopics, ObjectTruth
from lmeec_core.data.bags import decode_image
from lmeec_core.errors import InputError
from lmeec_core.preprocess import BBox
from lmeec_core.target_schedule import TargetChange, TargetScores
from lmeec_ros.bag_record import CORRESPONDENCE_TYPE, output_typestore
from lmeec_ros.frame_pair import stamp_ns


@dataclass(frozen=True)
class RecordedResult:
    """One ~/correspondence message as read back from a bag."""

    source_view: str
    target_view: str
    target_id: int  # the set_target call the result belongs to
    stamp_ns: int  # of the target image
    source_stamp_ns: int
    mask: np.ndarray  # bool [H, W], target camera
    bbox: BBox | None
    score: float
    visible: bool


def _bbox(roi: Any) -> BBox | None:
    if roi.width == 0 or roi.height == 0:
        return None
    return roi.x_offset, roi.y_offset, roi.x_offset + roi.width - 1, roi.y_offset + roi.height - 1


def read_results(bag: str | Path, topic: str = "/lmeec/correspondence") -> Iterator[RecordedResult]:
    """The Correspondence messages of `topic`, in record order, decoded."""
    path = Path(bag)
    if not path.exists():
        raise InputError(f"bag {path} does not exist; expected a rosbag2 folder or .mcap/.db3 file")
    store = output_typestore()
    with Reader(path) as reader:
        connections = [c for c in reader.connections if c.topic == topic and c.msgtype == CORRESPONDENCE_TYPE]
        if not connections:
            found = {c.topic: c.msgtype for c in reader.connections}
            raise InputError(f"bag {path} has no {CORRESPONDENCE_TYPE} topic {topic!r}; found {found}")
        for connection, _, raw in reader.messages(connections):
            msg = store.deserialize_cdr(raw, connection.msgtype)
            yield RecordedResult(msg.source_view, msg.target_view, int(msg.target_id), stamp_ns(msg.header.stamp),
                                 stamp_ns(msg.source_stamp), decode_image(msg.mask) != 0, _bbox(msg.bbox),
                                 float(msg.score), bool(msg.visible))


def score_results(results_bag: str | Path, gt_bag: str | Path, topic: str = "/lmeec/correspondence",
                  topics: BagTopics = BagTopics(), targets: dict[int, TargetChange] | None = None,
                  schedule: Sequence[TargetChange] = ()) -> dict[str, Any]:
    """EgoExo4D metrics of the recorded results against `gt_bag`'s GT masks; JSON-able.

    Without `targets` and `schedule` every result is scored against the room's target (the GT mask
    topics). Otherwise per target: `targets` maps the target ids of the set_target answers to their
    changes, and target ids it does not name take the changes of `schedule` in order of appearance.
    """
    truth = ObjectTruth(gt_bag, topics)
    per_target = targets is not None or bool(schedule)
    score = TargetScores(truth, targets, schedule) if per_target else BagScore(truth.of(None))
    directions: set[str] = set()
    for result in read_results(results_bag, topic):
        directions.add(f"{result.source_view}->{result.target_view}")
        if per_target:
            score.add(result.target_id, result.target_view, result.stamp_ns, result.mask)
        else:
            score.add(result.target_view, result.stamp_ns, result.mask)
    figures = score.summary() if per_target else {"metrics": score.summary()}
    return {"results_bag": str(results_bag), "gt_bag": str(gt_bag), "directions": sorted(directions), **figures}
