"""Bag tools: a synthetic bag replayed into the real lmeec node process, its results recorded and scored,
and the offline path (no ROS) scoring the same bag the same way.

One node process serves the module, with `use_sim_time` and a random-weight nano checkpoint whose seed
gives non-empty masks on this scene (seed 0's are all empty), so that comparing the node with the
offline path means something; each test leaves it without a target.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from lmeec_core.bag_eval import BagScore, StampWindow, bag_pairs, evaluate_bag, ground_truth
from lmeec_core.data.bags import read_bag_images, write_scene_bag
from lmeec_core.data.synthetic import SceneConfig, render_scene
from lmeec_core.metrics import iou
from lmeec_core.model import build_preset, preset_config, save_checkpoint
from lmeec_core.preprocess import bbox_of
from lmeec_core.target_schedule import TargetChange
from lmeec_core.tracker import CorrespondenceTracker, TrackerConfig
from ros_helpers import REPO, ROS_MISSING, NodeProcess

if not ROS_MISSING:
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image
    from std_srvs.srv import Trigger

    from lmeec_ros.bag_record import RECORD_QOS, OutputRecorder
    from lmeec_ros.bag_replay import ReplayOptions, call_service, read_raw_images, set_target_request
    from lmeec_ros.image_codec import image_to_mask
    from lmeec_ros.bag_score import read_results, score_results
    from lmeec_ros.bag_tools import RosSession, replay

SCENE = SceneConfig(seed=500_000, num_frames=8, ego_size=(128, 128), exo_size=(120, 160))
MODEL_SEED = 4
OFFLINE = TrackerConfig(visibility_threshold=0.0)  # the node's parameters below
OTHER, RETARGET_PAIR = 4, 4  # a table object that is not the target, in ego on every pair; re-targeted here
METRICS = ("iou", "ca", "le", "ba", "n_frames", "n_frames_with_gt", "results_without_gt")


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    return write_scene_bag(tmp_path_factory.mktemp("bags") / "scene", render_scene(SCENE))


@pytest.fixture
def one_thread():
    """In-process tracking with one torch thread: on a busy 2-core machine two threads wait on each
    other and a step takes several times longer (measured 0.1 s against 0.3-3 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "nano_random.pt"
    return save_checkpoint(build_preset("nano", seed=MODEL_SEED), path, preset_config("nano"), meta={"preset": "nano"})


@pytest.fixture(scope="module")
def node(ros, checkpoint):
    proc = NodeProcess(ros, "-p", "use_sim_time:=true", "-p", "visibility_threshold:=0.0",
                       "-p", f"checkpoint:={checkpoint}")
    yield proc
    assert proc.stop(signal.SIGINT) == 0, proc.output()


@pytest.fixture(scope="module")
def session(ros, node):
    with RosSession("test_bag_tools", ros.domain_id) as s:
        yield s


def _clear_target(session) -> None:
    client = session.node.create_client(Trigger, "/lmeec/clear_target")
    assert client.wait_for_service(timeout_sec=30)
    assert call_service(client, Trigger.Request(), 30).success
    session.node.destroy_client(client)


@pytest.fixture
def no_target_after(session):
    """Leave the node without a target, so the next test starts from a clean state."""
    yield
    _clear_target(session)


@pytest.fixture(scope="module")
def lockstep_run(bag, session, tmp_path_factory):
    """One lockstep replay with the target marked from the ego GT, recorded."""
    results = tmp_path_factory.mktemp("results") / "results"
    stats = replay(session, bag, ReplayOptions(lockstep=True), "ego", record=results, wait_s=120)
    yield stats, results
    _clear_target(session)


def test_lockstep_replay_processes_every_pair_and_records_each_result(lockstep_run):
    stats, results = lockstep_run
    assert stats["target"]["answer"].startswith("target 1 set in ego"), stats
    assert stats["pairs"] == SCENE.num_frames and stats["pairs_before_first_result"] == 0
    assert (stats["results"], stats["dropped"]) == (SCENE.num_frames, 0)
    assert stats["recorded"]["messages"] == {f"/lmeec/{t}": SCENE.num_frames
                                             for t in ("correspondence", "mask", "source_mask")}
    assert stats["latency_ms_median"] > 0


def test_recorded_results_score_against_the_gt_topics(lockstep_run, bag):
    _, results = lockstep_run
    figures = score_results(results, bag)
    assert figures["directions"] == ["ego->exo"]
    metrics = figures["metrics"]
    assert tuple(metrics) == METRICS
    assert metrics["n_frames"] == SCENE.num_frames and metrics["results_without_gt"] == 0
    assert 0 <= metrics["iou"] <= 1 and 0 <= metrics["le"] <= 1

    cli = subprocess.run([sys.executable, "-m", "lmeec_ros.bag_tools", "score", str(results), "--gt", str(bag)],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["metrics"] == pytest.approx(metrics, nan_ok=True)


def test_the_offline_path_scores_the_bag_like_the_replay_through_the_node(lockstep_run, bag, checkpoint, one_thread):
    offline = evaluate_bag(bag, CorrespondenceTracker.from_checkpoint(str(checkpoint), config=OFFLINE),
                           progress=False)
    replayed = score_results(lockstep_run[1], bag)["metrics"]
    assert replayed["iou"] > 0 and replayed["ca"] > 0  # masks were found, so agreeing is not trivial
    assert tuple(offline["metrics"]) == METRICS
    assert offline["pairs"] == SCENE.num_frames and offline["target_view"] == "exo"
    assert offline["metrics"]["n_frames"] == replayed["n_frames"]
    # Same pairs, prompt, weights and tracker parameters: the same masks up to float noise.
    for key in ("iou", "ca", "le", "ba"):
        assert offline["metrics"][key] == pytest.approx(replayed[key], abs=0.01), key


def test_a_retarget_reaches_the_node_and_the_results_follow_the_new_object_from_that_pair(bag, session, tmp_path,
                                                                                       no_target_after):
    _clear_target(session)  # the module's lockstep run leaves its target set until the module ends
    results = tmp_path / "results"
    retarget = TargetChange("ego", "box", OTHER, from_pair=RETARGET_PAIR)
    stats = replay(session, bag, ReplayOptions(lockstep=True), "ego", record=results, wait_s=120,
                   retargets=[retarget])
    first, (second,) = stats["target"], stats["retargets"]
    frames = list(render_scene(SCENE))
    assert (first["pair"], first["prompt"], first["object"]) == (0, "mask", "target")
    assert (second["pair"], second["prompt"], second["object"]) == (RETARGET_PAIR, "box", str(OTHER))
    assert second["box"] == list(bbox_of(frames[RETARGET_PAIR].ego_instances == OTHER))
    old, new = first["target_id"], second["target_id"]
    assert new != old and second["answer"].startswith(f"target {new} set in ego (box ["), second
    assert (stats["results"], stats["dropped"]) == (SCENE.num_frames, 0)

    # In lockstep the node answers the re-target pair under the old target, then under the new one.
    recorded = list(read_results(results))
    exo_stamps = [pair.exo_stamp_ns for pair in bag_pairs(bag)]
    assert [(r.target_id, exo_stamps.index(r.stamp_ns)) for r in recorded] == (
        [(old, i) for i in range(RETARGET_PAIR + 1)] + [(new, i) for i in range(RETARGET_PAIR, SCENE.num_frames)])

    figures = score_results(results, bag, targets={old: TargetChange("ego"), new: retarget})
    scored = {t["target_id"]: t["metrics"] for t in figures["targets"]}
    for target_id, instance in ((old, 1), (new, OTHER)):  # by hand: each against its own object's exo GT
        mine = [(frames[exo_stamps.index(r.stamp_ns)].exo_instances == instance, r.mask)
                for r in recorded if r.target_id == target_id]
        assert scored[target_id]["n_frames"] == len(mine)
        assert scored[target_id]["iou"] == pytest.approx(np.mean([iou(gt, mask) for gt, mask in mine]))
    assert figures["metrics"]["n_frames"] == SCENE.num_frames + 1

    # `lmeec_bag score` with the replay's options: the same figures, without the answers' target ids.
    cli = subprocess.run([sys.executable, "-m", "lmeec_ros.bag_tools", "score", str(results), "--gt", str(bag),
                          "--set-target", "ego", "--retarget", str(retarget)],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert cli.returncode == 0, cli.stderr
    by_cli = json.loads(cli.stdout)["targets"]
    assert [t["target_id"] for t in by_cli] == [old, new]
    for mine, theirs in zip(by_cli, figures["targets"], strict=True):
        assert mine["metrics"] == pytest.approx(theirs["metrics"], nan_ok=True)


def test_set_target_requests_carry_the_prompt_schedules_give():
    mask = np.zeros((6, 8), bool)
    mask[2:4, 3:7] = True
    stamp_ns = 1_700_000_000_123_456_789
    request = set_target_request("exo", stamp_ns, {"mask": mask})
    assert (request.view, request.stamp.sec, request.stamp.nanosec) == ("exo", 1_700_000_000, 123_456_789)
    np.testing.assert_array_equal(image_to_mask(request.mask), mask)
    assert not len(request.box) and not request.points
    box = set_target_request("ego", stamp_ns, {"box": (3, 2, 6, 3)})
    assert list(box.box) == [3.0, 2.0, 6.0, 3.0] and box.mask.width == 0
    click = set_target_request("ego", stamp_ns, {"points": [[5, 3]], "labels": [1]})
    assert [(p.x, p.y) for p in click.points] == [(5.0, 3.0)] and list(click.labels) == [1]


def test_paced_replay_drops_pairs_the_node_has_no_time_for_and_lockstep_none(bag, session, no_target_after):
    fast = 100.0  # a pair every millisecond: far faster than any step of the model
    stats = replay(session, bag, ReplayOptions(rate=fast), "ego", wait_s=60)
    assert stats["mode"] == "paced x100"
    assert stats["results"] >= 2 and stats["dropped"] >= 1, stats
    assert stats["results"] + stats["dropped"] == SCENE.num_frames - stats["pairs_before_first_result"]


def test_clock_carries_the_bag_record_times_at_the_requested_pace(tmp_path, session):
    bag = write_scene_bag(tmp_path / "scene_db3", render_scene(SCENE), storage="sqlite3")
    clocks: list[tuple[float, int]] = []
    session.node.create_subscription(
        Clock, "/clock", lambda m: clocks.append((time.monotonic(), m.clock.sec * 10**9 + m.clock.nanosec)), 100)
    rate = 2.0
    stats = replay(session, bag, ReplayOptions(rate=rate), wait_s=60)  # the node has no target: no results

    record_ns = [image.record_ns for image in read_raw_images(bag, ReplayOptions().topics.images())]
    deadline = time.monotonic() + 10
    while len(clocks) < len(record_ns) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [ns for _, ns in clocks] == record_ns
    assert stats["images_published"] == len(record_ns) and stats["results"] == 0
    bag_span_s = (record_ns[-1] - record_ns[0]) / 1e9
    wall_span_s = clocks[-1][0] - clocks[0][0]
    assert bag_span_s / rate * 0.95 <= wall_span_s <= bag_span_s / rate + 1.0


def test_record_command_records_the_node_until_sigint(bag, ros, session, tmp_path, no_target_after):
    out = tmp_path / "recorded"
    recorder = subprocess.Popen([sys.executable, "-m", "lmeec_ros.bag_tools", "record", str(out)], env=ros.env,
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(recorder, "lmeec_bag record: recording to")
        time.sleep(0.5)  # the node's publisher matches the recorder about when the recorder matched it
        stats = replay(session, bag, ReplayOptions(lockstep=True), "ego", wait_s=60)
        time.sleep(1.0)  # the recorder receives the last results
    finally:
        recorder.send_signal(signal.SIGINT)
        stdout, stderr = recorder.communicate(timeout=90)  # closing DDS and the bag is slow on a loaded machine
    assert recorder.returncode == 0, stderr
    counts = json.loads(stdout)["messages"]
    assert counts["/lmeec/correspondence"] == stats["results"] == SCENE.num_frames
    assert score_results(out, bag)["metrics"]["n_frames"] == SCENE.num_frames


def test_a_recording_settles_until_the_messages_in_flight_are_written(ros, tmp_path):
    """A replay stops on its last ~/correspondence; that pair's masks are published after it, on
    other topics, so the recorder must wait for them (a loaded machine lost them before)."""
    topic, burst = "/settle_check", 20
    with RosSession("test_settle", ros.domain_id) as session:
        recorder = OutputRecorder(session.node, tmp_path / "recorded", {topic: Image})
        publisher = session.node.create_publisher(Image, topic, RECORD_QOS)
        try:
            assert recorder.wait_for_publishers(30)
            for _ in range(burst):
                publisher.publish(Image(height=1, width=1, encoding="mono8", step=1, data=[0]))
            recorder.settle(quiet_s=1.0)
        finally:
            counts = recorder.close()
    assert counts == {topic: burst}


def _wait_for_line(proc: subprocess.Popen, text: str, timeout_s: float = 60.0) -> None:
    """Read `proc`'s stderr until a line contains `text`."""
    found = threading.Event()

    def scan() -> None:
        for line in proc.stderr:
            if text in line:
                found.set()
                return

    threading.Thread(target=scan, daemon=True).start()
    assert found.wait(timeout_s), f"{proc.args} did not print {text!r} within {timeout_s} s"


# The offline path alone (no ROS needed).

def test_benchmark_protocol_scores_only_pairs_where_the_source_shows_the_target(bag, one_thread):
    tracker = CorrespondenceTracker(build_preset("nano", seed=MODEL_SEED), OFFLINE)
    figures = evaluate_bag(bag, tracker, source_view="exo", protocol="benchmark", max_pairs=4, progress=False)
    assert (figures["source_view"], figures["target_view"], figures["pairs"]) == ("exo", "ego", 4)
    visible = sum(bool(m.any()) for m in (f.exo_mask for f in render_scene(SCENE)))
    assert figures["metrics"]["n_frames"] <= min(4, visible)


def test_ground_truth_is_looked_up_by_exact_stamp_while_holding_a_bounded_window(bag):
    gt = ground_truth(bag)
    frames = list(render_scene(SCENE))
    stamps = [m.stamp_ns for m in read_bag_images(bag, ["/exo/gt_mask"])]
    for frame, stamp in zip(frames, stamps, strict=True):
        np.testing.assert_array_equal(gt.get("exo", stamp), frame.exo_mask)
    assert gt.get("exo", stamps[-1] + 1) is None

    read = []
    items = ((str(i % 2), i * 10**9, read.append(i) or i) for i in range(1000))
    window = StampWindow(items, ahead_s=1.0, behind_s=2.0)
    assert window.get("0", 500 * 10**9) == 500 and len(read) == 503  # to the first item over 1 s ahead
    assert window.get("1", 497 * 10**9) is None  # more than 2 s behind the newest lookup: forgotten
    score = BagScore(StampWindow(iter(())))
    score.add("exo", 1, np.zeros((4, 4), bool))
    assert score.summary()["results_without_gt"] == 1 and score.summary()["n_frames"] == 0


def test_bag_scores_divide_the_location_error_as_lmeec_evaluate_does_at_camera_resolution():
    """sqrt(2) x the long side (the official scorers' square masks), not the 240x320 mask's own diagonal."""
    gt, pred = np.zeros((240, 320), bool), np.zeros((240, 320), bool)
    gt[100:111, 100:111] = True
    pred[100:111, 130:141] = True   # the box centre 30 px to the right
    score = BagScore(StampWindow(iter([("exo", 5, gt)])))
    score.add("exo", 5, pred)
    assert score.summary()["le"] == pytest.approx(30 / (2 ** 0.5 * 320))

