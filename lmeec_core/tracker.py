"""Streaming ego/exo correspondence: give the target once, then one call per synchronised frame pair.

`CorrespondenceTracker` wraps the tensor engine with what a robot or an evaluation loop needs:
input checks with clear refusals, the official preprocessing, either view as the source, source
view tracking when no per-frame source mask is given, results at each camera's native resolution,
and per-stage timings. State is bounded: the two memory banks, a window of recent frames, the prompt.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np
import torch

from . import preprocess as pp
from .errors import ConfigError, InputError, StateError
from .inference import CorrespondenceEngine, Probe, no_probe
from .memory import BANK_POLICIES, BANKS, COMPRESSIONS, BankView, DualMemory
from .model import LMEEC, MaskPrediction, ViewFeatures, build_preset, load_checkpoint
from .model.hiera_windows import trunk_features

VIEWS = ("ego", "exo")
DTYPES = ("fp32", "bf16")
# Speed-ups that change results by float rounding only (parity tolerances); OFFICIAL runs none of them.
SPEEDUPS = (
    "batch_views",  # both views through the image encoder as one batch
    "unpadded_windows",  # Hiera's windowed attention without projecting the window padding
)


def parse_speedups(text: str) -> tuple[str, ...]:
    """'all', 'none' or comma-separated names from SPEEDUPS (command-line and parameter spelling)."""
    if text.strip() == "all":
        return SPEEDUPS
    names = tuple(name.strip() for name in text.split(",") if name.strip() and name.strip() != "none")
    unknown = [name for name in names if name not in SPEEDUPS]
    if unknown:
        raise ConfigError(f"unknown speed-up(s) {unknown}; expected 'all', 'none' or names from {SPEEDUPS}")
    return names


@dataclass(frozen=True)
class TrackerConfig:
    """How the tracker runs; the defaults are the paper's method on the robot."""

    device: str = "cpu"
    dtype: str = "fp32"  # "bf16": autocast (CUDA, or CPU where supported)
    compression: str = "merge"  # "merge" (paper) | "drop" (official code) | "fifo"
    capacity: int = 6  # entries per memory bank (M)
    bank_policy: str = "fill"  # "fill" (banks refill after skipped frames) | "official" (spec 3.2)
    banks: str = "dual"  # "dual" | "source" | "target"
    visibility_threshold: float = 0.5  # on Correspondence.score
    max_time_gap_s: float = 2.0  # stamps going backwards or jumping further reset the memory
    pointer_frames: int = 16  # SAM 2's min(num_frames, 16); the official protocol uses the take length
    compile: bool = False  # torch.compile the image encoder's trunk
    compile_backend: str = "inductor"  # torch.compile backend ("eager" only traces: a quick check of the path)
    speedups: tuple[str, ...] = SPEEDUPS  # named numerics-changing speed-ups (float rounding only)

    def validate(self) -> "TrackerConfig":
        checks = [
            (self.dtype in DTYPES, f"dtype {self.dtype!r}; expected one of {DTYPES}"),
            (self.compression in COMPRESSIONS, f"compression {self.compression!r}; expected one of {COMPRESSIONS}"),
            (self.banks in BANKS, f"banks {self.banks!r}; expected one of {BANKS}"),
            (self.bank_policy in BANK_POLICIES, f"bank_policy {self.bank_policy!r}; expected one of {BANK_POLICIES}"),
            (1 <= self.capacity <= 64, f"capacity {self.capacity}; expected 1..64"),
            (0.0 <= self.visibility_threshold <= 1.0,
             f"visibility_threshold {self.visibility_threshold}; expected 0..1"),
            (self.max_time_gap_s > 0, f"max_time_gap_s {self.max_time_gap_s}; expected > 0"),
            (self.pointer_frames >= 1, f"pointer_frames {self.pointer_frames}; expected >= 1"),
            (set(self.speedups) <= set(SPEEDUPS), f"speedups {self.speedups}; expected names from {SPEEDUPS}"),
        ]
        for ok, text in checks:
            if not ok:
                raise ConfigError("tracker config: " + text)
        return self


OFFICIAL = TrackerConfig(compression="drop", capacity=6, banks="dual", bank_policy="official",
                         speedups=())  # bit-compatible with the official code in fp32


@dataclass
class Correspondence:
    """The target in the other view for one frame pair."""

    frame_index: int
    source_view: str
    target_view: str
    mask: np.ndarray  # bool [H, W] at the target camera's resolution; empty when not visible
    bbox: pp.BBox | None  # (x_min, y_min, x_max, y_max) inclusive pixels; None when empty
    score: float  # object-existence probability in the target view
    visible: bool
    source_mask: np.ndarray  # bool [H, W] at the source camera's resolution
    timings_ms: dict[str, float] = field(default_factory=dict)
    memory_reset: bool = False  # this step reset the memory (time jump)
    skipped: bool = False  # no source object on this frame, nothing predicted (official protocol)
    # Low-res logits [1, 1, h, w] (float32, on the tracker's device) that `mask` was thresholded from;
    # None when nothing is visible. For masks at another size: the official tool thresholds them
    # upsampled straight to the model's square (spec 2.8).
    logits: torch.Tensor | None = None


class _Timer:
    """Per-stage wall time, synchronised with the device so GPU stages are measured fully."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        begin = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.times[name] = self.times.get(name, 0.0) + 1e3 * (time.perf_counter() - begin)

    def done(self) -> dict[str, float]:
        self.times["total"] = 1e3 * (time.perf_counter() - self._start)
        return self.times


class CorrespondenceTracker:
    """LM-EEC as a streaming tracker: `set_target` once, `step` per frame pair."""

    def __init__(self, model: LMEEC, config: TrackerConfig = TrackerConfig(), probe: Probe = no_probe) -> None:
        self.config = config.validate()
        self.device = torch.device(config.device)
        self.model = model.to(self.device).eval()
        if config.compile:
            compiled = torch.compile(trunk_features, backend=config.compile_backend, dynamic=False)
            self.model.trunk_features = compiled
        memory = DualMemory(config.capacity, config.compression, min(config.pointer_frames, model.max_obj_ptrs_in_encoder),
                            config.bank_policy)
        self.engine = CorrespondenceEngine(self.model, memory, config.banks, probe)
        self.probe = probe
        self._source_view: str | None = None
        self._index = 0
        self._last_stamp: float | None = None
        self.target_id = 0

    @classmethod
    def from_checkpoint(cls, path: str | None, preset: str | None = None,
                        config: TrackerConfig = TrackerConfig(), seed: int = 0) -> "CorrespondenceTracker":
        """Load a checkpoint (any accepted format), or a seeded random `preset` when `path` is None."""
        if path is None:
            return cls(build_preset(preset or "nano", seed=seed), config)
        model, _ = load_checkpoint(path, preset=preset)
        return cls(model, config)

    @property
    def has_target(self) -> bool:
        return self._source_view is not None

    @property
    def source_view(self) -> str | None:
        return self._source_view

    def memory_stats(self) -> dict[str, int]:
        stats = self.engine.memory.stats()
        return {"source_bank": stats["source_bank"], "target_bank": stats["target_bank"],
                "pointers": len(self.engine.memory.pointers_for(self._index))}

    def clear(self) -> None:
        """Forget the target and all memory."""
        self.engine.clear()
        self._source_view = None
        self._last_stamp = None

    def reset(self) -> None:
        """Drop temporal memory but keep the target prompt (e.g. after a bag loops)."""
        self.engine.reset()
        self._last_stamp = None

    @contextmanager
    def _inference(self) -> Iterator[None]:
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.dtype == "bf16")
        with torch.inference_mode(), autocast:
            yield

    def _encode(self, images: dict[str, np.ndarray], timer: _Timer) -> dict[str, ViewFeatures]:
        """Each view's image encoded once: one batch of both with `batch_views`, else one by one."""
        size, speedups = self.model.image_size, self.config.speedups
        tensors = {}
        for view, image in images.items():
            with timer.stage("preprocess"):
                tensors[view], resized = pp.image_to_tensor(image, size, self.device)
            self.probe(f"{view}_resized", resized)
        unpadded = "unpadded_windows" in speedups
        if "batch_views" in speedups:
            with timer.stage("encode"):
                batch = self.model.encode_image(torch.cat(list(tensors.values())), unpadded)
                features = dict(zip(tensors, batch.split()))
        else:
            features = {}
            for view, tensor in tensors.items():
                with timer.stage(f"encode_{view}"):
                    features[view] = self.model.encode_image(tensor, unpadded)
        for view, feature in features.items():
            self.probe(f"{view}_features", feature)
        return features

    def set_target(self, view: str, ego_image: np.ndarray, exo_image: np.ndarray, *,
                   mask: np.ndarray | None = None, box: object = None,
                   points: object = None, labels: object = None) -> Correspondence:
        """Mark the target in `view` on this frame pair (mask, box or points) and return its correspondence.

        Any previous target and memory are forgotten. Raises InputError for unusable prompts.
        """
        if view not in VIEWS:
            raise InputError(f"view {view!r} is unknown; expected 'ego' or 'exo'")
        images = {"ego": pp.check_image(ego_image, "ego"), "exo": pp.check_image(exo_image, "exo")}
        shape = images[view].shape[:2]
        given = [name for name, value in (("mask", mask), ("box", box), ("points", points)) if value is not None]
        if len(given) != 1:
            raise InputError(f"set_target got {given or 'no prompt'}; expected exactly one of mask, box or points")
        prompt_mask = pp.check_mask(mask, shape, f"{view} target mask", allow_empty=False) if mask is not None else None
        coords = None
        if box is not None:
            x0, y0, x1, y1 = pp.check_box(box, shape)
            coords, point_labels = np.array([[x0, y0], [x1, y1]]), np.array([2, 3])
        elif points is not None:
            coords, point_labels = pp.check_points(points, labels, shape)
        self.clear()
        self._source_view, self._index = view, 0
        self.target_id += 1
        timer = _Timer(self.device)
        with self._inference():
            features = self._encode(images, timer)
            source = features[view]
            with timer.stage("prompt"):
                if prompt_mask is not None:
                    mask_t, pointer = pp.mask_to_tensor(prompt_mask, self.model.image_size, self.device), None
                else:
                    prediction = self._segment_prompt(source, coords, point_labels, shape)
                    mask_t, pointer = (prediction.high_res > 0).float(), prediction.obj_ptr
                    prompt_mask = pp.logits_to_mask(prediction.low_res, shape)
                if not prompt_mask.any():
                    self.clear()
                    raise InputError(f"the {given[0]} prompt selects nothing in the {view} image; "
                                     "expected a prompt on a visible object")
                memory = self.engine.encode_source_memory(source, mask_t)
                self.engine.set_prompt(self._index, source, memory, pointer)
            banks = self.engine.memory.banks_for(self._index)
            return self._cross_view(images, features, mask_t, prompt_mask, memory, None, timer, banks)

    def _segment_prompt(self, source: ViewFeatures, coords: np.ndarray, labels: np.ndarray,
                        shape: tuple[int, int]) -> MaskPrediction:
        scaled = pp.scale_points(coords, shape, self.model.image_size)
        coords_t = torch.as_tensor(scaled, dtype=torch.float32, device=self.device)[None]
        labels_t = torch.as_tensor(labels, dtype=torch.int32, device=self.device)[None]
        return self.model.segment_prompt(source, coords_t, labels_t)

    def step(self, ego_image: np.ndarray, exo_image: np.ndarray, *,
             source_mask: np.ndarray | None = None, stamp: float | None = None) -> Correspondence:
        """Process the next synchronised frame pair.

        Without `source_mask` the target is tracked in the source view. With it (benchmark protocol
        or an upstream detector) that mask is used; an empty one skips the frame as the official
        protocol does. `stamp` (seconds) lets the tracker reset its memory on time jumps.
        """
        if self._source_view is None:
            raise StateError("step() called before set_target(); expected a target to be set first")
        images = {"ego": pp.check_image(ego_image, "ego"), "exo": pp.check_image(exo_image, "exo")}
        src_view = self._source_view
        src_shape = images[src_view].shape[:2]
        given = None
        if source_mask is not None:
            given = pp.check_mask(source_mask, src_shape, "source_mask", allow_empty=True)
        memory_reset = self._check_stamp(stamp)
        self._index += 1
        timer = _Timer(self.device)
        if given is not None and not given.any():
            return self._skipped(images, given, timer, memory_reset)
        with self._inference():
            features = self._encode(images, timer)
            source = features[src_view]
            banks = self.engine.memory.banks_for(self._index)
            pointer = None
            if given is None:
                with timer.stage("track_source"):
                    tracked = self.engine.track_source(self._index, source, banks)
                    mask_t, pointer = (tracked.high_res > 0).float(), tracked.obj_ptr
                    given = pp.logits_to_mask(tracked.low_res, src_shape)
                if not mask_t.any():
                    return self._skipped(images, given, timer, memory_reset)
            else:
                mask_t = pp.mask_to_tensor(given, self.model.image_size, self.device)
            with timer.stage("source_memory"):
                memory = self.engine.encode_source_memory(source, mask_t)
            result = self._cross_view(images, features, mask_t, given, memory, pointer, timer, banks)
        return replace(result, memory_reset=memory_reset)

    def _cross_view(self, images: dict[str, np.ndarray], features: dict[str, ViewFeatures],
                    source_mask_t: torch.Tensor, source_mask: np.ndarray, memory: torch.Tensor,
                    pointer: torch.Tensor | None, timer: _Timer, banks: BankView) -> Correspondence:
        src_view, tgt_view = self._source_view, self._other(self._source_view)
        self.probe("source_mask_model", source_mask_t)
        with timer.stage("cross_view"):
            out = self.engine.cross_view(self._index, features[src_view], features[tgt_view], memory, banks, pointer)
        self.probe("prediction", out)
        with timer.stage("postprocess"):
            score = float(torch.sigmoid(out.prediction.score_logit.float()).item())
            visible = score >= self.config.visibility_threshold
            tgt_shape = images[tgt_view].shape[:2]
            logits = out.prediction.low_res.float() if visible else None
            mask = pp.logits_to_mask(logits, tgt_shape) if visible else np.zeros(tgt_shape, bool)
        return Correspondence(self._index, src_view, tgt_view, mask, pp.bbox_of(mask), score, visible,
                              source_mask, timer.done(), logits=logits)

    def _skipped(self, images: dict[str, np.ndarray], source_mask: np.ndarray, timer: _Timer,
                 memory_reset: bool) -> Correspondence:
        """No source object on this frame: nothing is predicted or stored (the official skip)."""
        tgt_view = self._other(self._source_view)
        empty = np.zeros(images[tgt_view].shape[:2], bool)
        return Correspondence(self._index, self._source_view, tgt_view, empty, None, 0.0, False,
                              source_mask, timer.done(), memory_reset, skipped=True)

    def _check_stamp(self, stamp: float | None) -> bool:
        """Reset the memory when time goes backwards or jumps; returns whether it did."""
        if stamp is None:
            return False
        if not np.isfinite(stamp):
            raise InputError(f"stamp {stamp} is not finite; expected seconds as a finite float")
        last, self._last_stamp = self._last_stamp, stamp
        if last is None or 0 <= stamp - last <= self.config.max_time_gap_s:
            return False
        self.engine.reset()
        return True

    @staticmethod
    def _other(view: str) -> str:
        return "exo" if view == "ego" else "ego"
