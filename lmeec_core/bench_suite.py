"""`lmeec bench --suite gpu`: the prepared one-command GPU check, printed as one JSON document.

On a CUDA machine (about 5 minutes on a recent GPU; sized to stay under 8) it measures, for the
paper's model (b+ at 480, random weights unless a checkpoint is given):

* pairs/s in fp32, bf16 autocast, and bf16 with the trunk compiled (`lmeec bench`'s stream);
* bf16 against fp32 on one stream (max |logit| difference, mask and visibility agreement);
* device memory over a long stream (3,000 pairs): allocated after 10 % versus at the end, and peak;
* stamp-to-result latency with 1280x720 cameras at 30 Hz: through the ROS node (`lmeec_bench_node`,
  a subprocess, so lmeec_core imports no ROS) where rclpy is installed, else skipped with the reason;
  and always the tracker-level equivalent (a 30 Hz camera thread, a newest-only inference worker).

`--dry-run` runs the same sections with a tiny model on the CPU in seconds and prints the same keys
(CI runs it). A section that fails reports its error and the others still run.
"""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch

from . import bench
from .tracker import CorrespondenceTracker, TrackerConfig


@dataclass(frozen=True)
class SuiteConfig:
    preset: str = "b+"
    checkpoint: str | None = None
    device: str = "cuda"
    speed_pairs: int = 100  # per precision, after the warm-up
    parity_pairs: int = 50
    memory_pairs: int = 3000
    camera: tuple[int, int] = (720, 1280)  # (height, width) of both cameras
    rate_hz: float = 30.0
    latency_s: float = 30.0
    compile_backend: str = "inductor"
    dry_run: bool = False


# Same sections and keys, sized for a CPU in CI: tiny model, a few pairs, torch.compile only traced.
DRY_RUN = SuiteConfig(preset="nano", device="cpu", speed_pairs=2, parity_pairs=3, memory_pairs=12,
                      camera=(120, 160), latency_s=1.5, compile_backend="eager", dry_run=True)


def _bench_config(suite: SuiteConfig, frames: int, **tracker: Any) -> bench.BenchConfig:
    return bench.BenchConfig(preset=suite.preset, checkpoint=suite.checkpoint, frames=frames,
                             ego_size=(480, 640), exo_size=(480, 640), protocol="benchmark",
                             tracker=replace(TrackerConfig(), device=suite.device,
                                             compile_backend=suite.compile_backend, **tracker))


def _speed(suite: SuiteConfig) -> dict[str, Any]:
    """Pairs/s of the benchmark-protocol stream in fp32, bf16 and bf16 with the trunk compiled."""
    variants = {"fp32": {"dtype": "fp32"}, "bf16": {"dtype": "bf16"},
                "bf16_compile": {"dtype": "bf16", "compile": True}}
    out = {}
    for name, options in variants.items():
        report = bench.run(_bench_config(suite, suite.speed_pairs + bench.WARMUP, **options), progress=False)
        out[name] = {"pairs_per_s": report["pairs_per_s"], "ms_per_pair_median": report["ms_per_pair_median"],
                     "ms_per_pair_p95": report["ms_per_pair_p95"], "stage_ms_median": report["stage_ms_median"]}
    return out


def _parity(suite: SuiteConfig) -> dict[str, Any]:
    report = bench.compare(_bench_config(suite, suite.parity_pairs, dtype="bf16"), progress=False)
    keys = ("max_abs_logit_diff", "max_abs_score_logit_diff", "max_abs_fused_diff", "mask_agreement",
            "visibility_agreement", "reference_visible_pairs", "speedup", "ms_per_pair_median")
    return {key: report[key] for key in keys}


def _memory(suite: SuiteConfig) -> dict[str, Any]:
    """Allocated device memory (RSS on a CPU) after 10 % of a long stream versus at its end."""
    report = bench.run(_bench_config(suite, suite.memory_pairs, dtype="bf16"), progress=False)
    cuda = "cuda_mb_end" in report
    early, end = (report["cuda_mb_early"], report["cuda_mb_end"]) if cuda else (report["rss_mb_early"],
                                                                               report["rss_mb_end"])
    return {"pairs": suite.memory_pairs, "kind": "cuda_allocated" if cuda else "rss",
            "early_mb": early, "end_mb": end, "growth_mb": end - early,
            "peak_mb": report["cuda_peak_mb"] if cuda else report["peak_rss_mb"],
            "ms_per_pair_early": report["ms_per_pair_early"], "ms_per_pair_end": report["ms_per_pair_end"]}


class _NewestPair:
    """A one-slot mailbox: the camera thread overwrites, the worker takes the newest pair."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: tuple[float, int] | None = None
        self.dropped = 0

    def put(self, item: tuple[float, int]) -> None:
        with self._cond:
            self.dropped += self._item is not None
            self._item = item
            self._cond.notify()

    def take(self, timeout: float) -> tuple[float, int] | None:
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None, timeout)
            item, self._item = self._item, None
            return item


def _tracker_latency(suite: SuiteConfig) -> dict[str, Any]:
    """Stamp-to-result latency of the tracker fed by a camera thread at `rate_hz`, newest pair first."""
    height, width = suite.camera
    config = replace(_bench_config(suite, 0, dtype="bf16"), ego_size=(height, width), exo_size=(height, width))
    pool = bench.render_pool(config)
    tracker = CorrespondenceTracker.from_checkpoint(config.checkpoint, config.preset, config.tracker)
    tracker.set_target("ego", pool[0].ego_image, pool[0].exo_image, mask=pool[0].ego_mask)
    for frame in pool[1:1 + bench.WARMUP]:
        tracker.step(frame.ego_image, frame.exo_image)
    mailbox, stop = _NewestPair(), threading.Event()

    def camera() -> None:
        start, sent = time.monotonic(), 0
        while not stop.is_set():
            mailbox.put((time.monotonic(), sent))
            sent += 1
            time.sleep(max(0.0, start + sent / suite.rate_hz - time.monotonic()))

    thread = threading.Thread(target=camera, daemon=True)
    latencies, begin = [], time.monotonic()
    thread.start()
    while time.monotonic() - begin < suite.latency_s:
        item = mailbox.take(timeout=1.0)
        if item is None:
            continue
        stamp, index = item
        frame = pool[index % len(pool)]
        tracker.step(frame.ego_image, frame.exo_image, stamp=stamp)
        latencies.append(1e3 * (time.monotonic() - stamp))
    stop.set()
    thread.join()
    elapsed = time.monotonic() - begin
    ms = np.array(latencies)
    return {"camera": f"{width}x{height}", "rate_hz": suite.rate_hz, "duration_s": round(elapsed, 2),
            "results_per_s": len(ms) / elapsed, "dropped_pairs": mailbox.dropped,
            "latency_ms_median": float(np.median(ms)), "latency_ms_p95": float(np.percentile(ms, 95)),
            "latency_ms_max": float(ms.max())}


def _node_latency(suite: SuiteConfig) -> dict[str, Any]:
    """The ROS node's stamp-to-publish latency (`lmeec_bench_node` in a subprocess), where ROS exists."""
    missing = [name for name in ("rclpy", "lmeec_ros.srv") if not _importable(name)]
    if missing:
        return {"skipped": f"{', '.join(missing)} not importable (no ROS here); see tracker_latency_30hz"}
    height, width = suite.camera
    command = [sys.executable, "-m", "lmeec_ros.bench_node", "--width", str(width), "--height", str(height),
               "--rate", str(suite.rate_hz), "--seconds", str(suite.latency_s), "--preset", suite.preset,
               "--checkpoint", suite.checkpoint or "", "--device", suite.device]
    done = subprocess.run(command, capture_output=True, text=True, timeout=suite.latency_s + 300)
    if done.returncode != 0:
        raise RuntimeError(f"lmeec_bench_node exited with {done.returncode}: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout)


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _section(run: Callable[[SuiteConfig], dict[str, Any]], suite: SuiteConfig) -> dict[str, Any]:
    begin = time.monotonic()
    try:
        result = run(suite)
    except Exception as err:  # one failing section must not hide the others' figures
        result = {"error": f"{type(err).__name__}: {err}"}
    result["section_s"] = round(time.monotonic() - begin, 1)
    return result


SECTIONS = {
    "speed": _speed,
    "bf16_vs_fp32": _parity,
    "memory_over_stream": _memory,
    "tracker_latency_30hz": _tracker_latency,
    "node_latency_30hz": _node_latency,
}


def gpu_suite(suite: SuiteConfig = SuiteConfig()) -> dict[str, Any]:
    """Run every section; the device must be there unless this is the dry run."""
    if suite.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("the GPU suite needs CUDA (torch.cuda.is_available() is False); "
                           "use --dry-run for the CPU check of the suite itself")
    begin = time.monotonic()
    report: dict[str, Any] = {
        "suite": "gpu", "dry_run": suite.dry_run, "preset": suite.preset, "checkpoint": suite.checkpoint,
        "device": suite.device,
        "device_name": torch.cuda.get_device_name(suite.device) if suite.device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "host_cpus": os.cpu_count(),
    }
    for name, run in SECTIONS.items():
        report[name] = _section(run, suite)
    report["wall_s"] = round(time.monotonic() - begin, 1)
    return report
