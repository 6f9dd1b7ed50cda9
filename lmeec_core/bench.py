"""`lmeec bench`: streaming speed and memory of the tracker, printed as JSON.

A short synthetic scene is rendered once at the requested camera sizes and replayed in a loop for
as many frames as asked, so rendering is not timed and the stream can be arbitrarily long. The
figures that prove a flat footprint are RSS (and CUDA memory) after 10 % of the frames versus at the
end, and the median per-pair time over the first versus the last 10 % of the frames after warm-up.

`compare` runs a configuration and the fp32 reference (the official numerics: fp32, no speed-ups,
no compile) side by side on the same stream, alternating which goes first, and reports the speed-up
and how far the configuration's outputs are from the reference's.
"""
from __future__ import annotations

import copy
import resource
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .data.synthetic import SceneConfig, render_scene
from .tracker import CorrespondenceTracker, TrackerConfig

POOL_FRAMES = 24
WARMUP = 5


@dataclass(frozen=True)
class BenchConfig:
    preset: str = "nano"
    checkpoint: str | None = None
    frames: int = 300
    ego_size: tuple[int, int] = (480, 640)  # (height, width)
    exo_size: tuple[int, int] = (480, 640)
    protocol: str = "robot"  # "robot": target given once; "benchmark": per-frame source GT mask
    threads: int | None = None
    tracker: TrackerConfig = TrackerConfig()


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if values else float("nan")


def render_pool(config: BenchConfig) -> list:
    """Set the thread count and render the looped scene at the configured camera sizes."""
    if config.threads:
        torch.set_num_threads(config.threads)
    return list(render_scene(SceneConfig(seed=7, num_frames=POOL_FRAMES, ego_size=config.ego_size,
                                         exo_size=config.exo_size)))


def run(config: BenchConfig, progress: bool = True) -> dict[str, Any]:
    """Stream `config.frames` pairs through a tracker and measure time and memory."""
    pool = render_pool(config)
    tracker = CorrespondenceTracker.from_checkpoint(config.checkpoint, config.preset, config.tracker)
    cuda = tracker.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(tracker.device)
    first = pool[0]
    tracker.set_target("ego", first.ego_image, first.exo_image, mask=first.ego_mask)
    totals, stages, skipped = [], {}, 0
    rss_early = cuda_early = None
    early_mark = max(1, config.frames // 10)
    for i in tqdm(range(1, config.frames + 1), disable=not progress, desc="bench", unit="pair"):
        frame = pool[i % POOL_FRAMES]
        given = frame.ego_mask if config.protocol == "benchmark" else None
        begin = time.perf_counter()
        result = tracker.step(frame.ego_image, frame.exo_image, source_mask=given)
        totals.append(1e3 * (time.perf_counter() - begin))
        skipped += result.skipped
        for name, ms in result.timings_ms.items():
            stages.setdefault(name, []).append(ms)
        if i == early_mark:
            rss_early = _rss_mb()
            cuda_early = torch.cuda.memory_allocated(tracker.device) / 2**20 if cuda else None
    timed = totals[WARMUP:] or totals
    window = max(1, len(timed) // 10)
    report = {
        "preset": config.preset, "checkpoint": config.checkpoint, "image_size": tracker.model.image_size,
        "device": str(tracker.device), "dtype": config.tracker.dtype, "threads": torch.get_num_threads(),
        "protocol": config.protocol, "frames": config.frames, "ego_size": list(config.ego_size),
        "exo_size": list(config.exo_size), "compression": config.tracker.compression,
        "capacity": config.tracker.capacity, "skipped_pairs": skipped,
        "ms_per_pair_median": _median(timed), "ms_per_pair_p95": _p95(timed),
        "pairs_per_s": 1e3 / _median(timed),
        "ms_per_pair_early": _median(timed[:window]), "ms_per_pair_end": _median(timed[-window:]),
        "stage_ms_median": {name: _median(v[WARMUP:] or v) for name, v in stages.items()},
        "rss_mb_early": rss_early, "rss_mb_end": _rss_mb(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "memory": tracker.memory_stats(),
    }
    if cuda:
        report["cuda_mb_early"] = cuda_early
        report["cuda_mb_end"] = torch.cuda.memory_allocated(tracker.device) / 2**20
        report["cuda_peak_mb"] = torch.cuda.max_memory_allocated(tracker.device) / 2**20
        report["device_name"] = torch.cuda.get_device_name(tracker.device)
    return report


def bench_config(preset: str, frames: int, ego: tuple[int, int], exo: tuple[int, int], protocol: str,
                 checkpoint: str | None, threads: int | None, **tracker: Any) -> BenchConfig:
    """BenchConfig from flat command-line values."""
    return BenchConfig(preset, checkpoint, frames, ego, exo, protocol, threads, replace(TrackerConfig(), **tracker))


class _LastPrediction:
    """Tracker probe keeping the latest step's target logits, object-score logit and fused embedding."""

    def __init__(self) -> None:
        self.values: dict[str, torch.Tensor] = {}

    def __call__(self, name: str, value: object) -> None:
        if name == "prediction":
            self.values["logits"] = value.prediction.low_res.float()
            self.values["score_logit"] = value.prediction.score_logit.float()
        elif name == "fused":
            self.values["fused"] = value.float()


def compare(config: BenchConfig, progress: bool = True) -> dict[str, Any]:
    """`config.tracker` against the fp32 reference on one stream: speed-up and output differences.

    Both trackers get the same frames; their order alternates every pair so that neither always
    runs on a warmer cache. In the robot protocol each follows its own source-view track, so the
    differences include how they compound over the stream.
    """
    pool = render_pool(config)
    reference_config = replace(config.tracker, dtype="fp32", speedups=(), compile=False)
    model = CorrespondenceTracker.from_checkpoint(config.checkpoint, config.preset, reference_config).model
    probes = {"reference": _LastPrediction(), "candidate": _LastPrediction()}
    runs = {"reference": CorrespondenceTracker(model, reference_config, probes["reference"]),
            "candidate": CorrespondenceTracker(copy.deepcopy(model), config.tracker, probes["candidate"])}
    for tracker in runs.values():
        tracker.set_target("ego", pool[0].ego_image, pool[0].exo_image, mask=pool[0].ego_mask)
    times: dict[str, list[float]] = {name: [] for name in runs}
    diffs = {"logits": 0.0, "score_logit": 0.0, "fused": 0.0}
    equal_pixels, pixels, same_visibility, visible = 0, 0, 0, 0
    for i in tqdm(range(1, config.frames + 1), disable=not progress, desc="compare", unit="pair"):
        frame = pool[i % POOL_FRAMES]
        given = frame.ego_mask if config.protocol == "benchmark" else None
        results = {}
        for name in (list(runs) if i % 2 else list(runs)[::-1]):
            begin = time.perf_counter()
            results[name] = runs[name].step(frame.ego_image, frame.exo_image, source_mask=given)
            times[name].append(1e3 * (time.perf_counter() - begin))
        ref, cand = results["reference"], results["candidate"]
        if ref.skipped or cand.skipped:
            same_visibility += ref.skipped == cand.skipped
            continue
        for key in diffs:
            gap = (probes["reference"].values[key] - probes["candidate"].values[key]).abs().max()
            diffs[key] = max(diffs[key], float(gap))
        equal_pixels += int((ref.mask == cand.mask).sum())
        pixels += ref.mask.size
        same_visibility += ref.visible == cand.visible
        visible += ref.visible
    medians = {name: _median(t[WARMUP:] or t) for name, t in times.items()}
    return {
        "preset": config.preset, "checkpoint": config.checkpoint, "image_size": model.image_size,
        "threads": torch.get_num_threads(), "protocol": config.protocol, "frames": config.frames,
        "ego_size": list(config.ego_size), "exo_size": list(config.exo_size), "device": str(runs["reference"].device),
        "reference": {"dtype": "fp32", "speedups": [], "compile": False},
        "candidate": {"dtype": config.tracker.dtype, "speedups": list(config.tracker.speedups),
                      "compile": config.tracker.compile},
        "ms_per_pair_median": medians, "speedup": medians["reference"] / medians["candidate"],
        # Logits are gated to -1024 where the object is judged absent (random weights: everywhere), so
        # the object-score logit and the decoder's input embedding (fused) show the numeric drift too.
        "max_abs_logit_diff": diffs["logits"], "max_abs_score_logit_diff": diffs["score_logit"],
        "max_abs_fused_diff": diffs["fused"], "mask_agreement": equal_pixels / pixels if pixels else float("nan"),
        "visibility_agreement": same_visibility / config.frames, "reference_visible_pairs": visible,
    }


__all__ = ["BenchConfig", "bench_config", "compare", "render_pool", "run"]
