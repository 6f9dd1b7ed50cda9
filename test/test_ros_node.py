"""The lmeec node, as a real process, driven from this process with real rclpy.

One node process serves the whole module (started from the `lmeec_node` console script with the
package's config plus a test parameter file), so the tests run in file order and each leaves a
stream-free, target-free node behind. The model is the random-weight nano preset: its masks are
meaningless, which is fine for checking what the node publishes, where and when.
"""
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from ros_helpers import (NodeProcess, diagnostic_values, fastdds_shm_files, mask_image,
                         require_ros, rgb_image, ros_time, stamp_of)

require_ros()

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import Point  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from lmeec_ros.msg import Correspondence  # noqa: E402

EGO_SIZE, EXO_SIZE = (160, 120), (200, 150)
RATE_HZ = 5.0
TEST_PARAMETERS = """\
/**:
  ros__parameters:
    capacity: 3
    input_timeout: 1
    diagnostics_period: 0.5
    history_size: 20
    max_image_pixels: 50000
    ego_frame_id: ""
"""


@pytest.fixture(scope="module")
def node(ros):
    overrides = ros.tmp / "test_parameters.yaml"
    overrides.write_text(TEST_PARAMETERS)
    proc = NodeProcess(ros, "--params-file", "config/lmeec.yaml", "--params-file", str(overrides),
                       console_script=True)
    yield proc
    if proc.alive():
        proc.stop(signal.SIGINT)


@pytest.fixture(scope="module")
def topics(client):
    return {
        "correspondence": client.subscribe("/lmeec/correspondence", Correspondence),
        "mask": client.subscribe("/lmeec/mask", Image),
        "source_mask": client.subscribe("/lmeec/source_mask", Image),
        "diagnostics": client.diagnostics(),
    }


@pytest.fixture
def stream(client, topics):
    """Start a 5 Hz camera stream with stamps = now; yields the stamps published, by view."""
    published = {"ego": [], "exo": []}

    def make_pair(i, ego_size=EGO_SIZE, ego_encoding="rgb8"):
        now = client.now_ns()
        published["ego"].append(now)
        published["exo"].append(now + 2_000_000)   # 2 ms apart: well within slop
        return (rgb_image(*ego_size, now, "ego_cam", seed=i, encoding=ego_encoding),
                rgb_image(*EXO_SIZE, now + 2_000_000, "exo_cam", seed=i, encoding="bgr8", row_padding=8))

    client.wait_for_subscribers("/ego/image_raw")
    client.wait_for_subscribers("/exo/image_raw")
    client.stream(make_pair, RATE_HZ)
    yield published
    client.stop_stream()
    client.clear_target()
    for collector in topics.values():
        collector.clear()


def mask_values(msg: Image) -> set:
    return set(np.unique(np.frombuffer(msg.data, np.uint8)).tolist())


def latest_diagnostics(topics, predicate=lambda status, values: True, timeout_s=15.0):
    """The first diagnostics published from now on whose status satisfies `predicate`."""
    topics["diagnostics"].clear()
    msg = topics["diagnostics"].wait_for(lambda m: predicate(m.status[0], diagnostic_values(m)), timeout_s)
    return msg.status[0], diagnostic_values(msg)


def test_set_target_before_any_image_is_refused_with_the_reason(client):
    answer = client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60)))
    assert not answer.success and answer.target_id == 0
    assert "no synchronised ego/exo pair received yet" in answer.message


def test_parameters_come_from_the_parameter_files(client):
    values = client.get_parameters("capacity", "input_timeout", "reliability", "slop", "checkpoint")
    assert values == {"capacity": 3, "input_timeout": 1.0, "reliability": "best_effort", "slop": 0.05,
                      "checkpoint": ""}
    assert type(values["input_timeout"]) is float, "`input_timeout: 1` in the file is a double parameter"


def test_an_integer_set_for_a_double_parameter_is_stored_as_a_double(client):
    assert client.set_parameter("max_rate_hz", 0).successful
    value = client.get_parameters("max_rate_hz")["max_rate_hz"]
    assert value == 0.0 and type(value) is float
    refused = client.set_parameter("max_rate_hz", "fast")
    assert not refused.successful and refused.reason == "max_rate_hz must be of type double, got 'fast' (string)"


def test_a_target_marked_in_ego_is_reported_in_exo_with_the_exo_header(client, topics, stream):
    time.sleep(1.0)
    answer = client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60)))
    assert answer.success, answer.message
    assert answer.target_id >= 1 and "following it in exo" in answer.message

    corr = topics["correspondence"].wait_for(lambda m: m.header.stamp.sec > 0)
    first_stamp = stamp_of(corr)
    assert first_stamp in stream["exo"]
    assert (corr.source_view, corr.target_view, corr.target_id) == ("ego", "exo", answer.target_id)
    assert corr.header.frame_id == "exo_cam"
    assert (corr.mask.width, corr.mask.height, corr.mask.encoding) == (*EXO_SIZE, "mono8")
    assert corr.mask.header == corr.header and mask_values(corr.mask) <= {0, 255}
    assert 0.0 <= corr.score <= 1.0
    assert (corr.bbox.width > 0) == (255 in mask_values(corr.mask))

    mask = topics["mask"].wait_for(lambda m: m.header == corr.header)
    assert (mask.width, mask.height, mask.encoding) == (*EXO_SIZE, "mono8")
    assert bytes(mask.data) == bytes(corr.mask.data)
    source = topics["source_mask"].wait_for(lambda m: m.header.frame_id == "ego_cam")
    assert (source.width, source.height, source.encoding) == (*EGO_SIZE, "mono8")

    topics["correspondence"].wait_for(lambda m: m.header.stamp != corr.header.stamp)   # keeps following
    status, values = latest_diagnostics(topics, lambda s, v: v["results_per_s"] != "0.00")
    assert status.level == DiagnosticStatus.OK and "following target" in status.message
    assert values["latency_ms_median"] and float(values["latency_ms_median"]) > 0
    assert {"source_bank", "target_bank", "dropped_pairs", "process_rss_mb"} <= values.keys()


def test_clearing_stops_the_output_and_a_target_in_exo_is_reported_in_ego(client, topics, stream):
    time.sleep(1.0)
    first = client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60)))
    assert first.success, first.message
    cleared = client.clear_target()
    assert cleared.success and cleared.message == f"target {first.target_id} cleared"
    time.sleep(1.0)   # results already in flight arrive
    topics["correspondence"].clear()
    time.sleep(1.5)
    assert topics["correspondence"].messages == []

    ego_stamp, exo_stamp = stream["ego"][-3], stream["exo"][-3]   # a pair the node holds
    answer = client.set_target(view="exo", mask=mask_image(*EXO_SIZE, (50, 40, 120, 100)), stamp=ros_time(exo_stamp))
    assert answer.success, answer.message
    assert answer.target_id == first.target_id + 1
    corr = topics["correspondence"].wait_for()
    assert (corr.source_view, corr.target_view, corr.header.frame_id) == ("exo", "ego", "ego_cam")
    assert stamp_of(corr) == ego_stamp   # the pair named
    assert (corr.mask.width, corr.mask.height) == EGO_SIZE


@pytest.mark.parametrize("fields, reason", [
    (dict(view="top"), "view 'top' is unknown"),
    (dict(view="ego"), "no prompt"),
    (dict(view="ego", mask=mask_image(*EGO_SIZE, (0, 0, 0, 0))), "is empty"),
    (dict(view="ego", mask=mask_image(100, 70, (10, 10, 50, 50))), "expected the size of its image"),
    (dict(view="ego", mask=rgb_image(*EGO_SIZE, 0, "")), "mask encoding 'rgb8'"),
    (dict(view="ego", box=[500.0, 400.0, 600.0, 450.0]), "lies outside"),
    (dict(view="exo", points=[Point(x=10.0, y=10.0)], labels=[1, 0]), "do not match"),
    (dict(view="ego", box=[10.0, 10.0, 50.0, 50.0], mask=mask_image(*EGO_SIZE, (40, 30, 80, 60))), "exactly one"),
    (dict(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60)), stamp=ros_time(12 * 10**9)),
     "no recent pair has an ego image stamped 12.000 s"),
    (dict(view="ego", points=[Point(x=5.0, y=5.0)] * 10_000),
     "10000 points and 0 labels given; expected at most 64 of each"),
    (dict(view="ego", mask=mask_image(300, 200, (10, 10, 50, 50))),
     "mask of 300x200 (60000 px) exceeds max_image_pixels=50000"),
])
def test_bad_set_target_requests_are_refused_with_the_reason(client, stream, fields, reason):
    time.sleep(0.5)
    answer = client.set_target(**fields)
    assert not answer.success and answer.target_id == 0
    assert answer.message.startswith("set_target refused: ") and reason in answer.message, answer.message


def test_a_refused_request_keeps_the_current_target_followed(client, topics, stream):
    time.sleep(1.0)
    first = client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60)))
    assert first.success, first.message
    assert not client.set_target(view="ego", box=[500.0, 400.0, 600.0, 450.0]).success
    topics["correspondence"].clear()
    assert topics["correspondence"].wait_for().target_id == first.target_id


def test_images_of_a_wrong_encoding_are_counted_and_the_node_carries_on(client, topics, stream):
    time.sleep(1.0)
    assert client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60))).success
    topics["correspondence"].wait_for()

    def bad_ego(i):
        ego, exo = rgb_image(*EGO_SIZE, client.now_ns(), "ego_cam", i), rgb_image(*EXO_SIZE, client.now_ns(), "exo_cam", i)
        ego.encoding = "32FC1"
        return ego, exo

    client.stream(bad_ego, RATE_HZ)
    status, values = latest_diagnostics(topics, lambda s, v: int(v.get("bad_images", 0)) > 0)
    assert status.level == DiagnosticStatus.WARN and "unsupported image encoding '32FC1'" in status.message
    client.stop_stream()
    topics["correspondence"].clear()
    client.stream(lambda i: (rgb_image(*EGO_SIZE, client.now_ns(), "ego_cam", i),
                             rgb_image(*EXO_SIZE, client.now_ns(), "exo_cam", i)), RATE_HZ)
    topics["correspondence"].wait_for()


def test_an_image_too_small_for_the_model_is_refused_before_it_changes_anything(client, topics, stream):
    """A 1x1 frame once reset the memory twice: as a resolution change, then back on the next frame."""
    time.sleep(1.0)
    assert client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60))).success
    topics["correspondence"].wait_for()
    client.stop_stream()
    _, before = latest_diagnostics(topics)
    now = client.now_ns()
    client.publisher("/ego/image_raw").publish(rgb_image(1, 1, now, "ego_cam"))
    client.publisher("/exo/image_raw").publish(rgb_image(*EXO_SIZE, now, "exo_cam"))   # the newest pair
    _, values = latest_diagnostics(topics, lambda s, v: int(v.get("bad_images", 0)) > int(before.get("bad_images", 0)))
    assert "ego image is 1x1 pixels; expected at least 8x8" in values["last_problem"]
    topics["correspondence"].clear()
    client.stream(lambda i: (rgb_image(*EGO_SIZE, client.now_ns(), "ego_cam", i),
                             rgb_image(*EXO_SIZE, client.now_ns(), "exo_cam", i)), RATE_HZ)
    topics["correspondence"].wait_for()
    _, after = latest_diagnostics(topics)
    assert after.get("resolution_changes") == before.get("resolution_changes")
    assert after.get("memory_resets") == before.get("memory_resets")


def test_an_image_above_max_image_pixels_is_refused_before_pairing(client, topics, stream):
    time.sleep(1.0)
    assert client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60))).success
    topics["correspondence"].wait_for()
    _, before = latest_diagnostics(topics)
    big_stamps = []

    def big_ego(i):
        now = client.now_ns()
        big_stamps.append(now)
        return rgb_image(320, 240, now, "ego_cam", i), rgb_image(*EXO_SIZE, now, "exo_cam", i)

    client.stream(big_ego, RATE_HZ)
    _, values = latest_diagnostics(topics, lambda s, v: int(v.get("oversized_images", 0)) > 0)
    assert "ego image of 320x240 (76800 px) refused: more than max_image_pixels=50000" in values["last_problem"]
    time.sleep(1.0)
    assert not [m for m in topics["correspondence"].messages if stamp_of(m) in big_stamps]
    assert values.get("resolution_changes") == before.get("resolution_changes")


def test_a_refused_image_leaves_its_camera_timeline_alone(client, topics, stream):
    """An oversized frame stamped ahead of the stream is refused before its stamp is taken as the
    camera's newest: the next good frame must not read as stamps going back (a memory reset)."""
    time.sleep(1.0)
    assert client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60))).success
    topics["correspondence"].wait_for()
    _, before = latest_diagnostics(topics)
    ahead_ns = client.now_ns() + 10**9
    client.publisher("/ego/image_raw").publish(rgb_image(320, 240, ahead_ns, "ego_cam"))
    latest_diagnostics(topics, lambda s, v: int(v.get("oversized_images", 0)) > int(before.get("oversized_images", 0)))
    topics["correspondence"].clear()
    topics["correspondence"].wait_for(lambda m: stamp_of(m) > ahead_ns)   # the stream went past it
    _, after = latest_diagnostics(topics)
    assert after.get("time_jumps") == before.get("time_jumps"), after.get("last_problem")
    assert after.get("memory_resets") == before.get("memory_resets"), after.get("last_problem")


def test_a_camera_changing_resolution_resets_memory_and_keeps_the_target(client, topics, stream):
    time.sleep(1.0)
    assert client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60))).success
    topics["correspondence"].wait_for()
    client.stream(lambda i: (rgb_image(240, 180, client.now_ns(), "ego_cam", i),
                             rgb_image(*EXO_SIZE, client.now_ns(), "exo_cam", i)), RATE_HZ)
    topics["source_mask"].wait_for(lambda m: (m.width, m.height) == (240, 180))
    status, values = latest_diagnostics(topics, lambda s, v: int(v.get("resolution_changes", 0)) > 0)
    assert "ego resolution changed from 160x120 to 240x180" in values["last_problem"]


def test_stamps_going_back_reset_memory_and_pairing_goes_on(client, topics, stream):
    time.sleep(1.0)
    assert client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60))).success
    topics["correspondence"].wait_for()
    start = client.now_ns() - 100 * 10**9   # a bag starting over, 100 s earlier
    loop_stamps = []

    def looped(i):
        stamp = start + i * 200_000_000
        loop_stamps.append(stamp)
        return rgb_image(*EGO_SIZE, stamp, "ego_cam", i), rgb_image(*EXO_SIZE, stamp, "exo_cam", i)

    client.stream(looped, RATE_HZ)
    corr = topics["correspondence"].wait_for(
        lambda m: stamp_of(m) in loop_stamps)
    assert corr.target_view == "exo"
    status, values = latest_diagnostics(topics, lambda s, v: int(v.get("time_jumps", 0)) > 0)
    assert "stamps went back" in values["last_problem"] and "target kept" in values["last_problem"]


def test_a_pair_older_than_one_already_processed_is_skipped_as_late(client, topics, stream):
    """ego 0.00, ego 0.04, exo 0.03 -> pair (0.04, 0.03); then exo 0.035 pairs with ego 0.00: late."""
    time.sleep(1.0)
    assert client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60))).success
    client.stop_stream()
    time.sleep(1.0)
    ego_pub, exo_pub = client.publisher("/ego/image_raw"), client.publisher("/exo/image_raw")
    base = client.now_ns() + 10**9
    ms = 1_000_000
    before = int(latest_diagnostics(topics)[1].get("late_pairs", 0))
    for pub, msg in ((ego_pub, rgb_image(*EGO_SIZE, base, "ego_cam")),
                     (ego_pub, rgb_image(*EGO_SIZE, base + 40 * ms, "ego_cam")),
                     (exo_pub, rgb_image(*EXO_SIZE, base + 30 * ms, "exo_cam"))):
        pub.publish(msg)
        time.sleep(0.3)   # topics are not ordered with each other: let each image arrive first
    topics["correspondence"].wait_for(lambda m: m.header.stamp.nanosec == (base + 30 * ms) % 10**9)
    exo_pub.publish(rgb_image(*EXO_SIZE, base + 35 * ms, "exo_cam"))
    status, values = latest_diagnostics(topics, lambda s, v: int(v.get("late_pairs", 0)) > before)
    assert int(values["late_pairs"]) == before + 1


def test_a_silent_camera_warns_in_diagnostics_and_nothing_is_published(client, topics, stream):
    time.sleep(1.0)
    assert client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60))).success
    client.stream(lambda i: (rgb_image(*EGO_SIZE, client.now_ns(), "ego_cam", i), None), RATE_HZ)
    time.sleep(1.0)   # results of earlier pairs drain
    topics["correspondence"].clear()
    status, values = latest_diagnostics(topics, lambda s, v: s.level == DiagnosticStatus.WARN)
    assert "no exo images on /exo/image_raw" in status.message
    assert float(values["ego_images_per_s"]) > 0
    assert topics["correspondence"].messages == []


def test_sigint_stops_the_node_cleanly_and_frees_its_shared_memory(node, client):
    own = fastdds_shm_files(node.pid) - fastdds_shm_files()
    assert own, "the node should map Fast DDS shared-memory segments (SHM transport)"
    assert node.stop(signal.SIGINT) == 0, node.output()
    assert not [p for p in own if Path(p).exists()]
    log = node.output()
    assert "Traceback" not in log, log
