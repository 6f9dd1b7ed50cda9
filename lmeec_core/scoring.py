"""At which size `lmeec evaluate` writes and scores masks, and whose rules it scores them by.

Three scales (`--score-size`):

* **camera** (default): the target image's resolution, what the robot publishes.
* **square N** (`--score-size N`): N x N whatever the camera's aspect ratio. LM-EEC's inference tool
  writes its masks so at the model's input size, 480 (spec sections 2.8, 6.4), and its
  `evaluation/compute_metrics.py` scores them against GT masks on the same square (spec 8.3).
* **challenge** (`--score-size challenge`): aspect kept, long side 480. The EgoExo4D challenge
  scorers (`evaluate_egoexo.py` / `evaluate_exoego.py`) resize the GT so (`reshape_img_nopad`:
  OpenCV nearest) and expect predictions of that size.

Camera and square follow compute_metrics' rules: the predicted frames are scored, a frame's object
exists when its GT mask is non-empty. Challenge follows the challenge scorer's: every frame of the
source camera's annotations that the target camera annotates too is scored, a missing prediction
counts as an empty one, and the object exists on every such frame (it has a target annotation).
The location error is divided by the diagonal of the square on the masks' long side, which is the
official scorers' fixed sqrt(480^2 + 480^2) at both of their scales (for the challenge it is that
constant even where the reshape's truncation makes the long side 479).

GT masks come at the annotation's resolution. The challenge resizes them itself (nearest); for the
other scales `gt_resize` names the method. The authors never published how they made their 480 x 480
GT file; `bilinear` (the default) is the one hint there is (spec 8.3: LM-EEC's training/check.py
resizes GT with torchvision's `resize`, bilinear, then casts to bool); `nearest` is OpenCV's nearest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError

CHALLENGE_SIDE = 480  # the EgoExo4D scorers' H, W = 480, 480 and reshape_img_nopad's max_dim
KINDS = ("camera", "square", "challenge")


def challenge_shape(shape: tuple[int, int], side: int = CHALLENGE_SIDE) -> tuple[int, int]:
    """reshape_img_nopad's output size: the long side scaled to `side`, both sides truncated.

    The float arithmetic is the scorer's own (1/long * side, then int()), so e.g. a 1408-pixel side
    becomes 480 but a 9-pixel one 479.
    """
    h, w = shape
    ratio = 1.0 / h * side if h > w else 1.0 / w * side
    return int(h * ratio), int(w * ratio)


def resize_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """OpenCV's INTER_NEAREST: output pixel x takes input pixel floor(x * (1 / (out / in)))."""
    if mask.shape == tuple(shape):
        return mask
    (h, w), (rows_in, cols_in) = shape, mask.shape
    rows = np.minimum(np.floor(np.arange(h) * (1.0 / (h / rows_in))).astype(np.int64), rows_in - 1)
    cols = np.minimum(np.floor(np.arange(w) * (1.0 / (w / cols_in))).astype(np.int64), cols_in - 1)
    return mask[rows[:, None], cols[None, :]]


def resize_bilinear(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """torchvision's `resize(mask_uint8, shape)` cast to bool, as LM-EEC's training/check.py does.

    That is an antialiased bilinear interpolation in float32, rounded half to even back to uint8:
    a pixel is foreground where the interpolated value exceeds 0.5.
    """
    if mask.shape == tuple(shape):
        return mask
    values = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    resized = F.interpolate(values, size=tuple(shape), mode="bilinear", align_corners=False, antialias=True)
    return (resized[0, 0] > 0.5).numpy()


GT_RESIZES = {"bilinear": resize_bilinear, "nearest": resize_nearest}


@dataclass(frozen=True)
class Scale:
    """Where masks are written and scored; see the module docstring."""

    kind: str = "camera"
    side: int | None = None  # square only
    gt_resize: str = "bilinear"  # camera and square; the challenge resizes GT itself

    @classmethod
    def parse(cls, score_size: int | str | None, gt_resize: str | None = None) -> "Scale":
        """`None` (camera), a side N (square) or "challenge"; `gt_resize` None picks the scale's default."""
        if score_size == "challenge":
            if gt_resize not in (None, "nearest"):
                raise InputError(f"gt resize {gt_resize!r} with the challenge scale; the challenge scorer resizes "
                                 "GT itself (nearest): expected no --gt-resize, or nearest")
            return cls("challenge", None, "nearest")
        if gt_resize is not None and gt_resize not in GT_RESIZES:
            raise InputError(f"gt resize {gt_resize!r}; expected one of {tuple(GT_RESIZES)}")
        gt_resize = gt_resize or "bilinear"
        if score_size is None:
            return cls("camera", None, gt_resize)
        side = int(score_size) if isinstance(score_size, int) or str(score_size).isdigit() else None
        if side is None or side <= 0:
            raise InputError(f"score size {score_size!r}; expected a positive side in pixels (LM-EEC: 480) "
                             "or 'challenge'")
        return cls("square", side, gt_resize)

    @property
    def challenge_rules(self) -> bool:
        return self.kind == "challenge"

    def shape(self, annotation: tuple[int, int], image: tuple[int, int] | None = None) -> tuple[int, int]:
        """Mask size for a target camera whose GT is `annotation` (H, W) and whose images are `image`
        (needed by the camera scale only)."""
        if self.kind == "challenge":
            return challenge_shape(annotation)
        if self.kind == "square":
            return self.side, self.side
        return tuple(image)

    def ground_truth(self, mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """A GT mask (annotation resolution) at `shape`."""
        return GT_RESIZES[self.gt_resize](mask, shape)

    def location_size(self, shape: tuple[int, int]) -> tuple[int, int]:
        """The (H, W) whose diagonal divides the location error of masks of `shape`."""
        side = CHALLENGE_SIDE if self.challenge_rules else max(shape)
        return side, side

    def describe(self) -> dict[str, Any]:
        """What metrics.json records about the scale."""
        return {
            "kind": self.kind,
            "side": self.side,
            "gt_resize": "nearest (reshape_img_nopad)" if self.challenge_rules else self.gt_resize,
            "rules": "EgoExo4D challenge scorer" if self.challenge_rules else "LM-EEC compute_metrics",
            "location_error_divisor": ("sqrt(480^2 + 480^2)" if self.challenge_rules
                                       else "sqrt(2) x the masks' long side"),
        }
