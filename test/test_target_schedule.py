"""Target schedules on a hand-made recording: when each change is made and with what prompt, and each
result scored against the GT of its own target's object (no ROS needed)."""
from __future__ import annotations

import numpy as np
import pytest

from lmeec_core.bag_eval import BagTopics, ObjectTruth, bag_pairs
from lmeec_core.data.bags import write_scene_bag
from lmeec_core.data.synthetic import SyntheticFrame
from lmeec_core.errors import InputError
from lmeec_core.target_schedule import Schedule, TargetChange, TargetScores

FRAMES = 6
SHAPE = (12, 16)  # both cameras
ROOM_TARGET, OTHER = 1, 4  # instance ids
OTHER_IN_EGO_FROM = 3  # the other object enters the ego view on this frame
EGO_BOX = (9, 2, 12, 6)  # where it is then: x_min, y_min, x_max, y_max


def _frame(index: int) -> SyntheticFrame:
    """Target at the left of both views; the other object at the right of exo always, of ego from frame 3."""
    ego, exo = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    ego[4:8, 1:5] = exo[6:10, 2:6] = ROOM_TARGET
    exo[1:5, 10:14] = OTHER
    if index >= OTHER_IN_EGO_FROM:
        x0, y0, x1, y1 = EGO_BOX
        ego[y0:y1 + 1, x0:x1 + 1] = OTHER
    image = np.zeros((*SHAPE, 3), np.uint8)
    return SyntheticFrame(index, index / 10, image, image, ego == ROOM_TARGET, exo == ROOM_TARGET, ego, exo)


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    return write_scene_bag(tmp_path_factory.mktemp("bags") / "scene", map(_frame, range(FRAMES)))


def test_a_change_parses_from_its_command_line_spelling_and_refuses_others():
    change = TargetChange.parse("2:ego:box:4")
    assert change == TargetChange("ego", "box", 4, from_pair=2) and str(change) == "2:ego:box:4"
    assert TargetChange.parse("0:exo:mask:target") == TargetChange("exo")
    for text, why in (("2:ego:box", "PAIR:VIEW:PROMPT:OBJECT"), ("x:ego:box:4", "PAIR must be an integer"),
                      ("2:ego:box:cup", "OBJECT an instance id"), ("2:top:box:4", "view 'top'"),
                      ("2:ego:lasso:4", "prompt 'lasso'"), ("2:ego:box:0", "0 is the background"),
                      ("-1:ego:box:4", "pair index >= 0")):
        with pytest.raises(InputError, match=why):
            TargetChange.parse(text)


def test_changes_are_made_in_order_on_the_first_pair_from_theirs_where_the_object_is_visible(bag):
    schedule = Schedule([TargetChange("ego"), TargetChange("ego", "box", OTHER, from_pair=1),
                         TargetChange("exo", "click", ROOM_TARGET, from_pair=5)], ObjectTruth(bag))
    made = [schedule.due(i, {v: pair.stamp_of(v) for v in ("ego", "exo")}) for i, pair in enumerate(bag_pairs(bag))]
    assert [m.pair if m else None for m in made] == [0, None, None, OTHER_IN_EGO_FROM, None, 5]
    first, box, click = (m for m in made if m)
    np.testing.assert_array_equal(first.prompt["mask"], _frame(0).ego_mask)
    assert box.prompt == {"box": EGO_BOX} and box.change.instance == OTHER
    assert click.prompt == {"points": [[3, 7]], "labels": [1]}  # the object's pixel nearest its middle
    assert schedule.done

    elsewhere = BagTopics(ego_instances="/ego/labels", exo_instances="/exo/labels")
    Schedule([TargetChange("ego")], ObjectTruth(bag, elsewhere))  # the room's target needs no instance topics
    with pytest.raises(InputError, match=r"no messages on \['/ego/labels', '/exo/labels'\]"):
        Schedule([TargetChange("ego"), TargetChange("ego", "box", OTHER)], ObjectTruth(bag, elsewhere))


def _results(frames: range, target_id: int, mask_of) -> list[tuple[int, str, int, np.ndarray]]:
    return [(target_id, "exo", i, mask_of(_frame(i))) for i in frames]


def _scored(bag, results, **schedule) -> dict:
    stamps = [pair.exo_stamp_ns for pair in bag_pairs(bag)]
    scores = TargetScores(ObjectTruth(bag), **schedule)
    for target_id, view, index, mask in results:
        scores.add(target_id, view, stamps[index], mask)
    return scores.summary()


def _half(mask: np.ndarray) -> np.ndarray:
    """The upper half of a mask's rows: IoU 0.5 with it."""
    rows = np.flatnonzero(mask.any(1))
    half = mask.copy()
    half[rows[len(rows) // 2]:] = False
    return half


def test_each_result_is_scored_against_the_gt_of_its_own_targets_object(bag):
    # Target 7 found the room's target exactly on pairs 0-3; target 9 half of the other object on 3-5.
    # Scored against the room's target, target 9's results would all score 0.
    results = (_results(range(0, 4), 7, lambda f: f.exo_instances == ROOM_TARGET)
               + _results(range(3, 6), 9, lambda f: _half(f.exo_instances == OTHER)))
    changes = {7: TargetChange("ego"), 9: TargetChange("ego", "box", OTHER, from_pair=3)}
    figures = _scored(bag, results, targets=changes)
    first, second = figures["targets"]
    assert (first["target_id"], first["object"], first["prompt"]) == (7, "target", "mask")
    assert (second["target_id"], second["object"], second["prompt"]) == (9, str(OTHER), "box")
    assert first["metrics"]["iou"] == pytest.approx(1.0) and first["metrics"]["n_frames"] == 4
    assert second["metrics"]["iou"] == pytest.approx(0.5) and second["metrics"]["n_frames"] == 3
    total = figures["metrics"]
    assert total["n_frames"] == 7 and total["results_without_gt"] == 0
    assert total["iou"] == pytest.approx((4 * 1.0 + 3 * 0.5) / 7)

    # Without the answers' ids: the k-th new target id takes the k-th change, the same figures.
    assert _scored(bag, results, upcoming=list(changes.values())) == figures
    with pytest.raises(InputError, match="target 9, which the schedule does not name"):
        _scored(bag, results, upcoming=[TargetChange("ego")])
