"""The lmeec node as a process: its command line, its clock, and how it ends.

Each test starts its own node process (they end it, or need other parameters), on the module's
private domain, and watches it with real rclpy from this process.
"""
import itertools
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ros_helpers import (REPO, NodeProcess, RosClient, diagnostic_values, fastdds_shm_files, require_ros,
                         ros_time)

require_ros()

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402

SIM_START_S = 1000


@pytest.fixture(scope="module")
def ros_client(ros):
    client = RosClient(ros)
    yield client
    client.close()


def test_help_prints_the_usage_and_exits_without_starting_ros(ros, tmp_path):
    log_dir = tmp_path / "ros_log"
    log_dir.mkdir()
    env = {**ros.env, "ROS_LOG_DIR": str(log_dir)}
    done = subprocess.run([str(Path(sys.executable).parent / "lmeec_node"), "--help"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("usage: lmeec_node") and "--ros-args" in done.stdout
    assert "max_image_pixels (default 16777216)" in done.stdout
    assert list(log_dir.iterdir()) == [], "rclpy was initialised (it writes its log file at init)"


def test_an_unknown_argument_is_refused_with_the_usage(ros):
    done = subprocess.run([str(Path(sys.executable).parent / "lmeec_node"), "--cheese"], env=ros.env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unrecognized arguments: --cheese" in done.stderr


def test_with_sim_time_diagnostics_report_a_missing_or_stopped_clock(ros, ros_client):
    node = NodeProcess(ros, "-p", "use_sim_time:=true", "-p", "diagnostics_period:=0.3", "-p", "input_timeout:=1.0")
    clock = ros_client.publisher("/clock", Clock)
    stop_clock = threading.Event()

    def run_clock() -> None:   # a bag playing with --clock, 20 Hz
        for i in itertools.count():
            if stop_clock.wait(0.05):
                return
            clock.publish(Clock(clock=ros_time(SIM_START_S * 10**9 + i * 50_000_000)))

    try:
        collector = ros_client.diagnostics()
        first = collector.wait_for(timeout_s=60.0)
        assert first.status[0].level == DiagnosticStatus.WARN, first.status[0].message
        assert "no /clock received" in first.status[0].message and diagnostic_values(first)["clock"] == "sim"

        threading.Thread(target=run_clock, daemon=True).start()
        running = collector.wait_for(lambda m: m.header.stamp.sec >= SIM_START_S, timeout_s=30.0)
        assert "/clock" not in running.status[0].message   # stamped in sim time, no clock warning
        stop_clock.set()
        stalled = collector.wait_for(lambda m: "/clock has not advanced" in m.status[0].message, timeout_s=30.0)
        assert stalled.status[0].level == DiagnosticStatus.WARN
    finally:
        stop_clock.set()
        assert node.stop(signal.SIGINT) == 0, node.output()


@pytest.mark.parametrize("first, then", [(signal.SIGINT, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT)])
def test_any_number_of_stop_signals_end_the_node_cleanly(ros, first, then):
    """A terminal's Ctrl-C reaches the whole process group, and launch forwards its own SIGINT on
    top; supervisors repeat signals. Every phase of the exit, interpreter teardown included, must
    take them."""
    node = NodeProcess(ros, "-p", "diagnostics_period:=0.2")
    node.wait_for_output("active:")
    own = fastdds_shm_files(node.pid) - fastdds_shm_files()
    assert own, "the node should map Fast DDS shared-memory segments (SHM transport)"
    started, signals = time.monotonic(), 0
    while node.alive() and time.monotonic() - started < 30.0:
        node.proc.send_signal(first if signals % 2 == 0 else then)
        signals += 1
        time.sleep(0.05)
    assert node.stop(first) == 0, node.output()
    assert signals >= 2, "the node should have taken more than one signal"
    left = [p for p in own - fastdds_shm_files() if Path(p).exists()]   # not those this process maps by now
    assert not left, left
    assert "Traceback" not in node.output(), node.output()
