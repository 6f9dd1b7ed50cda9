"""End-to-end latency of the node: camera stamps in, masks out, across real processes.

`run()` starts the node in its own process on a private localhost DDS set-up, publishes synchronised
ego/exo pairs at a fixed rate and resolution, marks a target once, and measures, for every ~/mask
received, the time from the image stamp (set when the pair is published) to its receipt. The lag
trend (latency change per second of run) tells whether the node keeps up by dropping pairs (about
zero) or falls behind (positive). `python -m lmeec_ros.bench_node --help` runs it alone.

`run_targets()` measures the cost of following several targets: one node, the target counts in
increasing order (targets are added: GT masks of distinct objects of `lmeec bench`'s synthetic room,
each marked in a view where it shows, so both directions are exercised), and for
each count pairs published in lockstep (the next once the ~/mask of this one arrived), so that each
pair's latency is its own processing time, with no queueing. Memory: the node's RSS and the bytes
each target holds (from /diagnostics) at the start and the end of each count's run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from lmeec_core.bench import BenchConfig, bench_objects, bench_scene
from lmeec_core.cli import target_counts
from lmeec_core.data.synthetic import MAX_OBJECTS, SyntheticScene
from lmeec_ros.image_codec import mask_to_image, rgb_to_image
from lmeec_ros.local_ros import local_environment, pick_domain_id, start_node, stop_node, used_by_this_process
from lmeec_ros.srv import SetTarget

NS_PER_S = 1_000_000_000
STARTUP_TIMEOUT_S = 120.0
DRAIN_S = 3.0   # results still in flight when publishing stops
WARMUP_PAIRS = 3   # per target count, before timing


class _Client:
    """Camera publishers, result subscribers and the set_target client, in a private rclpy context."""

    def __init__(self, domain_id: int) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("lmeec_bench", context=self.context)
        sensor_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.cameras = {v: self.node.create_publisher(Image, f"/{v}/image_raw", sensor_qos) for v in ("ego", "exo")}
        self.latencies: list[tuple[float, float]] = []   # (seconds since start, latency ms)
        self.dropped_pairs = 0
        self.late_pairs = 0
        self.diagnostics: dict[str, str] = {}   # the latest values of the node's status
        self.diagnostics_count = 0
        self._start_ns = 0
        self._received = threading.Condition()
        self._last_stamp_ns = 0   # of the newest ~/mask
        self.node.create_subscription(Image, "/lmeec/mask", self._on_mask, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.set_target_client = self.node.create_client(SetTarget, "/lmeec/set_target")
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def start_clock(self) -> None:
        self._start_ns = self.now_ns()
        self.latencies.clear()

    def _on_mask(self, msg: Image) -> None:
        now = self.now_ns()
        stamp = msg.header.stamp.sec * NS_PER_S + msg.header.stamp.nanosec
        if self._start_ns and stamp >= self._start_ns:
            self.latencies.append(((now - self._start_ns) / NS_PER_S, (now - stamp) / 1e6))
        with self._received:
            self._last_stamp_ns = max(self._last_stamp_ns, stamp)
            self._received.notify_all()

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "dropped_pairs" in values:
                self.diagnostics, self.diagnostics_count = values, self.diagnostics_count + 1
                self.dropped_pairs = int(values["dropped_pairs"])
                self.late_pairs = int(values.get("late_pairs", 0))

    def publish_pair(self, frames: dict[str, Image]) -> int:
        """Publish both images stamped now; returns the stamp (ns)."""
        now = self.now_ns()
        sec, nanosec = divmod(now, NS_PER_S)
        for view, msg in frames.items():
            msg.header.stamp = Time(sec=sec, nanosec=nanosec)
            self.cameras[view].publish(msg)
        return now

    def fresh_diagnostics(self, timeout_s: float = 10.0) -> dict[str, str]:
        """The values of the next status the node publishes (from after this call)."""
        seen, deadline = self.diagnostics_count, time.monotonic() + timeout_s
        while self.diagnostics_count <= seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no /diagnostics within {timeout_s} s")
            time.sleep(0.05)
        return self.diagnostics

    def wait_for_mask(self, stamp_ns: int, timeout_s: float) -> bool:
        """Whether a ~/mask of stamp `stamp_ns` (or newer) arrived within `timeout_s`."""
        with self._received:
            return self._received.wait_for(lambda: self._last_stamp_ns >= stamp_ns, timeout_s)

    def set_target(self, mask: Image, timeout_s: float, view: str = "ego") -> SetTarget.Response:
        future = self.set_target_client.call_async(SetTarget.Request(view=view, mask=mask))
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout_s):
            raise TimeoutError(f"set_target did not answer within {timeout_s} s")
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _frame(width: int, height: int, view: str) -> Image:
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    msg.header.frame_id = f"{view}_camera"
    msg.data = pixels.tobytes()
    return msg


def _centre_mask(width: int, height: int) -> Image:
    mask = np.zeros((height, width), np.uint8)
    mask[height // 3: 2 * height // 3, width // 3: 2 * width // 3] = 255
    msg = Image(height=height, width=width, encoding="mono8", step=width)
    msg.data = mask.tobytes()
    return msg


def _scene_objects(width: int, height: int, count: int) -> tuple[dict[str, Image], list[tuple[str, Image]]]:
    """The first frame of `lmeec bench`'s crowded room at this size, and `count` of its objects as
    (view, GT mask) prompts, each in a view where it shows (`lmeec_core.bench.bench_objects`)."""
    config = BenchConfig(ego_size=(height, width), exo_size=(height, width))
    scene = bench_scene(config, MAX_OBJECTS)
    first = SyntheticScene(scene).frame(0)
    frames = {view: rgb_to_image(getattr(first, f"{view}_image"), Header(frame_id=f"{view}_camera"))
              for view in ("ego", "exo")}
    prompts = [(view, mask_to_image(getattr(first, f"{view}_instances") == instance, Header()))
               for instance, view in bench_objects(scene, first, count)]
    return frames, prompts


def _mark_target(client: _Client, frames: dict[str, Image], mask: Image, timeout_s: float,
                 proc: subprocess.Popen, log_path: Path, view: str = "ego") -> None:
    """Publish pairs until the node is up and has accepted the target."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the node exited with code {proc.returncode}:\n{log_path.read_text()[-2000:]}")
        client.publish_pair(frames)
        if client.set_target_client.service_is_ready():
            answer = client.set_target(mask, timeout_s, view)
            if answer.success:
                return
            if "no synchronised" not in answer.message:
                raise RuntimeError(answer.message)
        time.sleep(0.2)
    raise TimeoutError(f"the node did not accept a target within {timeout_s} s")


def _stats(latencies: list[tuple[float, float]]) -> dict[str, float]:
    if not latencies:
        return {}
    times, ms = np.array(latencies).T
    quarter = max(1, len(ms) // 4)
    trend = float(np.polyfit(times, ms, 1)[0]) if len(ms) >= 3 and np.ptp(times) > 0 else 0.0
    return {"latency_ms_median": round(float(np.median(ms)), 1),
            "latency_ms_p95": round(float(np.percentile(ms, 95)), 1),
            "latency_ms_max": round(float(ms.max()), 1),
            "latency_ms_first_quarter_median": round(float(np.median(ms[:quarter])), 1),
            "latency_ms_last_quarter_median": round(float(np.median(ms[-quarter:])), 1),
            "lag_trend_ms_per_s": round(trend, 3)}


@contextmanager
def _node_session(parameters: dict[str, object]) -> Iterator[tuple[_Client, subprocess.Popen, Path]]:
    """The node with `parameters`, in its own process on a private DDS set-up, and a client for it."""
    with tempfile.TemporaryDirectory(prefix="lmeec_bench_") as workdir:
        domain_id = pick_domain_id()
        env = local_environment(Path(workdir), domain_id)
        log_path = Path(workdir) / "node.log"
        with log_path.open("w") as log, used_by_this_process(env):
            # Values are YAML: quoting keeps "" and "b+" strings.
            proc = start_node(env, [a for k, v in parameters.items() for a in ("-p", f"{k}:={json.dumps(v)}")], log)
            client = _Client(domain_id)
            try:
                yield client, proc, log_path
            finally:
                client.close()
                stop_node(proc)


def run(width: int = 640, height: int = 480, rate_hz: float = 15.0, duration_s: float = 30.0,
        checkpoint: str = "", preset: str = "nano", device: str = "auto",
        exo_width: int | None = None, exo_height: int | None = None, dtype: str = "fp32") -> dict:
    """Benchmark the node at one resolution and rate; returns JSON-able statistics."""
    exo_size = (exo_width or width, exo_height or height)
    parameters = {"checkpoint": checkpoint, "preset": preset, "device": device, "dtype": dtype}
    with _node_session(parameters) as (client, proc, log_path):
        frames = {"ego": _frame(width, height, "ego"), "exo": _frame(*exo_size, "exo")}
        _mark_target(client, frames, _centre_mask(width, height), STARTUP_TIMEOUT_S, proc, log_path)
        dropped_before = client.dropped_pairs
        client.start_clock()
        published = 0
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < duration_s:
            client.publish_pair(frames)
            published += 1
            time.sleep(max(0.0, published / rate_hz - (time.monotonic() - start)))
        time.sleep(DRAIN_S)
        received = len(client.latencies)
        return {
            "ego_resolution": f"{width}x{height}", "exo_resolution": f"{exo_size[0]}x{exo_size[1]}",
            "rate_hz": rate_hz, "duration_s": round(elapsed, 2), "checkpoint": checkpoint,
            "preset": preset, "device": device, "dtype": dtype,
            "published_pairs": published, "results_received": received,
            "results_per_s": round(received / elapsed, 2),
            "dropped_pairs": client.dropped_pairs - dropped_before, "late_pairs": client.late_pairs,
            **_stats(client.latencies),
        }


def run_targets(counts: tuple[int, ...] = (1, 2, 4, 8), width: int = 640, height: int = 480,
                duration_s: float = 20.0, checkpoint: str = "", preset: str = "nano", device: str = "auto",
                dtype: str = "fp32", timeout_s: float = 60.0) -> dict:
    """Per-pair time and memory of the node following each of `counts` targets; JSON-able."""
    counts = tuple(sorted(counts))
    frames, prompts = _scene_objects(width, height, counts[-1])
    # The prompts are GT masks of distinct objects: the overlap refusal is not what is measured. Adding
    # targets pauses the stream: that pause is not a time jump that should reset the memory.
    parameters = {"checkpoint": checkpoint, "preset": preset, "device": device, "dtype": dtype,
                  "max_targets": counts[-1], "max_prompt_overlap": 1.0, "max_time_gap": 3600.0}
    report: dict = {"ego_resolution": f"{width}x{height}", "exo_resolution": f"{width}x{height}",
                    "checkpoint": checkpoint, "preset": preset, "device": device, "dtype": dtype,
                    "seconds_per_count": duration_s, "source_views": [view for view, _ in prompts], "targets": {}}
    with _node_session(parameters) as (client, proc, log_path):
        view, mask = prompts[0]
        _mark_target(client, frames, mask, STARTUP_TIMEOUT_S, proc, log_path, view)
        followed = 1
        for count in counts:
            while followed < count:
                view, mask = prompts[followed]
                answer = client.set_target(mask, timeout_s, view)
                if not answer.success:
                    raise RuntimeError(answer.message)
                followed += 1
            report["targets"][str(count)] = _lockstep(client, frames, duration_s, timeout_s)
    one = report["targets"].get("1")
    for figures in report["targets"].values():
        if one is not None and figures is not one:
            figures["cost_vs_one_target"] = round(figures["ms_per_pair_median"] / one["ms_per_pair_median"], 3)
    return report


def _lockstep(client: _Client, frames: dict[str, Image], duration_s: float, timeout_s: float) -> dict:
    """Pairs published one at a time for `duration_s`: per-pair time (publish to ~/mask) and memory."""
    for _ in range(WARMUP_PAIRS):
        if not client.wait_for_mask(client.publish_pair(frames), timeout_s):
            raise TimeoutError(f"no ~/mask within {timeout_s} s")
    memory_start = _memory(client.fresh_diagnostics())
    times_ms, lost = [], 0
    start = time.monotonic()
    while time.monotonic() - start < duration_s:
        begin = time.perf_counter()
        if client.wait_for_mask(client.publish_pair(frames), timeout_s):
            times_ms.append(1e3 * (time.perf_counter() - begin))
        else:
            lost += 1
    ms = np.array(times_ms)
    return {"pairs": len(times_ms), "pairs_without_result": lost,
            "ms_per_pair_median": round(float(np.median(ms)), 1),
            "ms_per_pair_p95": round(float(np.percentile(ms, 95)), 1),
            "memory_start": memory_start, "memory_end": _memory(client.fresh_diagnostics())}


def _memory(values: dict[str, str]) -> dict:
    """RSS and the bytes each target holds, from the node's diagnostics."""
    targets = [t for t in values.get("targets", "").split(",") if t]
    return {"process_rss_mb": float(values["process_rss_mb"]),
            "target_bytes": {t: int(values[f"target_{t}_bytes"]) for t in targets if f"target_{t}_bytes" in values}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--rate", type=float, default=15.0, help="pairs per second published")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--exo-width", type=int, help="default: --width")
    parser.add_argument("--exo-height", type=int, help="default: --height")
    parser.add_argument("--targets", type=target_counts,
                        help="target counts such as 1,2,4,8 (at most 8): per-pair time and memory of each, pairs in "
                             "lockstep, --seconds per count (--rate and the exo size are not used)")
    args = parser.parse_args()
    if args.targets:
        result = run_targets(args.targets, args.width, args.height, args.seconds, args.checkpoint, args.preset,
                             args.device, args.dtype)
    else:
        result = run(args.width, args.height, args.rate, args.seconds, args.checkpoint, args.preset,
                     args.device, args.exo_width, args.exo_height, args.dtype)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
