"""EgoExo4D correspondence metrics, computed exactly as LM-EEC's evaluation reports them.

The EgoExo4D relation benchmark (Grauman et al., "Ego-Exo4D", CVPR 2024, correspondence task)
scores a predicted target-view mask P against the ground truth G with four numbers:

* **IoU** - DAVIS region similarity (Jaccard), ``|P & G| / (|P | G| + 1e-7)``.
* **CA** ("shape accuracy") - DAVIS boundary F-measure with a tolerance of 0.8 % of the image
  diagonal.
* **LE** ("location score") - distance between the bounding-box centres of P and G divided by
  the image diagonal; lower is better.
* **BA** - balanced accuracy of "object visible" (GT non-empty) against "object predicted"
  (the prediction's confidence > 0.5).

IoU, CA and LE are averaged over the frames whose GT is non-empty; BA is taken over every frame.
The definitions follow ``correspondence/evaluation/utils.py`` and ``metrics.py`` of
EGO4D/ego-exo4d-relation (themselves from the DAVIS 2017 evaluation) and the confidence rule of
LM-EEC's ``evaluation/merge_results.py``; the values match the official code to float64
rounding. Unlike the official code, this module needs only NumPy (no OpenCV, scikit-image or
scikit-learn), so it can run on a robot.

Masks are 2-D arrays of equal shape (bool or numbers); any non-zero pixel is foreground.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lmeec_core.errors import InputError

BoolMask = NDArray[np.bool_]

#: Boundary tolerance of the contour accuracy, as a fraction of the image diagonal (DAVIS).
BOUND_TH = 0.008
#: A prediction counts as "object present" when its confidence exceeds this value.
CONF_THRESH = 0.5
#: Fraction of the image a predicted mask must exceed to get confidence 1 (LM-EEC merge_results).
EXISTENCE_FRACTION = 0.001
#: Added to the IoU denominator by the official code; an identical pair scores 1 - 1e-7/|G|.
IOU_EPS = 1e-7


def _as_mask(mask: ArrayLike, name: str) -> BoolMask:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise InputError(f"{name} must be a 2-D mask of shape (H, W), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name} must be a bool or numeric mask, got dtype {arr.dtype}")
    if arr.size == 0:
        raise InputError(f"{name} must have at least one pixel, got shape {arr.shape}")
    return arr != 0


def _mask_pair(gt: ArrayLike, pred: ArrayLike) -> tuple[BoolMask, BoolMask]:
    g = _as_mask(gt, "gt")
    p = _as_mask(pred, "pred")
    if g.shape != p.shape:
        raise InputError(
            f"gt and pred masks must have the same shape, got {g.shape} and {p.shape}; "
            "resize the prediction to the annotation resolution first"
        )
    return g, p


def _iou(g: BoolMask, p: BoolMask) -> float:
    union = np.count_nonzero(g | p)
    if union == 0:
        return 1.0
    return np.count_nonzero(g & p) / (union + IOU_EPS)


def iou(gt: ArrayLike, pred: ArrayLike) -> float:
    """Region similarity ``|P & G| / (|P | G| + 1e-7)``; 1.0 when both masks are empty.

    The 1e-7 is kept because the official numbers contain it: an identical pair of N pixels
    scores ``N / (N + 1e-7)`` (0.99999999999583 for 23969 pixels), not exactly 1.
    """
    return _iou(*_mask_pair(gt, pred))


def _boundary_map(seg: BoolMask) -> BoolMask:
    """One-pixel-wide boundary of a mask (D. Martin's ``seg2bmap``, as used by DAVIS).

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour:
    every foreground/background edge gives one line of pixels, one pixel wide, on the side of
    the edge towards the image origin - a thin, unambiguous contour that can be matched pixel
    by pixel. In the last row only the right neighbour and in the last column only the lower
    neighbour are compared, so the image frame itself is never a contour: an object touching
    the right or bottom border has no boundary there, and a full-image mask has none at all.
    """
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _or_shifted(dst: BoolMask, src: BoolMask, dy: int, dx: int) -> None:
    """``dst[y, x] |= src[y + dy, x + dx]`` wherever both pixels lie inside the image."""
    h, w = src.shape
    if abs(dy) >= h or abs(dx) >= w:
        return
    y0, y1 = max(0, -dy), min(h, h - dy)
    x0, x1 = max(0, -dx), min(w, w - dx)
    dst[y0:y1, x0:x1] |= src[y0 + dy : y1 + dy, x0 + dx : x1 + dx]


def _dilate_disk(mask: BoolMask, radius: int) -> BoolMask:
    """Binary dilation by the disk ``{(dx, dy): dx^2 + dy^2 <= radius^2}``, outside = background.

    This is what the official ``cv2.dilate(b, skimage.morphology.disk(radius))`` computes (the
    disk is symmetric, so anchor and reflection do not matter, and OpenCV's default border
    never adds foreground). The disk is decomposed into horizontal runs: ``runs[k]`` is the mask
    dilated by k pixels left and right, and row offset dy of the disk takes the run of
    half-width ``isqrt(radius^2 - dy^2)``; ~4*radius array ORs instead of one per disk pixel.
    """
    runs = [mask.copy()]
    for k in range(1, radius + 1):
        run = runs[-1].copy()
        _or_shifted(run, mask, 0, k)
        _or_shifted(run, mask, 0, -k)
        runs.append(run)
    out = np.zeros_like(mask)
    for dy in range(-radius, radius + 1):
        _or_shifted(out, runs[math.isqrt(radius * radius - dy * dy)], dy, 0)
    return out


def _contour_accuracy(g: BoolMask, p: BoolMask) -> float:
    h, w = g.shape
    radius = math.ceil(BOUND_TH * math.sqrt(h * h + w * w))
    bp = _boundary_map(p)
    bg = _boundary_map(g)
    n_p = np.count_nonzero(bp)
    n_g = np.count_nonzero(bg)
    if n_p == 0 and n_g == 0:
        precision, recall = 1.0, 1.0
    elif n_p == 0:
        precision, recall = 1.0, 0.0
    elif n_g == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = np.count_nonzero(bp & _dilate_disk(bg, radius)) / float(n_p)
        recall = np.count_nonzero(bg & _dilate_disk(bp, radius)) / float(n_g)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def contour_accuracy(gt: ArrayLike, pred: ArrayLike) -> float:
    """DAVIS boundary F-measure ("shape accuracy") of ``pred`` against ``gt``.

    Boundaries are compared with a tolerance of ``ceil(0.008 * diagonal)`` pixels (6 at
    480x480) rather than exactly, so that a contour drawn one or two pixels off by an annotator
    or by mask resizing is not punished; precision is the share of predicted boundary pixels
    within that distance of a GT boundary pixel, recall the converse. Conventions for empty
    boundaries (the official ones): none on either side -> 1; only one side empty -> 0 (P=1,
    R=0 or P=0, R=1). A mask covering the whole image has no boundary (see ``_boundary_map``).
    """
    return _contour_accuracy(*_mask_pair(gt, pred))


def _box_centre(mask: BoolMask) -> tuple[int, int]:
    """(x, y) bounding-box centre of ``mask`` in the frame padded by ``mask.shape[0]``.

    The official ``crop_mask`` pads both masks by their height on every side (so that equally
    sized windows can be cropped around the centres, its other output) and measures the centres
    in that padded frame. Between two non-empty masks the padding cancels out; it matters for
    an empty mask, which is placed at ``(padded_rows // 2, padded_cols // 2)``: the image centre
    of a square image, so a missing mask is neither undefined nor unboundedly far. For a
    non-square image that pair is the transposed centre; it is kept as the official code
    computes it. The bounding-box centre (not the centre of mass) is the official choice: it
    reflects where the object's extent lies, independent of how its pixels are distributed.
    """
    h, w = mask.shape
    pad = h
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return (h + 2 * pad) // 2, (w + 2 * pad) // 2
    cols = np.flatnonzero(mask.any(axis=0))
    x = (int(cols[0]) + int(cols[-1]) + 2 * pad) // 2
    y = (int(rows[0]) + int(rows[-1]) + 2 * pad) // 2
    return x, y


def _checked_size(size: tuple[int, int] | None) -> tuple[int, int] | None:
    if size is not None and (len(size) != 2 or min(size) <= 0):
        raise InputError(f"size must be (H, W) with positive entries, got {size!r}")
    return size


def _location_error(g: BoolMask, p: BoolMask, size: tuple[int, int] | None) -> float:
    h, w = g.shape if size is None else size
    gx, gy = _box_centre(g)
    px, py = _box_centre(p)
    return math.sqrt((gx - px) ** 2 + (gy - py) ** 2) / math.sqrt(h * h + w * w)


def location_error(
    gt: ArrayLike, pred: ArrayLike, size: tuple[int, int] | None = None
) -> float:
    """Distance between the bounding-box centres of ``gt`` and ``pred`` over the image diagonal.

    Centres are integer (floor of the box midpoint); an empty mask is placed at the image centre
    (see ``_box_centre``), so for a square image a missed object costs at most half a diagonal
    instead of being undefined. ``size`` = (H, W) of the resolution whose diagonal normalises the distance
    (default: the masks' shape). The EgoExo4D scripts always pass their fixed (480, 480), also
    for aspect-preserved non-square masks; pass ``size=(480, 480)`` to reproduce that.
    """
    g, p = _mask_pair(gt, pred)
    return _location_error(g, p, _checked_size(size))


def _existence_confidence(p: BoolMask) -> int:
    h, w = p.shape
    return int(np.count_nonzero(p) > EXISTENCE_FRACTION * h * w)


def existence_confidence(pred: ArrayLike) -> int:
    """LM-EEC's confidence of a binary prediction: 1 if it covers > 0.1 % of the image, else 0.

    The model outputs a mask, not a score; LM-EEC's ``merge_results.py`` derives the confidence
    the benchmark needs from the mask size, so that a few stray pixels (at 480x480: 230 or
    fewer) count as "object absent" for the balanced accuracy while still entering the IoU.
    """
    return _existence_confidence(_as_mask(pred, "pred"))


def _as_flags(values: ArrayLike, name: str) -> NDArray[np.bool_]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InputError(f"{name} must be a 1-D sequence of 0/1 flags, got shape {arr.shape}")
    if arr.size and (arr.dtype.kind not in "biu" or not np.isin(arr, (0, 1)).all()):
        raise InputError(f"{name} must contain only 0/1 or bool values")
    return arr.astype(bool)


def balanced_accuracy(gt_exists: ArrayLike, pred_exists: ArrayLike) -> float:
    """Mean per-class recall of ``pred_exists`` against ``gt_exists``.

    Balanced rather than plain accuracy because most benchmark frames show the object: a
    predictor that always says "present" must not score high. As in
    ``sklearn.metrics.balanced_accuracy_score``, only the classes present in ``gt_exists``
    are averaged; with a single class the result is that class's recall (e.g. all GT present
    and half predicted present -> 0.5), not a mean with an undefined recall.
    """
    truth = _as_flags(gt_exists, "gt_exists")
    guess = _as_flags(pred_exists, "pred_exists")
    if truth.shape != guess.shape:
        raise InputError(
            "gt_exists and pred_exists must have the same length, "
            f"got {truth.size} and {guess.size}"
        )
    if truth.size == 0:
        raise InputError("balanced accuracy needs at least one frame")
    recalls = [
        np.count_nonzero(guess[truth == cls] == cls) / np.count_nonzero(truth == cls)
        for cls in (False, True)
        if (truth == cls).any()
    ]
    return float(np.mean(recalls))


@dataclass(frozen=True)
class FrameScores:
    """Scores of one frame; ``iou``, ``ca``, ``le`` are None when the GT is empty."""

    gt_exists: bool
    pred_exists: bool
    iou: float | None
    ca: float | None
    le: float | None


class MetricAccumulator:
    """Collects frames and reports the benchmark totals (micro-averaged over all frames added).

    ``summary()`` returns ``iou``, ``ca``, ``le`` (means over frames with a non-empty GT, NaN
    when there are none - the official ``np.mean([])``), ``ba`` (over all frames, NaN when
    none), ``n_frames`` and ``n_frames_with_gt``.
    """

    def __init__(self, size: tuple[int, int] | None = None) -> None:
        """``size``: normalisation resolution of the location error (see ``location_error``)."""
        self._size = _checked_size(size)
        self._ious: list[float] = []
        self._cas: list[float] = []
        self._les: list[float] = []
        self._gt_exists: list[bool] = []
        self._pred_exists: list[bool] = []

    def add(
        self,
        gt_mask: ArrayLike,
        pred_mask: ArrayLike,
        confidence: float | None = None,
        gt_exists: bool | None = None,
        size: tuple[int, int] | None = None,
    ) -> FrameScores:
        """Score one frame. ``confidence`` defaults to ``existence_confidence(pred_mask)``.

        As in the official evaluation, IoU/CA/LE use the raw predicted mask even when the
        confidence says "absent"; the confidence only enters the balanced accuracy.
        ``gt_exists`` defaults to "the GT mask is non-empty" (LM-EEC's ``compute_metrics.py``);
        the EgoExo4D challenge scorer counts every frame that has a GT annotation, empty or not,
        and then scores an empty GT too (IoU and CA 1 against an empty prediction, else 0).
        ``size`` normalises this frame's location error instead of the accumulator's ``size``.
        """
        g, p = _mask_pair(gt_mask, pred_mask)
        conf = _existence_confidence(p) if confidence is None else confidence
        gt_exists = bool(g.any()) if gt_exists is None else gt_exists
        pred_exists = bool(conf > CONF_THRESH)
        self._gt_exists.append(gt_exists)
        self._pred_exists.append(pred_exists)
        if not gt_exists:
            return FrameScores(gt_exists, pred_exists, None, None, None)
        frame_iou = _iou(g, p)
        frame_ca = _contour_accuracy(g, p)
        frame_le = _location_error(g, p, self._size if size is None else _checked_size(size))
        self._ious.append(frame_iou)
        self._cas.append(frame_ca)
        self._les.append(frame_le)
        return FrameScores(gt_exists, pred_exists, frame_iou, frame_ca, frame_le)

    def merge(self, other: "MetricAccumulator") -> None:
        """Add every frame of `other` (per-sequence accumulators rolled into a total)."""
        self._ious += other._ious
        self._cas += other._cas
        self._les += other._les
        self._gt_exists += other._gt_exists
        self._pred_exists += other._pred_exists

    def summary(self) -> dict[str, float | int]:
        """Totals as printed by the official ``compute_metrics.py`` (see the class docstring)."""

        def mean(values: list[float]) -> float:
            return float(np.mean(values)) if values else math.nan

        n_frames = len(self._gt_exists)
        return {
            "iou": mean(self._ious),
            "ca": mean(self._cas),
            "le": mean(self._les),
            "ba": balanced_accuracy(self._gt_exists, self._pred_exists) if n_frames else math.nan,
            "n_frames": n_frames,
            "n_frames_with_gt": len(self._ious),
        }
