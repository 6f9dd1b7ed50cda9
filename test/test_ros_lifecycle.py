"""Lifecycle of the lmeec node, driven from another process through lifecycle_msgs services.

One node process without autostart, given a checkpoint that does not exist: configure must fail with
the reason and leave the node alive; a corrupt file too; a good one configures. The tests run in file
order against that process and end by stopping it with SIGTERM.
"""
import signal
import time
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


@pytest.fixture(scope="module")
def node(ros):
    proc = NodeProcess(ros, "-p", "autostart:=false", "-p", f"checkpoint:={ros.tmp / 'missing.pt'}",
                       "-p", "diagnostics_period:=0.3")
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


def test_without_autostart_the_node_waits_unconfigured(client):
    assert client.state() == "unconfigured"
    status, values = diagnostics_now(client)
    assert values["state"] == "unconfigured" and status.level == DiagnosticStatus.OK


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
    for name, value in (("checkpoint", str(good)), ("preset", ""), ("compressed", True), ("publish_overlay", True)):
        assert client.set_parameter(name, value).successful, name
    assert client.transition(Transition.TRANSITION_CONFIGURE) is True
    assert client.state() == "inactive"
    status, values = diagnostics_now(client, lambda s: s.level == DiagnosticStatus.OK)
    assert values["state"] == "inactive"


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
    for topic in COMPRESSED_TOPICS:
        client.publisher(topic, CompressedImage)
        client.wait_for_subscribers(topic)

    def pair(i):
        now = client.now_ns()
        return png_image(EGO_SIZE, now, "ego_cam", i), png_image(EXO_SIZE, now, "exo_cam", i)

    client.stream(pair, 5.0, topics=COMPRESSED_TOPICS, msg_type=CompressedImage)
    time.sleep(1.0)
    answer = client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60)))
    assert answer.success, answer.message
    msg = corr.wait_for(lambda m: m.target_id == answer.target_id)
    assert (msg.mask.width, msg.mask.height, msg.header.frame_id) == (*EXO_SIZE, "exo_cam")
    drawn = overlay.wait_for(lambda m: m.header == msg.header)
    assert (drawn.width, drawn.height, drawn.encoding) == (*EXO_SIZE, "rgb8")


def test_deactivate_stops_the_output_and_cleanup_unloads_the_model(client):
    corr = client.subscribe("/lmeec/correspondence", Correspondence)
    corr.wait_for()
    assert client.transition(Transition.TRANSITION_DEACTIVATE) is True
    time.sleep(0.5)
    corr.clear()
    time.sleep(1.5)
    assert corr.messages == [] and client.state() == "inactive"
    assert client.transition(Transition.TRANSITION_CLEANUP) is True
    assert client.state() == "unconfigured"
    client.stop_stream()
    answer = client.set_target(view="ego", mask=mask_image(*EGO_SIZE, (40, 30, 80, 60)))
    assert not answer.success and "the node is unconfigured" in answer.message


def test_sigterm_stops_the_node_cleanly_and_frees_its_shared_memory(node, client):
    own = fastdds_shm_files(node.pid) - fastdds_shm_files()
    assert own, "the node should map Fast DDS shared-memory segments (SHM transport)"
    assert node.stop(signal.SIGTERM) == 0, node.output()
    assert not [p for p in own if Path(p).exists()]
    assert "Traceback" not in node.output(), node.output()
