"""Score a bag of the node's recorded results against the ground-truth topics of the bag that was replayed.

Each ~/correspondence result is paired with the GT mask of its target camera that has the same stamp
(results carry the target image's header) and scored with the EgoExo4D metrics by
`lmeec_core.bag_eval.BagScore`, the scorer of the offline path, so both give figures of one kind.
Reading needs `rosbags` and this package's Correspondence.msg, not a running ROS graph.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader

from lmeec_core.bag_eval import BagScore, BagTopics, ground_truth
from lmeec_core.data.bags import decode_image
from lmeec_core.errors import InputError
from lmeec_core.preprocess import BBox
from lmeec_ros.bag_record import CORRESPONDENCE_TYPE, output_typestore
from lmeec_ros.frame_pair import stamp_ns


@dataclass(frozen=True)
class RecordedResult:
    """One ~/correspondence message as read back from a bag."""

    source_view: str
    target_view: str
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
            yield RecordedResult(msg.source_view, msg.target_view, stamp_ns(msg.header.stamp),
                                 stamp_ns(msg.source_stamp), decode_image(msg.mask) != 0, _bbox(msg.bbox),
                                 float(msg.score), bool(msg.visible))


def score_results(results_bag: str | Path, gt_bag: str | Path, topic: str = "/lmeec/correspondence",
                  topics: BagTopics = BagTopics()) -> dict[str, Any]:
    """EgoExo4D metrics of the recorded results against `gt_bag`'s GT masks; JSON-able."""
    score = BagScore(ground_truth(gt_bag, topics))
    directions: set[str] = set()
    for result in read_results(results_bag, topic):
        directions.add(f"{result.source_view}->{result.target_view}")
        score.add(result.target_view, result.stamp_ns, result.mask)
    return {"results_bag": str(results_bag), "gt_bag": str(gt_bag), "directions": sorted(directions),
            "metrics": score.summary()}
