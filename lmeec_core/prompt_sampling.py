"""Box and click prompts sampled from ground-truth masks, to train prompt-frame segmentation.

The tracker's `set_target` takes a mask, a box or clicks; a box or clicks are first segmented by
SAM 2's decoder on the prompt frame (`LMEEC.segment_prompt`). The LM-EEC recipe trains from mask
prompts only, so that decoder path is never trained there. SAM 2 trains it with the prompts people
give: boxes with jittered corners (a drawn box is never tight) and positive clicks inside the object.

Prompts are in model-input pixels with SAM's labels: 2/3 box corners, 1 a positive click, -1 no
point (SAM's padding), given for a row whose mask is empty, so that the decoder learns "no object".
"""
from __future__ import annotations

import torch

BOX_JITTER = 0.1      # standard deviation of the corner noise, as a fraction of the box side (SAM 2)
MAX_JITTER_PX = 20.0  # cap on that noise, in model-input pixels (SAM 2)
MAX_CLICKS = 3


def _present(masks: torch.Tensor) -> torch.Tensor:
    return masks.flatten(1).bool().any(1)


def sample_box(masks: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Jittered bounding boxes of `masks` ([B, 1, S, S] in {0, 1}) -> coords [B, 2, 2], labels [B, 2]."""
    batch, size, cpu = masks.shape[0], masks.shape[-1], masks.detach().cpu()
    coords = torch.zeros(batch, 2, 2)
    labels = torch.full((batch, 2), -1, dtype=torch.int32)
    for row in torch.nonzero(_present(cpu)).flatten().tolist():
        ys, xs = torch.nonzero(cpu[row, 0], as_tuple=True)
        box = torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()
        side = torch.stack([box[2] - box[0], box[3] - box[1]]).repeat(2) + 1
        noise = torch.randn(4, generator=generator) * (BOX_JITTER * side).clamp(max=MAX_JITTER_PX)
        x0, y0, x1, y1 = (box + noise).clamp(0, size - 1)
        coords[row] = torch.stack([torch.stack([torch.min(x0, x1), torch.min(y0, y1)]),
                                   torch.stack([torch.max(x0, x1), torch.max(y0, y1)])])
        labels[row] = torch.tensor([2, 3], dtype=torch.int32)
    return coords.to(masks.device), labels.to(masks.device)


def sample_clicks(masks: torch.Tensor, count: int,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` positive clicks drawn uniformly inside each mask -> coords [B, count, 2], labels [B, count]."""
    batch, cpu = masks.shape[0], masks.detach().cpu()
    coords = torch.zeros(batch, count, 2)
    labels = torch.full((batch, count), -1, dtype=torch.int32)
    for row in torch.nonzero(_present(cpu)).flatten().tolist():
        ys, xs = torch.nonzero(cpu[row, 0], as_tuple=True)
        picks = torch.randint(len(xs), (count,), generator=generator)
        coords[row] = torch.stack([xs[picks], ys[picks]], dim=1).float()
        labels[row] = 1
    return coords.to(masks.device), labels.to(masks.device)


def sample_prompt(masks: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A box (half the time) or 1..MAX_CLICKS clicks, one kind for the whole batch (one tensor)."""
    if torch.rand((), generator=generator) < 0.5:
        return sample_box(masks, generator)
    count = int(torch.randint(1, MAX_CLICKS + 1, (), generator=generator))
    return sample_clicks(masks, count, generator)
