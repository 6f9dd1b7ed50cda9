"""The node's health: counters, rates and latency, summarised as a diagnostic_msgs/DiagnosticStatus.

Built by hand rather than with diagnostic_updater, which PyPI-only ROS lacks; the message is the
standard one, so rqt_robot_monitor and aggregators read it the same.
"""
from __future__ import annotations

import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.clock import Clock

from lmeec_ros.frame_pair import VIEWS

RATE_WINDOW_S = 5.0
LATENCY_SAMPLES = 100
PROBLEM_HOLD_S = 5.0   # a problem keeps the status at WARN this long after it was last seen


class RateMeter:
    """Events per second over the last RATE_WINDOW_S seconds."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def tick(self, now: float) -> None:
        self._times.append(now)

    def rate(self, now: float) -> float:
        while self._times and now - self._times[0] > RATE_WINDOW_S:
            self._times.popleft()
        return len(self._times) / RATE_WINDOW_S


class ClockWatch:
    """Whether the node's clock runs: with use_sim_time it is /clock, which may not have started (no
    bag playing, no simulator) or may have stopped. Read on the steady clock, which always runs."""

    def __init__(self) -> None:
        self._last_ns: int | None = None
        self._changed_at = time.monotonic()

    def check(self, clock: Clock, timeout_s: float) -> tuple[str, str]:
        """(clock name, problem or "") for diagnostics; `timeout_s` is how long /clock may stand still."""
        if not getattr(clock, "ros_time_is_active", False):
            return "system", ""
        now_ns, now = clock.now().nanoseconds, time.monotonic()
        if now_ns != self._last_ns:
            self._last_ns, self._changed_at = now_ns, now
        if now_ns == 0:
            return "sim", ("use_sim_time is true and no /clock received yet: is a bag playing (with --clock) "
                           "or a simulator running?")
        if now - self._changed_at > timeout_s:
            return "sim", f"use_sim_time is true and /clock has not advanced for {now - self._changed_at:.1f} s"
        return "sim", ""


@dataclass
class Snapshot:
    """What the node tells Health at each diagnostics tick."""
    state: str                        # lifecycle state label
    detail: str                       # e.g. why configure failed, or the target being followed
    device: str                       # torch device: "cpu", "cuda", "cuda:1"
    clock: str                        # the node clock: "system", or "sim" (/clock, use_sim_time)
    clock_problem: str                # e.g. sim time with no /clock received; "" when fine
    sync_backend: str
    topics: dict[str, str]
    input_timeout_s: float
    dropped_pairs: int
    bank_sizes: dict[str, int] = field(default_factory=dict)


class Health:
    """Thread-safe record of what happened to the inputs and the outputs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._images = {v: RateMeter() for v in VIEWS}
        self._pairs = RateMeter()
        self._results = RateMeter()
        self._latency_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._last_image: dict[str, float] = {}
        self._since = time.monotonic()
        self._problem = ""
        self._problem_at = -PROBLEM_HOLD_S

    def restart_silence_clock(self) -> None:
        """Cameras are judged silent from now on (at activation), not from process start."""
        with self._lock:
            self._since = time.monotonic()
            self._last_image.clear()

    def image(self, view: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._images[view].tick(now)
            self._last_image[view] = now

    def pair(self) -> None:
        with self._lock:
            self._pairs.tick(time.monotonic())

    def result(self, latency_ms: float) -> None:
        with self._lock:
            self._results.tick(time.monotonic())
            self._latency_ms.append(latency_ms)

    def problem(self, kind: str, text: str) -> None:
        """Count a problem of `kind` and make `text` the status message for a while."""
        with self._lock:
            self._counts[kind] += 1
            self._problem, self._problem_at = text, time.monotonic()

    def count(self, kind: str) -> None:
        with self._lock:
            self._counts[kind] += 1

    def silent_cameras(self, timeout_s: float) -> list[tuple[str, float]]:
        """(view, seconds without images) for each camera silent longer than `timeout_s`."""
        now = time.monotonic()
        with self._lock:
            quiet = {v: now - self._last_image.get(v, self._since) for v in VIEWS}
        return [(v, s) for v, s in quiet.items() if s > timeout_s]

    def status(self, snap: Snapshot) -> DiagnosticStatus:
        now = time.monotonic()
        level, message = self._level_and_message(snap, now)
        with self._lock:
            latencies = np.array(self._latency_ms) if self._latency_ms else None
            values = {
                "state": snap.state,
                "detail": snap.detail,
                "device": snap.device,
                "clock": snap.clock,
                "sync": snap.sync_backend,
                **{f"{v}_topic": snap.topics.get(v, "") for v in VIEWS},
                **{f"{v}_images_per_s": f"{self._images[v].rate(now):.2f}" for v in VIEWS},
                "pairs_per_s": f"{self._pairs.rate(now):.2f}",
                "results_per_s": f"{self._results.rate(now):.2f}",
                "latency_ms_median": f"{np.median(latencies):.1f}" if latencies is not None else "",
                "latency_ms_p95": f"{np.percentile(latencies, 95):.1f}" if latencies is not None else "",
                "dropped_pairs": str(snap.dropped_pairs),
                **{k: str(v) for k, v in sorted(self._counts.items())},
                **{k: str(v) for k, v in snap.bank_sizes.items()},
                "process_rss_mb": f"{_process_rss_mb():.0f}",
                **_device_memory(snap.device),
                "last_problem": self._problem,
            }
        return DiagnosticStatus(level=level, name="lmeec: ego-exo correspondence", message=message,
                                hardware_id=hardware_name(snap.device),
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def _level_and_message(self, snap: Snapshot, now: float) -> tuple[bytes, str]:
        if snap.state == "unconfigured" and snap.detail:
            return DiagnosticStatus.ERROR, snap.detail
        if snap.clock_problem:
            return DiagnosticStatus.WARN, snap.clock_problem
        if snap.state != "active":
            return DiagnosticStatus.OK, f"{snap.state}: {snap.detail}" if snap.detail else snap.state
        silent = self.silent_cameras(snap.input_timeout_s)
        if silent:
            return DiagnosticStatus.WARN, "; ".join(
                f"no {v} images on {snap.topics[v]} for {s:.1f} s" for v, s in silent)
        with self._lock:
            problem, problem_at = self._problem, self._problem_at
        if now - problem_at < PROBLEM_HOLD_S:
            return DiagnosticStatus.WARN, problem
        return DiagnosticStatus.OK, snap.detail


def _process_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def hardware_name(device: str) -> str:
    """The device itself: "cpu", or a CUDA device with its model name ("cuda:0 (NVIDIA H200)")."""
    if not device.startswith("cuda"):
        return device
    import torch  # already loaded by the tracker on this path

    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def _device_memory(device: str) -> dict[str, str]:
    if not device.startswith("cuda"):
        return {}
    import torch  # already loaded by the tracker on this path

    return {"cuda_allocated_mb": f"{torch.cuda.memory_allocated(device) / 2**20:.0f}",
            "cuda_reserved_mb": f"{torch.cuda.memory_reserved(device) / 2**20:.0f}"}
