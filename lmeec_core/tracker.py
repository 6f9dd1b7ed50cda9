"""Streaming ego/exo correspondence: give each target once, then one call per synchronised frame pair.

`CorrespondenceTracker` wraps the tensor engine with what a robot or an evaluation loop needs:
input checks with clear refusals, the official preprocessing, either view as the source, source
view tracking when no per-frame source mask is given, results at each camera's native resolution,
and per-stage timings. It follows up to `max_targets` objects at once: each view's image is
encoded once per pair whatever their number, and the per-target heads run as one batch (see
`inference`). State is bounded: per target the two memory banks, a window of recent frames, the
prompt and its latest masks.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator, Mapping

import numpy as np
import torch

from . import preprocess as pp
from .errors import ConfigError, InputError, StateError, TargetLimitError, TargetOverlapError, UnknownTargetError
from .inference import CorrespondenceEngine, Probe, TargetState, no_probe
from .memory import BANK_POLICIES, BANKS, COMPRESSIONS, BankView, DualMemory
from .model import LMEEC, MaskPrediction, ViewFeatures, build_preset, load_checkpoint
from .model.hiera_windows import trunk_features

VIEWS = ("ego", "exo")
DTYPES = ("fp32", "bf16")
SOURCE_LOST = ("follow", "skip")
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
    max_targets: int = 8  # objects followed at once
    max_prompt_overlap: float = 0.5  # a prompt with a higher IoU with another target's current mask is refused
    first_target_id: int = 1  # ids are issued from here (a node keeps them unique over several trackers)
    # When source tracking loses the target: "follow" it on in the target view from the last source
    # memory and the banks, or "skip" the frame (nothing predicted, as the official protocol does).
    source_lost: str = "follow"

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
            (self.max_targets >= 1, f"max_targets {self.max_targets}; expected >= 1"),
            (0.0 <= self.max_prompt_overlap <= 1.0, f"max_prompt_overlap {self.max_prompt_overlap}; expected 0..1"),
            (self.first_target_id >= 1, f"first_target_id {self.first_target_id}; expected >= 1"),
            (self.source_lost in SOURCE_LOST, f"source_lost {self.source_lost!r}; expected one of {SOURCE_LOST}"),
        ]
        for ok, text in checks:
            if not ok:
                raise ConfigError("tracker config: " + text)
        return self


OFFICIAL = TrackerConfig(compression="drop", capacity=6, banks="dual", bank_policy="official", source_lost="skip",
                         speedups=())  # bit-compatible with the official code in fp32


@dataclass
class Correspondence:
    """The target in the other view for one frame pair."""

    frame_index: int  # frames since this target was (re-)set; 0 is the prompt frame
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
    target_id: int = 0  # the target this result is for (issued from first_target_id, never reused)


@dataclass(frozen=True)
class TargetStatus:
    """One target as the tracker holds it (for diagnostics)."""

    target_id: int
    source_view: str
    frame_index: int
    memory: dict[str, int]  # source_bank, target_bank, pointers, stored (frames), bytes (tensors held)


@dataclass
class _Target:
    """A followed object: its prompt view, its engine state, and its latest masks for overlap checks."""

    target_id: int
    source_view: str
    state: TargetState
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # view -> bool [S, S] at the model input size


@dataclass
class _Prompt:
    """A checked prompt in source-camera pixels: a binary mask, or points with SAM labels (box: corners 2, 3)."""

    kind: str  # "mask" | "box" | "points"
    mask: np.ndarray | None = None
    coords: np.ndarray | None = None
    labels: np.ndarray | None = None


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
    """LM-EEC as a streaming tracker of one or several targets.

    Several targets: `add_target` per object (returns its id), `step_all` per frame pair (one
    result per id), `remove_target`/`clear`. One target, as before: `set_target` (replaces all
    targets) and `step` (one result). Refusals raise `LmeecError` subclasses and change nothing.
    """

    def __init__(self, model: LMEEC, config: TrackerConfig = TrackerConfig(), probe: Probe = no_probe) -> None:
        self.config = config.validate()
        self.device = torch.device(config.device)
        self.model = model.to(self.device).eval()
        if config.compile:
            compiled = torch.compile(trunk_features, backend=config.compile_backend, dynamic=False)
            self.model.trunk_features = compiled
        self.engine = CorrespondenceEngine(self.model, config.banks, probe)
        self.probe = probe
        self._targets: dict[int, _Target] = {}
        self._next_id = config.first_target_id
        self._last_stamp: float | None = None

    @classmethod
    def from_checkpoint(cls, path: str | None, preset: str | None = None,
                        config: TrackerConfig = TrackerConfig(), seed: int = 0) -> "CorrespondenceTracker":
        """Load a checkpoint (any accepted format), or a seeded random `preset` when `path` is None."""
        if path is None:
            return cls(build_preset(preset or "nano", seed=seed), config)
        model, _ = load_checkpoint(path, preset=preset)
        return cls(model, config)

    def _new_state(self) -> TargetState:
        config = self.config
        pointer_frames = min(config.pointer_frames, self.model.max_obj_ptrs_in_encoder)
        return TargetState(DualMemory(config.capacity, config.compression, pointer_frames, config.bank_policy))

    # --- what is held ---------------------------------------------------------------------------

    @property
    def has_target(self) -> bool:
        return bool(self._targets)

    @property
    def target_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._targets))

    def targets(self) -> dict[int, TargetStatus]:
        """Every target's source view, frame index and memory sizes, by id."""
        return {target_id: self._status(self._targets[target_id]) for target_id in self.target_ids}

    @property
    def target_id(self) -> int:
        """The single target's id (0 when none); StateError when several are set."""
        target = self._only_target("target_id")
        return 0 if target is None else target.target_id

    @property
    def source_view(self) -> str | None:
        """The single target's source view (None when none); StateError when several are set."""
        target = self._only_target("source_view")
        return None if target is None else target.source_view

    def memory_stats(self) -> dict[str, int]:
        """The single target's memory sizes; `targets()` gives every target's."""
        target = self._only_target("memory_stats()")
        if target is None:
            raise StateError("memory_stats() called with no target set; expected set_target() first")
        return self._status(target).memory

    def _status(self, target: _Target) -> TargetStatus:
        memory, index = target.state.memory, target.state.index
        stats = memory.stats()
        held = [*memory.tensors(), *target.masks.values()]
        if target.state.prompt is not None:
            held += [target.state.prompt.memory, target.state.prompt.pointer]
        sizes = {"source_bank": stats["source_bank"], "target_bank": stats["target_bank"],
                 "pointers": len(memory.pointers_for(index)), "stored": memory.stored,
                 "bytes": _storage_bytes(held)}
        return TargetStatus(target.target_id, target.source_view, index, sizes)

    def _only_target(self, caller: str) -> _Target | None:
        """The target of the single-target API (None when none); several targets are refused."""
        if len(self._targets) > 1:
            raise StateError(f"{caller} serves one target but {len(self._targets)} are set "
                             f"(ids {list(self.target_ids)}); expected step_all() and targets() for several")
        return next(iter(self._targets.values()), None)

    def _known(self, target_id: int) -> _Target:
        target = self._targets.get(target_id)
        if target is None:
            raise UnknownTargetError(f"target {target_id} is unknown; expected one of the current ids "
                                     f"{list(self.target_ids)}")
        return target

    # --- changing the targets -------------------------------------------------------------------

    def clear(self) -> None:
        """Forget every target and all memory (ids are not reused)."""
        self._targets = {}
        self._last_stamp = None

    def remove_target(self, target_id: int) -> None:
        """Stop following one target; the others are untouched. UnknownTargetError for an unknown id."""
        del self._targets[self._known(target_id).target_id]

    def reset(self) -> None:
        """Drop temporal memory but keep the targets' prompts (e.g. after a bag loops)."""
        for target in self._targets.values():
            target.state.memory.clear()
        self._last_stamp = None

    def set_target(self, view: str, ego_image: np.ndarray, exo_image: np.ndarray, *,
                   mask: np.ndarray | None = None, box: object = None,
                   points: object = None, labels: object = None) -> Correspondence:
        """Follow only this target from now on: mark it in `view` on this frame pair (mask, box or points).

        Every previous target and memory are forgotten once the prompt is accepted; a refused
        prompt (InputError) keeps them. The target gets a new id.
        """
        prompt = dict(mask=mask, box=box, points=points, labels=labels)
        target, result = self._prompted(view, ego_image, exo_image, prompt, self._next_id, others=[])
        self.clear()
        self._commit(target)
        return result

    def add_target(self, view: str, ego_image: np.ndarray, exo_image: np.ndarray, *,
                   mask: np.ndarray | None = None, box: object = None, points: object = None,
                   labels: object = None, target_id: int | None = None) -> tuple[int, Correspondence]:
        """Follow one more target, or re-target `target_id`, marked in `view` on this frame pair.

        `target_id` None or 0 adds a target with a new id; an existing id re-targets that one (new
        prompt, fresh memory, same id). Returns the id and the prompt frame's correspondence.
        Refused, with nothing changed: an unknown id (UnknownTargetError), a new target beyond
        `max_targets` (TargetLimitError), a prompt whose mask overlaps another target's current
        mask in `view` with IoU > `max_prompt_overlap` (TargetOverlapError), unusable input (InputError).
        """
        if target_id:
            self._known(target_id)
        elif len(self._targets) >= self.config.max_targets:
            raise TargetLimitError(f"{len(self._targets)} targets are set (ids {list(self.target_ids)}), the "
                                   f"maximum (max_targets); expected remove_target() first or a target_id to re-target")
        new_id = target_id or self._next_id
        others = [target for target in self._targets.values() if target.target_id != new_id]
        prompt = dict(mask=mask, box=box, points=points, labels=labels)
        target, result = self._prompted(view, ego_image, exo_image, prompt, new_id, others)
        self._commit(target)
        return new_id, result

    def _commit(self, target: _Target) -> None:
        self._targets[target.target_id] = target
        self._next_id = max(self._next_id, target.target_id + 1)

    def _prompted(self, view: str, ego_image: np.ndarray, exo_image: np.ndarray, prompt: dict[str, object],
                  target_id: int, others: list[_Target]) -> tuple[_Target, Correspondence]:
        """A target from a prompt (mask, box or points and labels), and its prompt-frame result.

        The tracker's own state is not touched: the caller commits the target once it is accepted.
        """
        if view not in VIEWS:
            raise InputError(f"view {view!r} is unknown; expected 'ego' or 'exo'")
        images = _check_images(ego_image, exo_image)
        shape = images[view].shape[:2]
        prompt = _check_prompt(view, shape, **prompt)
        target = _Target(target_id, view, self._new_state())
        timer = _Timer(self.device)
        with self._inference():
            features = self._encode(images, timer)
            source = features[view]
            with timer.stage("prompt"):
                mask_t, pointer, prompt_mask = self._prompt_mask(source, prompt, shape)
                if not prompt_mask.any():
                    raise InputError(f"the {prompt.kind} prompt selects nothing in the {view} image; "
                                     "expected a prompt on a visible object")
                self._check_overlap(view, mask_t, others)
                memory = self.engine.encode_source_memory(source, mask_t)
                self.engine.set_prompt(target.state, source, memory, pointer)
            banks = [target.state.memory.banks_for(target.state.index)]
            result, = self._cross_view(images, features, view, [target], mask_t, [prompt_mask], memory, [None],
                                       banks, timer)
        return target, replace(result, timings_ms=timer.done())

    def _prompt_mask(self, source: ViewFeatures, prompt: _Prompt,
                     shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
        """The prompt as a model-size mask, its object pointer (None for a mask prompt) and a camera mask."""
        if prompt.mask is not None:
            return pp.mask_to_tensor(prompt.mask, self.model.image_size, self.device), None, prompt.mask
        scaled = pp.scale_points(prompt.coords, shape, self.model.image_size)
        coords_t = torch.as_tensor(scaled, dtype=torch.float32, device=self.device)[None]
        labels_t = torch.as_tensor(prompt.labels, dtype=torch.int32, device=self.device)[None]
        prediction: MaskPrediction = self.model.segment_prompt(source, coords_t, labels_t)
        return (prediction.high_res > 0).float(), prediction.obj_ptr, pp.logits_to_mask(prediction.low_res, shape)

    def _check_overlap(self, view: str, mask_t: torch.Tensor, others: list[_Target]) -> None:
        """Refuse a prompt on an object another target already follows (IoU with its current mask in `view`)."""
        prompt = mask_t[0, 0] > 0
        for other in others:
            current = other.masks.get(view)
            if current is None:
                continue
            iou = float((prompt & current).sum()) / max(1.0, float((prompt | current).sum()))
            if iou > self.config.max_prompt_overlap:
                raise TargetOverlapError(
                    f"the prompt overlaps target {other.target_id}'s current {view} mask (IoU {iou:.2f} > "
                    f"max_prompt_overlap {self.config.max_prompt_overlap}); expected another object, or "
                    f"target_id={other.target_id} to re-target that one")

    # --- frame pairs ----------------------------------------------------------------------------

    def step(self, ego_image: np.ndarray, exo_image: np.ndarray, *,
             source_mask: np.ndarray | None = None, stamp: float | None = None) -> Correspondence:
        """Process the next synchronised frame pair for the single target (`step_all` for several).

        Without `source_mask` the target is tracked in the source view. With it (benchmark protocol
        or an upstream detector) that mask is used; an empty one skips the frame as the official
        protocol does. `stamp` (seconds) lets the tracker reset its memory on time jumps.
        """
        target = self._only_target("step()")
        if target is None:
            raise StateError("step() called before set_target(); expected a target to be set first")
        images = _check_images(ego_image, exo_image)
        masks = {} if source_mask is None else {target.target_id: source_mask}
        given = self._check_source_masks(masks, images, "source_mask")
        return self._step(images, given, stamp)[target.target_id]

    def step_all(self, ego_image: np.ndarray, exo_image: np.ndarray, *,
                 source_masks: Mapping[int, np.ndarray] | None = None,
                 stamp: float | None = None) -> dict[int, Correspondence]:
        """Process the next synchronised frame pair for every target; results by id, in id order.

        `source_masks` gives per-frame source masks for some targets (by id; the others are
        tracked in their source view), with `step`'s meaning. Each image is encoded once.
        """
        if not self._targets:
            raise StateError("step_all() called before add_target(); expected a target to be set first")
        images = _check_images(ego_image, exo_image)
        given = self._check_source_masks(source_masks or {}, images, "source_masks[{target_id}]")
        return self._step(images, given, stamp)

    def _check_source_masks(self, masks: Mapping[int, object], images: dict[str, np.ndarray],
                            name: str) -> dict[int, np.ndarray]:
        checked = {}
        for target_id, mask in masks.items():
            view = self._known(target_id).source_view
            label = name.format(target_id=target_id)
            checked[target_id] = pp.check_mask(mask, images[view].shape[:2], label, allow_empty=True)
        return checked

    def _step(self, images: dict[str, np.ndarray], given: dict[int, np.ndarray],
              stamp: float | None) -> dict[int, Correspondence]:
        memory_reset = self._check_stamp(stamp)
        targets = [self._targets[target_id] for target_id in self.target_ids]
        for target in targets:
            target.state.index += 1
        timer = _Timer(self.device)
        results = {t.target_id: self._skipped(t, images, given[t.target_id])
                   for t in targets if t.target_id in given and not given[t.target_id].any()}
        active = [target for target in targets if target.target_id not in results]
        if active:
            with self._inference():
                features = self._encode(images, timer)
                for view in VIEWS:
                    group = [target for target in active if target.source_view == view]
                    if group:
                        results.update(self._step_view(view, group, images, features, given, timer))
        timings = timer.done()
        return {target_id: replace(results[target_id], timings_ms=dict(timings), memory_reset=memory_reset)
                for target_id in sorted(results)}

    def _step_view(self, view: str, targets: list[_Target], images: dict[str, np.ndarray],
                   features: dict[str, ViewFeatures], given: dict[int, np.ndarray],
                   timer: _Timer) -> dict[int, Correspondence]:
        """One pair for the targets whose source is `view`: their source masks, then one cross-view batch."""
        source, shape = features[view], images[view].shape[:2]
        banks = {t.target_id: t.state.memory.banks_for(t.state.index) for t in targets}
        masks_t, source_masks, pointers = {}, {}, {}
        tracked = [target for target in targets if target.target_id not in given]
        if tracked:
            with timer.stage("track_source"):
                prediction = self.engine.track_source([t.state for t in tracked], source,
                                                      [banks[t.target_id] for t in tracked])
                for row, target in enumerate(tracked):
                    masks_t[target.target_id] = (prediction.high_res[row:row + 1] > 0).float()
                    pointers[target.target_id] = prediction.obj_ptr[row:row + 1]
                    source_masks[target.target_id] = pp.logits_to_mask(prediction.low_res[row:row + 1], shape)
        for target in targets:
            if target.target_id in given:
                mask = given[target.target_id]
                masks_t[target.target_id] = pp.mask_to_tensor(mask, self.model.image_size, self.device)
                source_masks[target.target_id], pointers[target.target_id] = mask, None
        lost = [target for target in tracked if not masks_t[target.target_id].any()]
        remembered = self._lost_memories(lost)
        results = {t.target_id: self._skipped(t, images, source_masks[t.target_id])
                   for t in lost if t.target_id not in remembered}
        kept = [target for target in targets if target.target_id not in results]
        if kept:
            ids = [target.target_id for target in kept]
            batch_masks = torch.cat([masks_t[target_id] for target_id in ids])
            with timer.stage("source_memory"):
                memory = self._source_memory(source, ids, masks_t, remembered)
            outputs = self._cross_view(images, features, view, kept, batch_masks,
                                       [source_masks[i] for i in ids], memory, [pointers[i] for i in ids],
                                       [banks[i] for i in ids], timer)
            results.update(zip(ids, outputs))
        return results

    def _lost_memories(self, lost: list[_Target]) -> dict[int, torch.Tensor]:
        """The last source memory of each target the source view has lost, where it is to be followed.

        With `source_lost="follow"` such a target is still looked for in the target view (the head
        camera looks away while the external one still sees the object); a target with nothing
        stored since its memory was cleared is skipped.
        """
        if self.config.source_lost != "follow":
            return {}
        latest = {target.target_id: target.state.memory.latest_source() for target in lost}
        return {target_id: memory for target_id, memory in latest.items() if memory is not None}

    def _source_memory(self, source: ViewFeatures, ids: list[int], masks_t: dict[int, torch.Tensor],
                       remembered: dict[int, torch.Tensor]) -> torch.Tensor:
        """Source memory [N, K, mem_dim], column per target: this frame's mask encoded once, or the
        remembered memory of a target the source view has lost."""
        seen = [target_id for target_id in ids if target_id not in remembered]
        encoded = self.engine.encode_source_memory(source, torch.cat([masks_t[i] for i in seen])) if seen else None
        if not remembered:
            return encoded
        columns = dict(zip(seen, encoded.unbind(1) if seen else ())) | {i: m[:, 0] for i, m in remembered.items()}
        return torch.stack([columns[target_id] for target_id in ids], dim=1)

    def _cross_view(self, images: dict[str, np.ndarray], features: dict[str, ViewFeatures], src_view: str,
                    targets: list[_Target], source_masks_t: torch.Tensor, source_masks: list[np.ndarray],
                    memory: torch.Tensor, pointers: list[torch.Tensor | None], banks: list[BankView],
                    timer: _Timer) -> list[Correspondence]:
        """The targets' masks in the other view (one batch, row per target) and their results."""
        tgt_view = _other(src_view)
        self.probe("source_mask_model", source_masks_t)
        with timer.stage("cross_view"):
            out = self.engine.cross_view([t.state for t in targets], features[tgt_view], memory, banks, pointers)
        self.probe("prediction", out)
        results = []
        with timer.stage("postprocess"):
            scores = torch.sigmoid(out.prediction.score_logit.float())[:, 0].tolist()
            tgt_shape = images[tgt_view].shape[:2]
            for row, target in enumerate(targets):
                visible = scores[row] >= self.config.visibility_threshold
                logits = out.prediction.low_res[row:row + 1].float() if visible else None
                mask = pp.logits_to_mask(logits, tgt_shape) if visible else np.zeros(tgt_shape, bool)
                predicted = out.prediction.high_res[row, 0] > 0
                target.masks = {src_view: source_masks_t[row, 0] > 0,
                                tgt_view: predicted if visible else torch.zeros_like(predicted)}
                results.append(Correspondence(target.state.index, src_view, tgt_view, mask, pp.bbox_of(mask),
                                              scores[row], visible, source_masks[row], logits=logits,
                                              target_id=target.target_id))
        return results

    def _skipped(self, target: _Target, images: dict[str, np.ndarray], source_mask: np.ndarray) -> Correspondence:
        """No source object on this frame: nothing is predicted or stored (the official skip)."""
        tgt_view = _other(target.source_view)
        empty = np.zeros(images[tgt_view].shape[:2], bool)
        target.masks = {}
        return Correspondence(target.state.index, target.source_view, tgt_view, empty, None, 0.0, False,
                              source_mask, skipped=True, target_id=target.target_id)

    def _check_stamp(self, stamp: float | None) -> bool:
        """Reset every target's memory when time goes backwards or jumps; returns whether it did."""
        if stamp is None:
            return False
        if not np.isfinite(stamp):
            raise InputError(f"stamp {stamp} is not finite; expected seconds as a finite float")
        last, self._last_stamp = self._last_stamp, stamp
        if last is None or 0 <= stamp - last <= self.config.max_time_gap_s:
            return False
        for target in self._targets.values():
            target.state.memory.clear()
        return True

    # --- images ---------------------------------------------------------------------------------

    @contextmanager
    def _inference(self) -> Iterator[None]:
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.dtype == "bf16")
        with torch.inference_mode(), autocast:
            yield

    def _encode(self, images: dict[str, np.ndarray], timer: _Timer) -> dict[str, ViewFeatures]:
        """Each view's image encoded once per frame pair whatever the number of targets: one batch of
        both views with `batch_views`, else one by one."""
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


def _storage_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors` (views of one storage count once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def _other(view: str) -> str:
    return "exo" if view == "ego" else "ego"


def _check_images(ego_image: object, exo_image: object) -> dict[str, np.ndarray]:
    return {"ego": pp.check_image(ego_image, "ego"), "exo": pp.check_image(exo_image, "exo")}


def _check_prompt(view: str, shape: tuple[int, int], mask: object, box: object, points: object,
                  labels: object) -> _Prompt:
    """Exactly one usable prompt on the `view` image of `shape`: a binary mask, or SAM points and labels."""
    given = [name for name, value in (("mask", mask), ("box", box), ("points", points)) if value is not None]
    if len(given) != 1:
        raise InputError(f"set_target got {given or 'no prompt'}; expected exactly one of mask, box or points")
    if mask is not None:
        return _Prompt("mask", mask=pp.check_mask(mask, shape, f"{view} target mask", allow_empty=False))
    if box is not None:
        x0, y0, x1, y1 = pp.check_box(box, shape)
        return _Prompt("box", coords=np.array([[x0, y0], [x1, y1]]), labels=np.array([2, 3]))
    coords, point_labels = pp.check_points(points, labels, shape)
    return _Prompt("points", coords=coords, labels=point_labels)
