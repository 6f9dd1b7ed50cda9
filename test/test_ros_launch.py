"""launch/lmeec.launch.py run by ROS 2 launch itself, where `launch` and `launch_ros` are installed.

ROS 2 from PyPI has neither, so here these tests skip; on a ROS install (a sourced workspace, see
the README) they run the launch description through launch's Python API, as `ros2 launch` does,
in its own process group so that a test can press Ctrl-C as a terminal does: to every process in
the group. The package is found through a temporary ament prefix that points at this source tree.
"""
import os
import signal
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from ros_helpers import REPO, require_ros

require_ros()
# A submodule: this repository's launch/ folder alone imports as an empty namespace package `launch`.
pytest.importorskip("launch.actions", reason="ROS 2 launch is not installed (ROS 2 from PyPI); this runs on a ROS install")
pytest.importorskip("launch_ros", reason="launch_ros is not installed (ROS 2 from PyPI); this runs on a ROS install")

# What `ros2 launch -n` does with a file and `name:=value` arguments: non-interactive, launch sends
# its own SIGINT to the node on top of the terminal's.
RUN_LAUNCH_FILE = """
import sys
from launch import LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

path, arguments = sys.argv[1], sys.argv[2:]
service = LaunchService(argv=arguments, noninteractive=True)
service.include_launch_description(IncludeLaunchDescription(
    PythonLaunchDescriptionSource(path), launch_arguments=[a.split(":=", 1) for a in arguments]))
sys.exit(service.run())
"""


@pytest.fixture(scope="module")
def package_prefix(tmp_path_factory) -> Path:
    """An ament prefix holding lmeec_ros as colcon installs it, made of links into this tree."""
    prefix = tmp_path_factory.mktemp("prefix")
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "lmeec_ros").touch()
    share = prefix / "share" / "lmeec_ros"
    share.mkdir()
    for folder in ("launch", "config"):
        (share / folder).symlink_to(REPO / folder)
    (prefix / "lib" / "lmeec_ros").mkdir(parents=True)
    (prefix / "lib" / "lmeec_ros" / "lmeec_node").symlink_to(Path(sys.executable).parent / "lmeec_node")
    return prefix


class Launch:
    """`ros2 launch lmeec_ros lmeec.launch.py ARGS` as a process group; output in a log file."""

    def __init__(self, ros, prefix: Path, *arguments: str) -> None:
        env = {**ros.env, "AMENT_PREFIX_PATH": os.pathsep.join(
            [str(prefix), *filter(None, [os.environ.get("AMENT_PREFIX_PATH")])])}
        self.log_path = ros.tmp / f"launch-{time.monotonic_ns()}.log"
        launch_file = prefix / "share" / "lmeec_ros" / "launch" / "lmeec.launch.py"
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", RUN_LAUNCH_FILE, str(launch_file), *arguments],
                                         env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_for_output(self, text: str, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.interrupt()
                raise AssertionError(f"launch did not log {text!r} within {timeout_s} s:\n{self.output()}")
            time.sleep(0.2)

    def interrupt(self, times: int = 1, apart_s: float = 0.5, timeout_s: float = 60.0) -> int:
        """Ctrl-C in a terminal `times` times: SIGINT to every process of the group."""
        for _ in range(times):
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGINT)
                time.sleep(apart_s)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"launch did not end within {timeout_s} s of SIGINT:\n{self.output()}")


def test_launch_with_preset_auto_starts_the_node_and_ctrl_c_twice_ends_it_cleanly(ros, package_prefix):
    launch = Launch(ros, package_prefix, "preset:=auto", f"config:={REPO / 'config' / 'lmeec.yaml'}")
    launch.wait_for_output("active: pairing")
    assert launch.interrupt(times=2) == 0, launch.output()
    log = launch.output()
    assert "configured: random nano" in log, log
    assert "process has finished cleanly" in log and "escalating" not in log, log
    assert "Traceback" not in log, log


def test_launch_with_an_empty_argument_keeps_the_config_value(ros, package_prefix, tmp_path):
    config = tmp_path / "lmeec.yaml"
    config.write_text((REPO / "config" / "lmeec.yaml").read_text().replace('preset: "nano"', 'preset: ""'))
    launch = Launch(ros, package_prefix, "preset:=", f"config:={config}")
    launch.wait_for_output("active: pairing")
    assert launch.interrupt() == 0, launch.output()
    assert "configured: random nano" in launch.output(), launch.output()


def test_the_suite_runs_beside_the_launch_testing_pytest_plugins():
    """launch_testing's plugin declares hooks that pytest 9 refuses, which aborts any pytest run
    where it is installed; pytest.ini disables it and its siblings (this suite does not use them)."""
    pytest.importorskip("launch_testing", reason="launch_testing is not installed")
    plugins = {e.name for e in entry_points(group="pytest11") if e.dist.name.startswith("launch")}
    assert "launch_testing" in plugins, plugins
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test/test_sync.py"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
