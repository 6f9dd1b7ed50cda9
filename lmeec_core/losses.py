"""The LM-EEC training losses (spec section 7.1): SAM 2's `MultiStepMultiMasksAndIous` for one mask.

Per frame and object: sigmoid focal loss on the mask (alpha 0.25, gamma 2, mean over pixels),
dice loss, L1 between the predicted IoU and the actual IoU of the thresholded mask, and a BCE on
the object-existence logit. The mask, dice and IoU terms count only where the target is present:
a frame without the object can only teach "absent", through the object score. Terms are summed
over frames and divided by the number of objects, then weighted (20, 1, 1, 1).

sam2's own implementations live in its `training` package, which cannot be imported without its
trainer's dependencies (tensordict and friends), so the formulas are written out here, per
object, with the same definitions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import MaskPrediction

LOSS_TERMS = ("mask", "dice", "iou", "score")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the four terms; the defaults are the paper's."""

    mask: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    score: float = 1.0

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum that is back-propagated."""
        return sum(getattr(self, name) * terms[name] for name in LOSS_TERMS)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """RetinaNet focal loss per object ([B, ...] -> [B], mean over the remaining dims).

    Focal rather than plain BCE because the object covers a small part of the image: easy
    background pixels would otherwise dominate. `alpha` < 0 disables the class weighting.
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(1).mean(1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - soft dice per object (+1 smoothing as SAM 2), insensitive to the object's size."""
    prob = logits.sigmoid().flatten(1)
    targets = targets.flatten(1)
    numerator = 2 * (prob * targets).sum(1)
    denominator = prob.sum(1) + targets.sum(1)
    return 1 - (numerator + 1) / (denominator + 1)


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of the thresholded mask (logit > 0) per object: what the IoU head must predict."""
    pred = logits.flatten(1) > 0
    gt = targets.flatten(1) > 0
    inter = (pred & gt).sum(1).float()
    union = (pred | gt).sum(1).float()
    return inter / union.clamp(min=1.0)


def frame_losses(prediction: MaskPrediction, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Unweighted per-object terms ([B] each) of one frame; `targets` is [B, 1, S, S] in {0, 1}."""
    logits = prediction.high_res.float()
    present = targets.flatten(1).any(1).float()
    actual_iou = mask_iou(logits, targets)
    return {
        "mask": sigmoid_focal_loss(logits, targets) * present,
        "dice": dice_loss(logits, targets) * present,
        "iou": (prediction.iou.float() - actual_iou).abs() * present,
        "score": F.binary_cross_entropy_with_logits(prediction.score_logit[:, 0].float(), present,
                                                    reduction="none"),
    }


class LossAccumulator:
    """Sums per-frame terms over a clip and normalises by the number of objects (SAM 2's rule)."""

    def __init__(self, num_objects: int) -> None:
        self.num_objects = max(num_objects, 1)
        self.terms: dict[str, torch.Tensor] = {}
        self.ious: list[torch.Tensor] = []  # actual IoU where the object is present, for logging

    def add(self, prediction: MaskPrediction, targets: torch.Tensor) -> None:
        for name, value in frame_losses(prediction, targets).items():
            self.terms[name] = self.terms.get(name, 0.0) + value.sum() / self.num_objects
        present = targets.flatten(1).any(1)
        self.ious.append(mask_iou(prediction.high_res.detach().float(), targets)[present])

    def mean_iou(self) -> float:
        """Mean IoU over the frames with the object (NaN when there were none)."""
        values = torch.cat(self.ious) if self.ious else torch.empty(0)
        return float(values.mean()) if values.numel() else float("nan")
