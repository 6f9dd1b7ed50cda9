"""Box and click prompts sampled from GT masks: where they land, and the rows without an object."""
from __future__ import annotations

import torch

from lmeec_core.prompt_sampling import MAX_CLICKS, MAX_JITTER_PX, sample_box, sample_clicks, sample_prompt


def _masks() -> torch.Tensor:
    """Row 0: a 20x10 block at x 30..49, y 40..49; row 1: empty."""
    masks = torch.zeros(2, 1, 64, 64)
    masks[0, 0, 40:50, 30:50] = 1
    return masks


def test_boxes_are_jittered_around_the_mask_and_an_empty_row_gets_no_points():
    generator = torch.Generator().manual_seed(0)
    corners = []
    for _ in range(200):
        coords, labels = sample_box(_masks(), generator)
        assert labels.tolist() == [[2, 3], [-1, -1]]
        (x0, y0), (x1, y1) = coords[0].tolist()
        assert 0 <= x0 <= x1 <= 63 and 0 <= y0 <= y1 <= 63
        corners.append([x0, y0, x1, y1])
    corners = torch.tensor(corners)
    tight = torch.tensor([30.0, 40.0, 49.0, 49.0])
    assert (corners.mean(0) - tight).abs().max() < 1.0          # centred on the tight box
    spread = corners.std(0)
    assert 1.6 < spread[0] < 2.4 and 1.6 < spread[2] < 2.4      # x noise: 0.1 * width (20 px)
    assert 0.8 < spread[1] < 1.2 and 0.8 < spread[3] < 1.2      # y noise: 0.1 * height (10 px)


def test_box_noise_is_capped_for_large_objects():
    masks = torch.zeros(1, 1, 1024, 1024)
    masks[0, 0, 200:800, 200:800] = 1   # 600 px: 0.1 * side would be 60 px of noise
    generator = torch.Generator().manual_seed(3)
    x0 = torch.tensor([sample_box(masks, generator)[0][0, 0, 0].item() for _ in range(300)])
    assert 0.85 * MAX_JITTER_PX < x0.std() < 1.15 * MAX_JITTER_PX


def test_clicks_fall_inside_the_mask():
    coords, labels = sample_clicks(_masks(), 3, torch.Generator().manual_seed(1))
    assert coords.shape == (2, 3, 2) and labels.tolist() == [[1, 1, 1], [-1, -1, -1]]
    xs, ys = coords[0, :, 0].long(), coords[0, :, 1].long()
    assert bool((_masks()[0, 0, ys, xs] == 1).all())


def test_sample_prompt_draws_boxes_and_one_to_three_clicks():
    generator = torch.Generator().manual_seed(2)
    kinds = set()
    for _ in range(60):
        _, labels = sample_prompt(_masks(), generator)
        kinds.add("box" if labels[0, 0] == 2 else f"{labels.shape[1]} clicks")
    assert kinds == {"box", *(f"{n} clicks" for n in range(1, MAX_CLICKS + 1))}
