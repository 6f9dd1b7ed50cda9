"""Lifecycle of the lmeec node, driven from another process through lifecycle_msgs services.

One node process without autostart, given a checkpoint that does not exist: configure must fail with
the reason and leave the node alive; a corrupt file too; a good one configures. The tests run in file
order against that process, through deactivation, re-activation, cleanup and a second configuration,
and end with the shutdown transition, which ends the process.
"""
import signal
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from ros_helpers import NodeProcess, diagnostic_values, fastdds_shm_files, mask_image, require_ros

require_ros()

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from lmeec_ros.msg import Correspondence  # noqa: E402

EGO_SIZE, EXO_SIZE = (160, 120), (200, 150)
COMPRESSED_TOPICS = ("/ego/image_raw/compressed", "/exo/image_raw/compressed")


TARGET_IDS: list[int] = []   # answered by set_target, in the order of the tests


@pytest.fixture(scope="module")
def node(ros):
    proc = NodeProcess(ros, "-p", "autostart:=false", "-p", f"checkpoint:={ros.tmp / 'missing.pt'}",
                       "-p", "diagnostics_period:=0.3", "-p", "max_time_gap:=1.0")
    yield proc
    if proc.alive():
        proc.stop(signal.SIGTERM)


def diagnostics_now(client, predicate=lambda status: True, timeout_s=15.0):
    collector = client.diagnostics()
    collector.clear()
    msg = collector.wait_for(lambda m: predicate(m.status[0]), timeout_s)
    return msg.status[0], diagnostic_values(msg)


def png_image(size, stamp_ns, frame_id, seed):
    cv2 = pytest.importorskip("cv2")
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", pixels)
    assert ok
    msg = CompressedImage(format="png")
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    msg.header.frame_id = frame_id
    msg.data = png.tobytes()
    return msg


def png_header(size, stamp_ns, frame_id):
    """A CompressedImage holding only a PNG header that announces `size`: all a node may read of an
    image it is going to refuse for its size."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    msg = CompressedImage(format="png")
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    msg.header.frame_id = frame_id
    msg.data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", *size, 8, 2, 0, 0, 0))
                + chunk(b"IEND", b""))
    return msg


def stream_compressed(client):
    """Both cameras as PNG CompressedImages at 5 Hz, stamped now."""
    for topic in COMPRESSED_TOPICS:
        client.publisher(topic, CompressedImage)
        client.wait_for_subscribers(topic)

    def pair(i):
        now = client.now_ns()
        return png_image(EGO_SIZE, now, "ego_cam", i), png_image(EXO_SIZE, now, "exo_cam", i)

    client.stream(pair, 5.0, topics=COMPRESSED_TOPICS, msg_type=CompressedImage)


def test_without_autostart_the_node_waits_unconfigured(client):
    assert client.state() == "unconfigured"
    status, values = diagnostics_now(client)
    assert values["state"] == "unconfigured" and status.level == DiagnosticStatus.OK
    assert status.hardware_id == values["device"] == "cpu", "the device the `auto` parameter resolves to"


def test_a_missing_checkpoint_fails_configure_with_the_reason_and_the_node_lives(ros, client, node):
    assert client.transition(Transition.TRANSITION_CONFIGURE) is False
    assert node.alive() and client.state() == "unconfigured"
    status, _ = diagnostics_now(client, lambda s: s.level == DiagnosticStatus.ERROR)
    assert "configure failed" in status.message and str(ros.tmp / "missing.pt") in status.message
    assert "does not exist" in status.message


def test_a_corrupt_checkpoint_fails_configure_with_the_reason(ros, client, node):
    corrupt = ros.tmp / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02 this is not a torch checkpoint" * 10)
    assert client.set_parameter("checkpoint", str(corrupt)).successful
    assert client.transition(Transition.TRANSITION_CONFIGURE) is False
    assert node.alive() and client.state() == "unconfigured"
    status, _ = diagnostics_now(client, lambda s: s.level == DiagnosticStatus.ERROR and "corrupt.pt" in s.message)
    assert "not a readable torch checkpoint" in status.message


def test_a_good_checkpoint_configures(ros, client):
    from lmeec_core.model import build_preset
    from lmeec_core.model.checkpoint import save_checkpoint
    from lmeec_core.model.presets import preset_config

    good = save_checkpoint(build_preset("nano", seed=1), ros.tmp / "nano.pt", preset_config("nano"),
                           meta={"preset": "nano"})
    for name, value in (("checkpoint", str(good)), ("preset", "auto"), ("compressed", True), ("publish_overlay", True)):
        assert client.set_parameter(name, value).successful, name
    assert client.transition(Transition.TRANSITION_CONFIGURE) is True
    assert client.state() == "inactive"
    status, values = diagnostics_now(client, lambda s: s.level == DiagnosticStatus.OK)
    assert values["state"] == "inactive" and status.hardware_id == "cpu"


def test_while_inactive_targets_are_refused_and_only_run_time_parameters_change(client):
    answer = client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60)))
    assert not answer.success and "the node is inactive" in answer.message
    refused = client.set_parameter("capacity", 4)
    assert not refused.successful and "read at configure" in refused.reason
    bad = client.set_parameter("max_rate_hz", -1.0)
    assert not bad.successful and ">= 0" in bad.reason
    assert client.set_parameter("max_rate_hz", 4.0).successful
    assert client.get_parameters("capacity", "max_rate_hz") == {"capacity": 6, "max_rate_hz": 4.0}


def test_once_active_compressed_images_are_followed_and_overlaid(client):
    assert client.transition(Transition.TRANSITION_ACTIVATE) is True
    assert client.state() == "active"
    corr = client.subscribe("/lmeec/correspondence", Correspondence)
    overlay = client.subscribe("/lmeec/overlay", Image)
    stream_compressed(client)
    time.sleep(1.0)
    answer = client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60)))
    assert answer.success, answer.message
    TARGET_IDS.append(answer.target_id)
    msg = corr.wait_for(lambda m: m.target_id == answer.target_id)
    assert (msg.mask.width, msg.mask.height, msg.header.frame_id) == (*EXO_SIZE, "exo_cam")
    drawn = overlay.wait_for(lambda m: m.header == msg.header)
    assert (drawn.width, drawn.height, drawn.encoding) == (*EXO_SIZE, "rgb8")


def test_deactivate_stops_the_output(client):
    corr = client.subscribe("/lmeec/correspondence", Correspondence)
    first = corr.wait_for()
    corr.wait_for(lambda m: m.header.stamp != first.header.stamp)   # followed over frames: memory to keep
    assert client.transition(Transition.TRANSITION_DEACTIVATE) is True
    time.sleep(0.5)
    corr.clear()
    time.sleep(1.5)   # longer than max_time_gap: the frames after the pause are 2 s later
    assert corr.messages == [] and client.state() == "inactive"


def test_activating_again_follows_the_kept_target_with_a_fresh_memory_and_no_warning(client, node):
    """The pause is not a time jump nor an input problem: the log and diagnostics say what happens."""
    corr = client.subscribe("/lmeec/correspondence", Correspondence)
    assert client.transition(Transition.TRANSITION_ACTIVATE) is True
    assert corr.wait_for().target_id == TARGET_IDS[-1]
    status, values = diagnostics_now(client)
    assert status.level == DiagnosticStatus.OK, status.message
    assert status.message == f"following target {TARGET_IDS[-1]} from ego in exo"
    assert "memory_resets" not in values and values["memory_resets_at_deactivation"] == "1"
    log = node.output()
    assert f"deactivated: target {TARGET_IDS[-1]} kept, its temporal memory reset" in log
    assert f"following target {TARGET_IDS[-1]} again, from ego in exo; its temporal memory starts afresh" in log
    assert "max_time_gap" not in log, log


def test_cleanup_unloads_the_model(client):
    assert client.transition(Transition.TRANSITION_DEACTIVATE) is True
    assert client.transition(Transition.TRANSITION_CLEANUP) is True
    assert client.state() == "unconfigured"
    client.stop_stream()
    answer = client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60)))
    assert not answer.success and "the node is unconfigured" in answer.message


def test_target_ids_stay_unique_across_cleanup_and_configure(client):
    assert client.set_parameter("preset", "").successful   # an older config's spelling of auto
    assert client.transition(Transition.TRANSITION_CONFIGURE) is True
    assert client.transition(Transition.TRANSITION_ACTIVATE) is True
    stream_compressed(client)
    time.sleep(1.0)
    answer = client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60)))
    assert answer.success, answer.message
    assert answer.target_id > max(TARGET_IDS), (answer.target_id, TARGET_IDS)
    TARGET_IDS.append(answer.target_id)


@pytest.mark.parametrize("size", [(8000, 6000), (20000, 10000)])
def test_a_compressed_image_announcing_too_many_pixels_is_refused_from_its_header(client, node, size):
    """8000x6000 is above max_image_pixels; 20000x10000 is also above what Pillow agrees to open
    (its decompression-bomb guard), which must be a refusal like any other, not an exception."""
    diagnostics = client.diagnostics()
    diagnostics.clear()
    before = int(diagnostic_values(diagnostics.wait_for()).get("oversized_images", 0))
    client.publisher(COMPRESSED_TOPICS[0], CompressedImage).publish(png_header(size, client.now_ns(), "ego_cam"))
    refused = diagnostic_values(
        diagnostics.wait_for(lambda m: int(diagnostic_values(m).get("oversized_images", 0)) > before))
    assert f"ego image of {size[0]}x{size[1]} ({size[0] * size[1]} px) refused" in refused["last_problem"]
    corr = client.subscribe("/lmeec/correspondence", Correspondence)
    corr.clear()
    corr.wait_for(lambda m: m.target_id == TARGET_IDS[-1])   # the stream goes on
    assert node.alive() and "Traceback" not in node.output(), node.output()


def test_shutdown_finalizes_the_node_and_its_process_exits(node, client):
    """Finalized is the end of a lifecycle node: no transition leaves it, so nothing would be served."""
    own = fastdds_shm_files(node.pid) - fastdds_shm_files()
    diagnostics = client.diagnostics()
    diagnostics.clear()
    assert client.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN) is True
    client.stop_stream()
    assert node.proc.wait(30) == 0, node.output()
    last = diagnostics.wait_for(lambda m: m.status[0].message == "finalized", timeout_s=5.0)
    assert diagnostic_values(last)["state"] == "finalized"
    left = [p for p in own - fastdds_shm_files() if Path(p).exists()]
    assert not left, left
    log = node.output()
    assert "finalized: no transition leaves this state, so the process ends" in log and "Traceback" not in log
