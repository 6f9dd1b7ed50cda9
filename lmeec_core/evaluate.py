"""`lmeec evaluate`: run the tracker over processed takes and score it with the EgoExo4D metrics.

Works on synthetic takes and on real processed EgoExo4D takes alike. Two protocols:

* `official`: the source-view GT mask is given on every frame and frames with an empty source
  mask are not predicted (what the LM-EEC paper reports);
* `robot`: the target is given once, on the first frame where it is visible in the source view,
  and tracked from there (what the ROS node does). The prompt is that frame's GT mask, or (`prompt`)
  its bounding box or one click on the mask pixel nearest its centroid, as an operator would give
  them through `~/set_target`.

Outputs, in `out_dir`: `predictions.json` in the EgoExo4D challenge format (RLE + confidence),
`groundtruth.json` (the GT file the scale's official scorer reads, see below), `metrics.json` (totals and
per-sequence), `per_sequence.csv`, and one PNG of IoU over time per sequence.

Masks are written and scored at a `Scale` (lmeec_core.scoring): the target camera's resolution, the
N x N square of LM-EEC's tool and `compute_metrics.py`, or the EgoExo4D challenge's aspect-kept,
long-side-480 size. The tracker's masks at another size are thresholded from its logits upsampled
straight to it (for the square of the model's input size, exactly what the official tool writes);
methods without logits are nearest-sampled. The confidence written is LM-EEC's (`merge_results.py`:
1 when the mask covers more than 0.1 % of its image), and it is the one the balanced accuracy uses.
`predictions.json` holds Exo->Ego results under both task keys: "exo-ego" for the challenge scorer,
"ego-exo" because that is the only key `compute_metrics.py` reads. `groundtruth.json` is, for the
camera and square scales, compute_metrics' GT file (its structure, masks at the scale, resized with
the scale's `gt_resize`); for the challenge, the file `process_annotations.py` makes, with each
camera's annotated frames taken from its annotation keys (processed takes carry no other list).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

import numpy as np
import torch
from tqdm import tqdm

from .data.takes import Take, encode_mask, list_takes, open_take
from .errors import InputError
from .metrics import MetricAccumulator, existence_confidence
from .preprocess import bbox_of, logits_to_mask
from .scoring import Scale, resize_nearest
from .tracker import CorrespondenceTracker

PROTOCOLS = ("official", "robot")
PROMPTS = ("mask", "box", "click")
TASK_KEYS = {"ego2exo": "ego-exo", "exo2ego": "exo-ego"}


@dataclass
class Prediction:
    """A method's target mask for one frame, drawable at any output size."""

    mask: np.ndarray  # bool, at the target image's resolution
    logits: torch.Tensor | None = None  # the low-res logits it was thresholded from, when the method has them

    def at(self, shape: tuple[int, int]) -> np.ndarray:
        """The mask at `shape`: from the logits upsampled straight to it when there are logits, else sampled."""
        if self.mask.shape == tuple(shape):
            return self.mask
        if self.logits is not None:
            return logits_to_mask(self.logits, shape)
        return resize_nearest(self.mask, shape)


class Predictor(Protocol):
    """What the evaluation loop needs from a method: the tracker or a baseline."""

    def predict(self, source_image: np.ndarray, target_image: np.ndarray,
                source_mask: np.ndarray | None, first: bool) -> Prediction | None: ...


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
        return None if result.skipped else Prediction(result.mask, result.logits)

    def _set_target(self, ego, exo, source_mask, target_shape):
        """Mark the target; a box or click that selects nothing finds nothing, and is given again on
        the next frame showing the object, as an operator would."""
        if not source_mask.any():
            return Prediction(np.zeros(target_shape, bool))
        try:
            result = self.tracker.set_target(self.source_view, ego, exo, **prompt_from_mask(source_mask, self.prompt))
        except InputError:
            return Prediction(np.zeros(target_shape, bool))
        return Prediction(result.mask, result.logits)


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
        return Prediction(mask)


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
    metrics: MetricAccumulator
    frames: list[str] = field(default_factory=list)  # the scored frames
    iou: list[float] = field(default_factory=list)  # NaN where the object does not exist
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)  # predictions.json entries
    ground_truth: dict[str, dict[str, Any]] = field(default_factory=dict)  # compute_metrics' GT entries


def predict_sequence(seq: Sequence, predictor: Predictor, scale: Scale,
                     max_frames: int | None = None) -> dict[str, np.ndarray]:
    """Run the method over one sequence frame by frame (nothing preloaded); its masks at `scale`, by frame."""
    annotation = seq.take.annotation_shape(seq.obj, seq.target)
    masks = {}
    started = False
    for frame in seq.frames[:max_frames]:
        src_img, tgt_img = seq.take.load_image(seq.source, frame), seq.take.load_image(seq.target, frame)
        src_mask = (seq.take.load_mask(seq.obj, seq.source, frame) if seq.take.has_mask(seq.obj, seq.source, frame)
                    else np.zeros(src_img.shape[:2], bool))
        if not started and not src_mask.any():
            continue  # nothing to start from yet (official: skipped; robot: target not yet given)
        output = predictor.predict(src_img, tgt_img, src_mask, first=not started)
        started = True
        if output is not None:
            masks[frame] = output.at(scale.shape(annotation, tgt_img.shape[:2]))
    return masks


def score_sequence(seq: Sequence, masks: dict[str, np.ndarray], scale: Scale) -> SequenceResult:
    """Write and score a sequence's masks by the rules of `scale` (see lmeec_core.scoring)."""
    written, scored = masks, list(masks)
    if scale.challenge_rules:  # every source-annotated frame is written; those the target annotates are scored
        empty = np.zeros(scale.shape(seq.take.annotation_shape(seq.obj, seq.target)), bool)
        written = {f: masks.get(f, empty) for f in seq.take.annotated_frames(seq.obj, seq.source)}
        annotated = set(seq.take.annotated_frames(seq.obj, seq.target))
        scored = [f for f in written if f in annotated]
    shapes = {mask.shape for mask in written.values()}
    result = SequenceResult(seq.key, MetricAccumulator(scale.location_size(shapes.pop()) if shapes else None))
    for frame, mask in written.items():
        result.predictions[frame] = {"pred_mask": encode_mask(mask), "confidence": existence_confidence(mask)}
    for frame in scored:
        mask = written[frame]
        gt = (scale.ground_truth(seq.take.load_mask(seq.obj, seq.target, frame), mask.shape)
              if seq.take.has_mask(seq.obj, seq.target, frame) else np.zeros(mask.shape, bool))
        scores = result.metrics.add(gt, mask, result.predictions[frame]["confidence"],
                                    gt_exists=True if scale.challenge_rules else None)
        result.frames.append(frame)
        result.iou.append(float("nan") if scores.iou is None else scores.iou)
        if not scale.challenge_rules:
            result.ground_truth[frame] = {"pred_mask": encode_mask(gt)}
    return result


def evaluate_sequence(seq: Sequence, predictor: Predictor, max_frames: int | None = None,
                      scale: Scale = Scale()) -> SequenceResult:
    """Predict one sequence and score it."""
    return score_sequence(seq, predict_sequence(seq, predictor, scale, max_frames), scale)


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
             plots: bool = True, score_size: int | str | None = None, prompt: str = "mask",
             gt_resize: str | None = None) -> dict[str, Any]:
    """Evaluate every sequence; `predictor_for(sequence)` returns a fresh Predictor per sequence.

    `score_size`: None (camera), N (square) or "challenge", with `gt_resize` (see lmeec_core.scoring).
    `prompt` is recorded with the figures and checked: the predictors were built with it.
    """
    if prompt not in PROMPTS or (prompt != "mask" and protocol != "robot"):
        raise InputError(f"prompt {prompt!r} with the {protocol} protocol; expected one of {PROMPTS} with the "
                         "robot protocol (the official one gives the GT mask on every frame)")
    scale = Scale.parse(score_size, gt_resize)
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol {protocol!r}; expected one of {PROTOCOLS}")
    if direction not in TASK_KEYS:
        raise InputError(f"direction {direction!r}; expected one of {tuple(TASK_KEYS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = MetricAccumulator()
    rows, results, ground_truth, evaluated = [], {}, {}, {}
    for seq in tqdm(list(sequences(root, direction, takes)), desc="evaluate", unit="seq"):
        res = evaluate_sequence(seq, predictor_for(seq), max_frames, scale)
        total.merge(res.metrics)
        rows.append({"sequence": res.key, **res.metrics.summary()})
        pair = f"{seq.source}_{seq.target}"
        for files, entries in ((results, res.predictions), (ground_truth, res.ground_truth)):
            take = files.setdefault(seq.take.name, {"masks": {}, "subsample_idx": seq.take.subsample_idx})
            take["masks"].setdefault(seq.obj, {})[pair] = entries
        evaluated[seq.take.name] = seq.take
        if plots:
            _plot_iou(res, out / f"iou_{res.key.replace('/', '__')}.png")
    summary = {"direction": direction, "protocol": protocol, "prompt": prompt, "score_size": score_size,
               "scale": scale.describe(), "total": total.summary(), "sequences": rows}
    (out / "predictions.json").write_text(json.dumps(_results_file(results, direction)))
    gt_file = (_challenge_ground_truth(evaluated.values()) if scale.challenge_rules
               else _results_file(ground_truth, "ego2exo"))
    (out / "groundtruth.json").write_text(json.dumps(gt_file))
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    _write_table(rows, out / "per_sequence.csv")
    return summary


def _results_file(results: dict[str, Any], direction: str) -> dict[str, Any]:
    """The challenge's results structure under the direction's task key, and Exo->Ego also under "ego-exo",
    the only key LM-EEC's compute_metrics.py reads."""
    payload = {"version": "xx", "challenge": "xx", "results": results}
    return {key: payload for key in dict.fromkeys((TASK_KEYS[direction], TASK_KEYS["ego2exo"]))}


def _challenge_ground_truth(takes: Iterable[Take]) -> dict[str, Any]:
    """The GT file of the challenge scorers, as process_annotations.py makes it; each camera's annotated
    frames are its annotation keys."""
    annotations = {
        take.name: {"masks": take.masks, "subsample_idx": take.subsample_idx,
                    "annotated_frames": {obj: {cam: [int(f) for f in frames] for cam, frames in cams.items()}
                                         for obj, cams in take.masks.items()}}
        for take in takes
    }
    return {"version": "xx", "challenge": "xx", "annotations": annotations}


def _write_table(rows: list[dict[str, Any]], path: Path) -> None:
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
