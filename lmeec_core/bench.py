"""`lmeec bench`: streaming speed and memory of the tracker, printed as JSON.

A short synthetic scene is rendered once at the requested camera sizes and replayed in a loop for
as many frames as asked, so rendering is not timed and the stream can be arbitrarily long. The
figures that prove a flat footprint are RSS (and CUDA memory) after 10 % of the frames versus at the
end, the bytes each target's memory holds at the same two points, and the median per-pair time over
the first versus the last 10 % of the frames after warm-up.

With several target counts (`targets=(1, 2, 4, 8)`), one tracker per count follows that many objects
of the scene (one model shared), and the trackers take turns on every pair, in an order that rotates
from pair to pair: they see the same load, so their costs compare within the run. Each count's cost
relative to one target is given as the ratio of the median per-pair times, and as the median over
pairs of the ratio on the same pair (less sensitive to load that changes during the run), and as the
ratio of the median process CPU time per pair (what the pair cost in compute, whatever else ran).

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

from .data.synthetic import MAX_OBJECTS, SceneConfig, SyntheticFrame, object_names, render_scene
from .errors import ConfigError
from .model import build_preset, load_checkpoint
from .tracker import CorrespondenceTracker, TrackerConfig

POOL_FRAMES = 24
WARMUP = 5
MIN_PROMPT_FRACTION = 0.002  # an object is prompted in a view where it covers at least this much of the image


@dataclass(frozen=True)
class BenchConfig:
    preset: str = "nano"
    checkpoint: str | None = None
    frames: int = 300
    ego_size: tuple[int, int] = (480, 640)  # (height, width)
    exo_size: tuple[int, int] = (480, 640)
    protocol: str = "robot"  # "robot": targets given once; "benchmark": per-frame source GT masks
    threads: int | None = None
    tracker: TrackerConfig = TrackerConfig()
    targets: tuple[int, ...] = (1,)  # target counts, measured side by side


@dataclass
class _Run:
    """One tracker following `count` objects, and what was measured on it."""

    count: int
    tracker: CorrespondenceTracker
    objects: dict[int, tuple[int, str]]  # target id -> (instance, source view)
    totals: list[float]  # wall ms per pair
    cpu: list[float]  # process CPU ms per pair (all threads)
    stages: dict[str, list[float]]
    skipped: int = 0
    bytes_early: dict[int, int] | None = None


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


def bench_objects(scene: SceneConfig, frame: SyntheticFrame, count: int) -> list[tuple[int, str]]:
    """`count` objects of the scene that can be prompted on `frame`: (instance, source view).

    Each object is prompted in the ego view where it shows enough pixels there, else in the exo view,
    so a mixed set of targets exercises both source views.
    """
    found = []
    for instance in object_names(scene).values():
        for view, instances in (("ego", frame.ego_instances), ("exo", frame.exo_instances)):
            if (instances == instance).mean() >= MIN_PROMPT_FRACTION:
                found.append((instance, view))
                break
    if len(found) < count:
        raise ConfigError(f"the bench scene shows {len(found)} objects on its first frame; expected at least "
                          f"{count} for --targets {count} (ask for fewer targets)")
    return found[:count]


def _source_mask(frame: SyntheticFrame, instance: int, view: str) -> np.ndarray:
    return (frame.ego_instances if view == "ego" else frame.exo_instances) == instance


def _new_run(model, config: BenchConfig, count: int, scene: SceneConfig, first: SyntheticFrame) -> _Run:
    # The prompts are ground-truth masks of distinct objects: the overlap refusal is not what is measured.
    tracker = CorrespondenceTracker(model, replace(config.tracker, max_targets=max(count, config.tracker.max_targets),
                                                   max_prompt_overlap=1.0))
    objects = {}
    for instance, view in bench_objects(scene, first, count):
        target_id, _ = tracker.add_target(view, first.ego_image, first.exo_image,
                                          mask=_source_mask(first, instance, view))
        objects[target_id] = (instance, view)
    return _Run(count, tracker, objects, [], [], {})


def _step(run: _Run, frame: SyntheticFrame, protocol: str) -> None:
    given = None
    if protocol == "benchmark":
        given = {target_id: _source_mask(frame, instance, view) for target_id, (instance, view) in run.objects.items()}
    begin, begin_cpu = time.perf_counter(), time.process_time()
    results = run.tracker.step_all(frame.ego_image, frame.exo_image, source_masks=given)
    run.totals.append(1e3 * (time.perf_counter() - begin))
    run.cpu.append(1e3 * (time.process_time() - begin_cpu))
    run.skipped += sum(result.skipped for result in results.values())
    for name, ms in next(iter(results.values())).timings_ms.items():
        run.stages.setdefault(name, []).append(ms)


def _bytes_per_target(run: _Run) -> dict[int, int]:
    return {target_id: status.memory["bytes"] for target_id, status in run.tracker.targets().items()}


def _after_warmup(values: list[float]) -> list[float]:
    return values[WARMUP:] or values


def _report(run: _Run, one_target: _Run | None) -> dict[str, Any]:
    timed, cpu = _after_warmup(run.totals), _after_warmup(run.cpu)
    window = max(1, len(timed) // 10)
    report = {
        "targets": run.count, "sources": sorted(view for _, view in run.objects.values()),
        "skipped_results": run.skipped,
        "ms_per_pair_median": _median(timed), "ms_per_pair_p95": _p95(timed),
        "pairs_per_s": 1e3 / _median(timed), "cpu_ms_per_pair_median": _median(cpu),
        "ms_per_pair_early": _median(timed[:window]), "ms_per_pair_end": _median(timed[-window:]),
        "stage_ms_median": {name: _median(_after_warmup(v)) for name, v in run.stages.items()},
        "memory": {str(k): v.memory for k, v in run.tracker.targets().items()},
        "target_bytes_early": run.bytes_early, "target_bytes_end": _bytes_per_target(run),
    }
    if one_target is not None and one_target is not run:
        one, one_cpu = _after_warmup(one_target.totals), _after_warmup(one_target.cpu)
        report["cost_vs_one_target"] = _median(timed) / _median(one)
        report["cost_vs_one_target_per_pair"] = _median([mine / theirs for mine, theirs in zip(timed, one)])
        report["cpu_cost_vs_one_target"] = _median(cpu) / _median(one_cpu)
    return report


def render_pool(config: BenchConfig, scene: SceneConfig | None = None) -> list:
    """Set the thread count and render the looped scene (`bench_scene(config)` when None)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    return list(render_scene(scene or bench_scene(config)))


def bench_scene(config: BenchConfig, num_objects: int | None = None) -> SceneConfig:
    """The looped scene at the configured camera sizes, with `num_objects` (the scene default when None)."""
    objects = {} if num_objects is None else {"num_objects": num_objects}
    return SceneConfig(seed=7, num_frames=POOL_FRAMES, ego_size=config.ego_size, exo_size=config.exo_size, **objects)


def run(config: BenchConfig, progress: bool = True) -> dict[str, Any]:
    """Stream `config.frames` pairs through one tracker per target count; measure time and memory."""
    # A crowded room, so that up to eight objects can be prompted on the first frame.
    scene = bench_scene(config, MAX_OBJECTS)
    pool = render_pool(config, scene)
    model = (load_checkpoint(config.checkpoint, preset=config.preset)[0] if config.checkpoint
             else build_preset(config.preset or "nano", seed=0))
    device = torch.device(config.tracker.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    runs = [_new_run(model, config, count, scene, pool[0]) for count in config.targets]
    rss_early = cuda_early = None
    early_mark = max(1, config.frames // 10)
    for i in tqdm(range(1, config.frames + 1), disable=not progress, desc="bench", unit="pair"):
        frame = pool[i % POOL_FRAMES]
        for turn in range(len(runs)):
            _step(runs[(i + turn) % len(runs)], frame, config.protocol)
        if i == early_mark:
            rss_early = _rss_mb()
            cuda_early = torch.cuda.memory_allocated(device) / 2**20 if cuda else None
            for one in runs:
                one.bytes_early = _bytes_per_target(one)
    one_target = next((one for one in runs if one.count == 1), None)
    report = {
        "preset": config.preset, "checkpoint": config.checkpoint, "image_size": model.image_size,
        "device": str(device), "dtype": config.tracker.dtype, "threads": torch.get_num_threads(),
        "protocol": config.protocol, "frames": config.frames, "ego_size": list(config.ego_size),
        "exo_size": list(config.exo_size), "compression": config.tracker.compression,
        "capacity": config.tracker.capacity,
        "rss_mb_early": rss_early, "rss_mb_end": _rss_mb(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    if cuda:
        report["cuda_mb_early"] = cuda_early
        report["cuda_mb_end"] = torch.cuda.memory_allocated(device) / 2**20
        report["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        report["device_name"] = torch.cuda.get_device_name(device)
    if len(runs) == 1:
        return {**report, **_report(runs[0], None)}
    report["runs"] = {str(one.count): _report(one, one_target) for one in runs}
    return report


def bench_config(preset: str, frames: int, ego: tuple[int, int], exo: tuple[int, int], protocol: str,
                 checkpoint: str | None, threads: int | None, targets: tuple[int, ...] = (1,),
                 **tracker: Any) -> BenchConfig:
    """BenchConfig from flat command-line values."""
    return BenchConfig(preset, checkpoint, frames, ego, exo, protocol, threads, replace(TrackerConfig(), **tracker),
                       targets)


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


__all__ = ["BenchConfig", "bench_config", "bench_objects", "compare", "render_pool", "run"]
