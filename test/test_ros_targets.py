"""Several targets in one node, over real DDS: ids, independence, refusals, label masks, diagnostics.

One node process (random-weight nano, so masks are arbitrary but deterministic) serves the module;
the tests run in file order. Pairs are published in lockstep (the next once every target's result
for this one has arrived), so the node processes every pair and its results can be compared with
in-process trackers on the same frames: each target must get over DDS what it gets when it is
followed alone, whatever other targets are added or removed meanwhile.
"""
import signal
import time

import numpy as np
import pytest

from ros_helpers import NodeProcess, diagnostic_values, mask_image, require_ros, ros_time, stamp_of

require_ros()

from sensor_msgs.msg import Image  # noqa: E402

from lmeec_core.tracker import CorrespondenceTracker  # noqa: E402
from lmeec_ros import params  # noqa: E402
from lmeec_ros.msg import Correspondence  # noqa: E402
from lmeec_ros.node import load_tracker  # noqa: E402

EGO_SIZE, EXO_SIZE = (160, 120), (200, 150)   # (width, height)
PERIOD_NS = 100_000_000
SCORE_TOLERANCE = 1e-6
# Every target processed counts as visible (random weights give arbitrary scores), so its results have masks
# (a target whose tracked source mask comes out empty is followed from its last source memory).
SETTINGS = dict(capacity=3, max_targets=3, visibility_threshold=0.0)
# Prompts (x0, y0, x1, y1) on pair 0: two objects in ego, one in exo.
BOX_A, BOX_B, BOX_C = (10, 10, 50, 40), (90, 60, 140, 100), (120, 20, 180, 70)
BOX_A2 = (30, 70, 70, 110)   # where target A is moved to
BOX_C_EGO = (100, 75, 150, 115)   # where target C is marked again, in the other camera


def frame(i: int) -> dict[str, np.ndarray]:
    """Pair i's RGB images: fixed texture with a bright square that moves a few pixels per pair."""
    images = {}
    for view, (width, height) in (("ego", EGO_SIZE), ("exo", EXO_SIZE)):
        rng = np.random.default_rng(1000 * i + len(view) + width)
        pixels = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
        x = 20 + 3 * i
        pixels[30:70, x:x + 40] = (230, 200, 40)
        images[view] = pixels
    return images


def rgb_msg(pixels: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    height, width = pixels.shape[:2]
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3, is_bigendian=0)
    msg.header.stamp, msg.header.frame_id = ros_time(stamp_ns), frame_id
    msg.data = pixels.tobytes()
    return msg


def box_mask(size, box) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def decode_mono(msg: Image) -> np.ndarray:
    dtype = {"mono8": np.uint8, "mono16": np.dtype("<u2")}[msg.encoding]
    return np.frombuffer(bytes(msg.data), dtype).reshape(msg.height, msg.width)


@pytest.fixture(scope="module")
def node(ros):
    overrides = ros.tmp / "targets.yaml"
    overrides.write_text("/**:\n  ros__parameters:\n    diagnostics_period: 0.5\n    history_size: 40\n"
                         + "".join(f"    {k}: {v}\n" for k, v in SETTINGS.items()))
    proc = NodeProcess(ros, "--params-file", str(overrides))
    yield proc
    if proc.alive():
        proc.stop(signal.SIGINT)


class Session:
    """The test's side of the module: lockstep pairs, their results, and what was asked of the node."""

    def __init__(self, client) -> None:
        self.client = client
        self.correspondence = client.subscribe("/lmeec/correspondence", Correspondence)
        self.mask = client.subscribe("/lmeec/mask", Image)
        self.source_mask = client.subscribe("/lmeec/source_mask", Image)
        self.diagnostics = client.diagnostics()
        self.base_ns = client.now_ns()
        self.ids: dict[str, int] = {}   # test name of a target -> id answered
        self.pair = 0   # the latest pair published

    def stamp(self, i: int) -> int:
        return self.base_ns + i * PERIOD_NS

    def step(self, ids) -> dict[int, Correspondence]:
        """Publish the next pair and wait for the correspondence of each of `ids` on it."""
        self.pair += 1
        return self.results(self.pair, ids)

    def publish(self, i: int) -> None:
        images = frame(i)
        for view in ("ego", "exo"):
            self.client.publisher(f"/{view}/image_raw").publish(rgb_msg(images[view], self.stamp(i), f"{view}_cam"))

    def results(self, i: int, ids, timeout_s: float = 60.0) -> dict[int, Correspondence]:
        """Publish pair i and wait for the correspondence of each of `ids` on it."""
        self.publish(i)
        found = {}
        for target_id in ids:
            found[target_id] = self.correspondence.wait_for(
                lambda m, t=target_id: m.target_id == t and stamp_of(m) == self.stamp(i), timeout_s)
        return found

    def set_target(self, view: str, box, target_id: int = 0):
        """~/set_target with a box-shaped mask, drawn on the latest pair published."""
        size = EGO_SIZE if view == "ego" else EXO_SIZE
        return self.client.set_target(view=view, mask=mask_image(*size, box), stamp=ros_time(self.stamp(self.pair)),
                                      target_id=target_id)


@pytest.fixture(scope="module")
def session(client):
    for view in ("ego", "exo"):
        client.wait_for_subscribers(f"/{view}/image_raw")
    s = Session(client)
    deadline = time.monotonic() + 60
    while True:   # the node holds pair 0 once both images arrived and paired
        s.publish(0)
        time.sleep(0.3)
        answer = s.set_target("ego", BOX_A)
        if answer.success or time.monotonic() > deadline:
            break
    assert answer.success, answer.message
    s.ids["A"] = answer.target_id
    return s


def reference(prompts, removals=(), frames=range(1, 9)) -> dict[int, dict[int, object]]:
    """In-process results, by pair and target name: the node's tracker (same parameters) given
    `prompts` {name: (view, box)} on pair 0, stepped on `frames`, removing `removals` {pair: name}
    before that pair."""
    tracker: CorrespondenceTracker = load_tracker(params.Settings(device="cpu", **SETTINGS))
    images = frame(0)
    names = {}
    for name, (view, box) in prompts.items():
        size = EGO_SIZE if view == "ego" else EXO_SIZE
        target_id, _ = tracker.add_target(view, images["ego"], images["exo"], mask=box_mask(size, box))
        names[target_id] = name
    out = {}
    for i in frames:
        if i in dict(removals):
            gone = dict(removals)[i]
            tracker.remove_target(next(t for t, n in names.items() if n == gone))
        images = frame(i)
        out[i] = {names[t]: r for t, r in tracker.step_all(images["ego"], images["exo"]).items()}
    return out


def assert_same(msg: Correspondence, alone) -> None:
    """A result received over DDS equals the in-process result of the target followed alone."""
    assert (msg.source_view, msg.target_view) == (alone.source_view, alone.target_view)
    assert abs(msg.score - alone.score) <= SCORE_TOLERANCE, (msg.score, alone.score)
    assert np.array_equal(decode_mono(msg.mask) == 255, alone.mask)


def test_two_targets_are_followed_independently_and_removing_one_leaves_the_others_unchanged(session):
    s = session
    b = s.set_target("ego", BOX_B)
    c = s.set_target("exo", BOX_C)
    assert b.success and c.success, (b.message, c.message)
    s.ids.update(B=b.target_id, C=c.target_id)
    assert s.ids["A"] < s.ids["B"] < s.ids["C"]
    a_id, b_id, c_id = s.ids["A"], s.ids["B"], s.ids["C"]

    received = {i: s.step((a_id, b_id, c_id)) for i in range(1, 5)}
    removed = s.client.remove_target(b_id)
    assert removed.success and list(removed.target_ids) == [a_id, c_id], removed.message
    received.update({i: s.step((a_id, c_id)) for i in range(5, 9)})
    time.sleep(1.0)   # anything late would have arrived
    assert not [m for m in s.correspondence.messages if m.target_id == b_id and stamp_of(m) >= s.stamp(5)]

    alone = {name: reference({name: prompt}) for name, prompt in
             (("A", ("ego", BOX_A)), ("B", ("ego", BOX_B)), ("C", ("exo", BOX_C)))}
    for i, results in received.items():
        assert_same(results[a_id], alone["A"][i]["A"])
        assert_same(results[c_id], alone["C"][i]["C"])
        if i < 5:
            assert_same(results[b_id], alone["B"][i]["B"])


def test_label_masks_hold_each_targets_id_and_the_higher_score_wins_overlaps(session):
    s = session
    a_id, c_id = s.ids["A"], s.ids["C"]
    b = s.set_target("ego", BOX_B)   # back to three targets: two of them (A, B) reported in exo
    assert b.success, b.message
    b_id = s.ids["B"] = b.target_id
    results = s.step((a_id, b_id, c_id))
    header_of = {view: results[a_id].header if view == "exo" else results[c_id].header for view in ("ego", "exo")}
    masks = {view: s.mask.wait_for(lambda m, h=header_of[view]: m.header == h) for view in ("ego", "exo")}
    sources = {view: s.source_mask.wait_for(lambda m, v=view: m.header.frame_id == f"{v}_cam"
                                            and stamp_of(m) == s.stamp(s.pair)) for view in ("ego", "exo")}
    for view, size in (("ego", EGO_SIZE), ("exo", EXO_SIZE)):
        assert (masks[view].width, masks[view].height, masks[view].encoding) == (*size, "mono8")

    def expected(view, field):
        """Each pixel's winner among the targets covering it: highest score, then lowest id."""
        labels = np.zeros((masks[view].height, masks[view].width), np.uint16)
        covering = [r for r in results.values() if getattr(r, field) == view]
        for r in sorted(covering, key=lambda r: (-r.score, r.target_id)):
            labels[(labels == 0) & (decode_mono(r.mask) == 255)] = r.target_id
        return labels

    exo = decode_mono(masks["exo"])
    assert set(np.unique(exo)) <= {0, a_id, b_id}
    assert np.array_equal(exo, expected("exo", "target_view"))
    assert np.array_equal(decode_mono(masks["ego"]), expected("ego", "target_view"))
    assert set(np.unique(decode_mono(masks["ego"]))) <= {0, c_id}
    # Source masks: A and B in ego, C in exo.
    assert set(np.unique(decode_mono(sources["ego"]))) <= {0, a_id, b_id}
    assert set(np.unique(decode_mono(sources["exo"]))) <= {0, c_id}


def test_per_target_visibility_and_bank_sizes_are_in_diagnostics(session):
    s = session
    ids = sorted(s.ids.values())
    results = s.step(ids)   # the last pair processed: diagnostics report it
    s.diagnostics.clear()
    values = diagnostic_values(s.diagnostics.wait_for(
        lambda m: diagnostic_values(m).get("targets") == ",".join(map(str, ids)), 15))
    for target_id in ids:
        assert values[f"target_{target_id}_visible"] == str(results[target_id].visible).lower()
        assert abs(float(values[f"target_{target_id}_score"]) - results[target_id].score) < 1e-3
        assert int(values[f"target_{target_id}_source_bank"]) >= 1 and int(values[f"target_{target_id}_bytes"]) > 0
    assert values[f"target_{s.ids['C']}_source_view"] == "exo"


def test_ids_stay_stable_across_re_targeting_and_are_never_reused(session):
    s = session
    a_id, c_id = s.ids["A"], s.ids["C"]
    before = sorted(s.ids.values())
    moved = s.set_target("ego", BOX_A2, target_id=a_id)
    assert moved.success and moved.target_id == a_id and "re-targeted" in moved.message, moved.message
    switched = s.set_target("ego", BOX_C_EGO, target_id=c_id)   # now marked in ego: reported in exo
    assert switched.success and switched.target_id == c_id, switched.message
    results = s.step(before)
    assert (results[c_id].source_view, results[c_id].target_view) == ("ego", "exo")
    assert results[a_id].source_view == "ego"

    removed = s.client.remove_target(s.ids["B"])
    assert removed.success
    new = s.set_target("exo", BOX_C)
    assert new.success and new.target_id == max(before) + 1, new.message   # B's id is not given again
    s.ids = {"A": a_id, "C": c_id, "D": new.target_id}


@pytest.mark.parametrize("request_fields, reason", [
    (dict(view="ego", box=(100, 5, 150, 50)), "the maximum (max_targets)"),
    (dict(view="ego", box=(100, 5, 150, 50), target_id=999), "target 999 is unknown"),
])
def test_a_fourth_target_and_an_unknown_id_are_refused_and_change_nothing(session, request_fields, reason):
    s = session
    answer = s.set_target(**request_fields)
    assert not answer.success and answer.target_id == 0
    assert answer.message.startswith("set_target refused: ") and reason in answer.message, answer.message
    results = s.step(sorted(s.ids.values()))   # every target still followed, with its prompt view
    assert {t: (r.source_view, r.target_view) for t, r in results.items()} == {
        s.ids["A"]: ("ego", "exo"), s.ids["C"]: ("ego", "exo"), s.ids["D"]: ("exo", "ego")}


def test_a_prompt_over_another_targets_mask_and_removing_an_unknown_id_are_refused(session):
    s = session
    d_id = s.ids["D"]
    assert s.client.remove_target(s.ids["A"]).success
    assert s.set_target("exo", BOX_C, target_id=d_id).success   # D's current exo mask: this prompt
    overlapping = s.set_target("exo", BOX_C)
    assert not overlapping.success and f"overlaps target {d_id}'s current exo mask" in overlapping.message, \
        overlapping.message
    unknown = s.client.remove_target(999)
    assert not unknown.success and "target 999 is unknown" in unknown.message
    assert sorted(unknown.target_ids) == sorted([s.ids["C"], d_id])


def test_the_trigger_clear_target_still_clears_every_target(session):
    s = session
    cleared = s.client.clear_target()
    assert cleared.success and cleared.message.startswith("targets ") and cleared.message.endswith(" cleared")
    time.sleep(1.0)
    s.correspondence.clear()
    s.publish(s.pair + 1)
    time.sleep(2.0)
    assert s.correspondence.messages == []
    s.diagnostics.clear()
    assert diagnostic_values(s.diagnostics.wait_for(lambda m: True, 15))["targets"] == ""


def test_the_label_image_rule_higher_score_wins_then_lower_id_and_large_ids_take_mono16():
    from std_msgs.msg import Header

    from lmeec_core.tracker import Correspondence as Result
    from lmeec_ros.image_codec import labels_to_image
    from lmeec_ros.outputs import label_mask

    def result(target_id, score, cols):
        mask = np.zeros((2, 6), bool)
        mask[:, cols] = True
        return Result(1, "ego", "exo", mask, None, score, True, mask, target_id=target_id), mask

    masks = [result(3, 0.9, slice(0, 3)), result(1, 0.5, slice(2, 5)), result(7, 0.5, slice(4, 6))]
    labels = label_mask(masks, (2, 6))
    assert labels.tolist() == [[3, 3, 3, 1, 1, 7]] * 2   # 3 beats 1 (score); 1 beats 7 (same score, lower id)
    assert labels_to_image(labels, Header()).encoding == "mono8"
    wide = labels_to_image(np.array([[0, 300]], np.uint16), Header())
    assert (wide.encoding, wide.step, wide.is_bigendian) == ("mono16", 4, 0)
    assert decode_mono(wide).tolist() == [[0, 300]]


def test_the_memory_parameters_reach_the_tracker():
    """capacity, compression, bank_policy and source_lost are the node's parameters, not the tracker's
    defaults (`bank_policy: official`, `compression: drop` and `source_lost: skip` are how the node
    reproduces official numbers)."""
    tracker = load_tracker(params.Settings(device="cpu", capacity=4, compression="drop", bank_policy="official",
                                           source_lost="skip"))
    config = tracker.config
    assert (config.capacity, config.compression, config.bank_policy, config.source_lost) == (4, "drop", "official",
                                                                                             "skip")
