"""`lmeec evaluate`: run the tracker over processed takes and score it with the EgoExo4D metrics.

Works on synthetic takes and on real processed EgoExo4D takes alike. Two protocols:

* `official`: the source-view GT mask is given on every frame and frames with an empty source
  mask are not predicted (what the LM-EEC paper reports);
* `robot`: the target is given once, on the first frame where it is visible in the source view,
  and tracked from there (what the ROS node does). The prompt is that frame's GT mask, or (`prompt`)
  its bounding box or one click on the mask pixel nearest its centroid, as an operator would give
  them through `~/set_target`.

Outputs, in `out_dir`: `predictions.json` in the EgoExo4D challenge format (RLE + confidence),
`metrics.json` (totals and per-sequence), `per_sequence.csv`, and one PNG of IoU over time per
sequence. Masks are scored at the target image's resolution (GT annotations at a multiple of it are
reduced by nearest sampling), or, with `score_size=480`, as the LM-EEC scripts do: prediction and GT
nearest-sampled to a 480x480 square whatever the camera's aspect ratio (CA's boundary tolerance and LE's
diagonal then match the paper's figures).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
from tqdm import tqdm

from .data.takes import Take, encode_mask, list_takes, open_take
from .errors import InputError
from .metrics import MetricAccumulator
from .preprocess import bbox_of
from .tracker import CorrespondenceTracker

PROTOCOLS = ("official", "robot")
PROMPTS = ("mask", "box", "click")
TASK_KEYS = {"ego2exo": "ego-exo", "exo2ego": "exo-ego"}


class Predictor(Protocol):
    """What the evaluation loop needs from a method: the tracker or a baseline."""

    def predict(self, source_image: np.ndarray, target_image: np.ndarray,
                source_mask: np.ndarray | None, first: bool) -> tuple[np.ndarray, float] | None: ...


def prompt_from_mask(mask: np.ndarray, kind: str) -> dict[str, Any]:
    """`set_target` keyword arguments marking the object of a non-empty GT mask with a mask, box or click."""
    if kind == "mask":
        return {"mask": mask}
    if kind == "box":
        return {"box": bbox_of(mask)}
    ys, xs = np.nonzero(mask)
    nearest = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
    return {"points": [[int(xs[nearest]), int(ys[nearest])]], "labels": [1]}


@dataclass
class TrackerPredictor:
    """The LM-EEC tracker behind the Predictor interface, for either protocol."""

    tracker: CorrespondenceTracker
    source_view: str
    protocol: str
    prompt: str = "mask"

    def predict(self, source_image, target_image, source_mask, first):
        ego, exo = (source_image, target_image) if self.source_view == "ego" else (target_image, source_image)
        if first or not self.tracker.has_target:
            return self._set_target(ego, exo, source_mask, target_image.shape[:2])
        given = source_mask if self.protocol == "official" else None
        result = self.tracker.step(ego, exo, source_mask=given)
        return None if result.skipped else (result.mask, result.score)

    def _set_target(self, ego, exo, source_mask, target_shape):
        """Mark the target; a box or click that selects nothing finds nothing, and is given again on
        the next frame showing the object, as an operator would."""
        if not source_mask.any():
            return np.zeros(target_shape, bool), 0.0
        try:
            result = self.tracker.set_target(self.source_view, ego, exo, **prompt_from_mask(source_mask, self.prompt))
        except InputError:
            return np.zeros(target_shape, bool), 0.0
        return result.mask, result.score


@dataclass
class CopySourceBox:
    """Baseline: the source mask's bounding box, in normalised coordinates, as the target mask."""

    def predict(self, source_image, target_image, source_mask, first):
        box = bbox_of(source_mask)
        if box is None:
            return None
        sh, sw = source_mask.shape
        th, tw = target_image.shape[:2]
        x0, y0, x1, y1 = box
        mask = np.zeros((th, tw), bool)
        mask[int(y0 / sh * th):int((y1 + 1) / sh * th), int(x0 / sw * tw):int((x1 + 1) / sw * tw)] = True
        return mask, 1.0


def _to_shape(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-sample a mask to `shape` (an annotation down to its image, or both to the scoring square)."""
    if mask.shape == shape:
        return mask
    rows = (np.arange(shape[0]) * mask.shape[0] // shape[0])[:, None]
    cols = (np.arange(shape[1]) * mask.shape[1] // shape[1])[None, :]
    return mask[rows, cols]


@dataclass
class Sequence:
    """One (take, object, exo camera, direction) evaluation sequence."""

    take: Take
    obj: str
    source: str
    target: str
    frames: list[str]

    @property
    def key(self) -> str:
        return f"{self.take.name}/{self.obj}/{self.source}_{self.target}"


def sequences(root: str | Path, direction: str, takes: list[str] | None = None) -> Iterator[Sequence]:
    """Every sequence LM-EEC evaluates under `root` for `direction`."""
    for name in takes or list_takes(root):
        take = open_take(Path(root) / name)
        for obj in take.objects:
            for exo in take.annotated_exo_cameras(obj):
                source, target = (take.ego_camera, exo) if direction == "ego2exo" else (exo, take.ego_camera)
                frames = take.frames(obj, exo, direction)
                if frames:
                    yield Sequence(take, obj, source, target, frames)


@dataclass
class SequenceResult:
    key: str
    frames: list[str] = field(default_factory=list)
    iou: list[float] = field(default_factory=list)  # NaN where the GT is empty
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: MetricAccumulator = field(default_factory=MetricAccumulator)


def evaluate_sequence(seq: Sequence, predictor: Predictor, max_frames: int | None = None,
                      score_size: int | None = None) -> SequenceResult:
    """Run one sequence frame by frame (nothing preloaded) and score every predicted frame.

    `score_size`: score (and store) masks on a square of this side instead of the target image.
    """
    result = SequenceResult(seq.key)
    started = False
    for frame in seq.frames[:max_frames]:
        src_img, tgt_img = seq.take.load_image(seq.source, frame), seq.take.load_image(seq.target, frame)
        src_mask = (seq.take.load_mask(seq.obj, seq.source, frame) if seq.take.has_mask(seq.obj, seq.source, frame)
                    else np.zeros(src_img.shape[:2], bool))
        if not started and not src_mask.any():
            continue  # nothing to start from yet (official: skipped; robot: target not yet given)
        output = predictor.predict(src_img, tgt_img, src_mask, first=not started)
        started = True
        if output is None:
            continue
        mask, score = output
        if score_size is not None:
            mask = _to_shape(mask, (score_size, score_size))
        gt = (_to_shape(seq.take.load_mask(seq.obj, seq.target, frame), mask.shape)
              if seq.take.has_mask(seq.obj, seq.target, frame) else np.zeros(mask.shape, bool))
        scores = result.metrics.add(gt, mask)
        result.frames.append(frame)
        result.iou.append(float("nan") if scores.iou is None else scores.iou)
        result.predictions[frame] = {"pred_mask": encode_mask(mask), "confidence": float(score)}
    return result


def _plot_iou(result: SequenceResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.5), dpi=100)
    ax.plot([int(f) if f.isdigit() else i for i, f in enumerate(result.frames)], result.iou, marker=".")
    ax.set(ylim=(0, 1), xlabel="frame", ylabel="IoU", title=result.key)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def evaluate(root: str | Path, predictor_for: Any, out_dir: str | Path, direction: str = "ego2exo",
             protocol: str = "official", takes: list[str] | None = None, max_frames: int | None = None,
             plots: bool = True, score_size: int | None = None, prompt: str = "mask") -> dict[str, Any]:
    """Evaluate every sequence; `predictor_for(sequence)` returns a fresh Predictor per sequence.

    `prompt` is recorded with the figures and checked: the predictors were built with it.
    """
    if prompt not in PROMPTS or (prompt != "mask" and protocol != "robot"):
        raise InputError(f"prompt {prompt!r} with the {protocol} protocol; expected one of {PROMPTS} with the "
                         "robot protocol (the official one gives the GT mask on every frame)")
    if score_size is not None and score_size <= 0:
        raise InputError(f"score size {score_size}; expected a positive side in pixels (the paper: 480)")
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol {protocol!r}; expected one of {PROTOCOLS}")
    if direction not in TASK_KEYS:
        raise InputError(f"direction {direction!r}; expected one of {tuple(TASK_KEYS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = MetricAccumulator()
    results, rows, challenge = [], [], {}
    for seq in tqdm(list(sequences(root, direction, takes)), desc="evaluate", unit="seq"):
        res = evaluate_sequence(seq, predictor_for(seq), max_frames, score_size)
        total.merge(res.metrics)
        results.append(res)
        rows.append({"sequence": res.key, **res.metrics.summary()})
        take = challenge.setdefault(seq.take.name, {"masks": {}, "subsample_idx": seq.take.subsample_idx})
        take["masks"].setdefault(seq.obj, {})[f"{seq.source}_{seq.target}"] = res.predictions
        if plots:
            _plot_iou(res, out / f"iou_{res.key.replace('/', '__')}.png")
    summary = {"direction": direction, "protocol": protocol, "prompt": prompt, "score_size": score_size,
               "total": total.summary(), "sequences": rows}
    task = TASK_KEYS[direction]
    (out / "predictions.json").write_text(json.dumps({task: {"version": "xx", "challenge": "xx", "results": challenge}}))
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    _write_table(rows, out / "per_sequence.csv")
    return summary


def _write_table(rows: list[dict[str, Any]], path: Path) -> None:
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
