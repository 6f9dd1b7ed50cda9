"""Run the node on this machine only, for benchmarks and tests: a private DDS set-up and a node process.

Discovery stays on localhost, each run gets its own ROS_DOMAIN_ID, and Fast DDS uses a 64 MB
shared-memory segment (default transports lose most frames above VGA; shared/reference/ros2-from-pip.md
has the measurements). The node is stopped with SIGINT/SIGTERM, never SIGKILL unless it hangs, so it
can release its shared memory.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

FASTDDS_SHM_PROFILE = """<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com"><profiles>
  <transport_descriptors>
    <transport_descriptor><transport_id>shm_big</transport_id><type>SHM</type>
      <segment_size>67108864</segment_size><maxMessageSize>16777216</maxMessageSize>
      <port_queue_capacity>512</port_queue_capacity></transport_descriptor>
    <transport_descriptor><transport_id>udp_lo</transport_id><type>UDPv4</type>
      <sendBufferSize>4194304</sendBufferSize><receiveBufferSize>4194304</receiveBufferSize>
      <interfaceWhiteList><address>127.0.0.1</address></interfaceWhiteList></transport_descriptor>
  </transport_descriptors>
  <participant profile_name="ros_default" is_default_profile="true"><rtps>
    <useBuiltinTransports>false</useBuiltinTransports>
    <userTransports><transport_id>shm_big</transport_id><transport_id>udp_lo</transport_id></userTransports>
  </rtps></participant>
</profiles></dds>
"""
# Variables a process needs before rclpy.init() to join this set-up (the domain is passed to init).
DDS_VARIABLES = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE")


def pick_domain_id(salt: int = 0) -> int:
    """A domain in 1..100 that differs between concurrent processes (and `salt`s within one)."""
    return 1 + (os.getpid() * 7 + salt) % 100


def local_environment(workdir: Path, domain_id: int) -> dict[str, str]:
    """os.environ plus a private, localhost-only DDS set-up whose files live in `workdir`."""
    profile = workdir / "fastdds_shm.xml"
    profile.write_text(FASTDDS_SHM_PROFILE)
    log_dir = workdir / "ros_log"
    log_dir.mkdir(exist_ok=True)
    return {**os.environ, "ROS_DOMAIN_ID": str(domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "FASTDDS_DEFAULT_PROFILES_FILE": str(profile), "ROS_LOG_DIR": str(log_dir),
            "HOME": os.environ.get("HOME", str(workdir)), "PYTHONUNBUFFERED": "1",
            "RCUTILS_COLORIZED_OUTPUT": "0"}


@contextmanager
def used_by_this_process(env: dict[str, str]) -> Iterator[None]:
    """Within the block, this process joins `env`'s DDS set-up (call rclpy.init() inside it)."""
    saved = {k: os.environ.get(k) for k in DDS_VARIABLES}
    os.environ.update({k: env[k] for k in DDS_VARIABLES})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start_node(env: dict[str, str], ros_args: list[str], log: IO[str], console_script: bool = False,
               cwd: Path | None = None) -> subprocess.Popen:
    """The lmeec node as `python -m lmeec_ros.node` (or the `lmeec_node` script) with `--ros-args`."""
    command = ([str(Path(sys.executable).parent / "lmeec_node")] if console_script
               else [sys.executable, "-m", "lmeec_ros.node"])
    return subprocess.Popen([*command, "--ros-args", *ros_args], env=env, cwd=cwd,
                            stdout=log, stderr=subprocess.STDOUT)


def stop_node(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout_s: float = 30.0) -> int:
    """Send `sig` and wait for the exit code; SIGKILL only a node that ignores it (then raise)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"node ignored {signal.Signals(sig).name} for {timeout_s} s and was killed")
    return proc.returncode
