"""Bank policies against their specification (test/bank_rules.py), skip pattern by skip pattern.

Every frame's memory is one constant, so the banks tell which frames they hold and every token drops
the same pair: bank lengths, the frames in each bank and the pair indices are all checked.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bank_rules import fill_banks, official_banks
from lmeec_core.data.synthetic import SceneConfig, SyntheticScene
from lmeec_core.memory import BankPolicy, DualMemory, FrameMemory
from lmeec_core.tracker import OFFICIAL, CorrespondenceTracker, TrackerConfig

FRAMES = 16
# Uneven steps (and the tie 30 -> 31 -> 32) so that the closest pair moves around the bank.
VALUES = dict(enumerate([0.0, 4.0, 5.0, 11.0, 12.5, 20.0, 21.0, 30.0, 31.0, 32.0, 45.0, 47.0, 60.0, 61.5,
                         80.0, 80.25]))


def skipping(*skipped: int, frames: int = FRAMES) -> list[bool]:
    return [t not in skipped for t in range(frames)]


CASES = {
    "no gap": (skipping(), 6),
    **{f"gap at {p}": (skipping(p), 6) for p in range(8)},
    "gaps at 2 and 5": (skipping(2, 5), 6),
    "gaps at 0 and 6": (skipping(0, 6), 6),
    "gap right after the first compression (t-1 skipped at 9)": (skipping(8), 6),
    "t-1 skipped twice in the compressed regime": (skipping(9, 11), 6),
    "leading gap": (skipping(0, 1), 6),
    "long gap: the last window is empty (the official code raises at 13)": (skipping(*range(6, 12)), 6),
    "capacity 1": (skipping(), 1),
    "capacity 1, gaps at 1 and 4": (skipping(1, 4), 1),
    "capacity 3, gap at 2": (skipping(2), 3),
}
RULES = {"official": official_banks, "fill": fill_banks}


def run(policy: str, processed: list[bool], capacity: int) -> list[tuple[int, list[int], int | None]]:
    """Drive DualMemory as the tracker does: banks for a processed frame, then store its memories."""
    memory = DualMemory(capacity, "drop", pointer_frames=16, policy=policy)
    frame_of = {value: t for t, value in VALUES.items()}
    seen = []
    for t, is_processed in enumerate(processed):
        if not is_processed:
            continue
        banks = memory.banks_for(t)
        source = [frame_of[float(entry[0, 0, 0])] for entry in banks.source]
        target = [frame_of[float(entry[0, 0, 0]) / 2] for entry in banks.target]
        assert source == target
        kstar = None
        if banks.kstar is not None:
            pairs = torch.cat([k.flatten() for k in banks.kstar]).unique().tolist()
            assert len(pairs) == 1, "constant memories: every token and both banks drop the same pair"
            kstar = pairs[0]
        seen.append((t, source, kstar))
        value = VALUES[t]
        memory.store(t, FrameMemory(torch.full((3, 1, 2), value), torch.full((3, 1, 2), 2 * value),
                                    torch.zeros(1, 4), None))
    return seen


@pytest.mark.parametrize("policy", sorted(RULES))
@pytest.mark.parametrize("case", list(CASES))
def test_banks_follow_the_specification(policy, case):
    processed, capacity = CASES[case]
    expected = [(s.frame, s.bank, s.kstar) for s in RULES[policy](processed, VALUES, capacity)]
    assert run(policy, processed, capacity) == expected


def test_official_bank_size_reached_in_the_window_phase_persists():
    """The issue's case: a skip among the first seven frames leaves the banks at five for good."""
    sizes = [len(bank) for _, bank, _ in run("official", skipping(3), 6)]
    assert sizes == [0, 1, 2, 3, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5]
    # t=7 is the last window, {1, 2, 4, 5, 6}; t=8 appends frame 7 (value 30) and drops, per token,
    # the later element of the closest pair: values 4, 5, 12.5, 20, 21, 30 -> pair (4, 5), frame 2 goes.
    assert run("official", skipping(3), 6)[6:8] == [(7, [1, 2, 4, 5, 6], None), (8, [1, 4, 5, 6, 7], 0)]


def test_fill_refills_after_a_gap_and_keeps_the_frame_before_it():
    steps = {t: bank for t, bank, _ in run("fill", skipping(3, 9, 10), 6)}
    assert [len(steps[t]) for t in (4, 7, 8, 11, 12)] == [3, 6, 6, 6, 6]
    assert 8 in steps[11]  # the last frame before the gap entered; the official policy loses it
    assert 8 not in dict((t, b) for t, b, _ in run("official", skipping(3, 9, 10), 6))[11]


def test_policy_names_and_capacity_are_checked():
    with pytest.raises(ValueError, match="unknown bank policy 'greedy'; expected one of"):
        DualMemory(policy="greedy")
    with pytest.raises(ValueError, match="capacity"):
        BankPolicy("fill", 0)
    assert BankPolicy("official", 6).compressions(1) == 0  # a lone entry is kept, not compressed away


@pytest.mark.parametrize("config, size", [(OFFICIAL, 5), (TrackerConfig(compression="drop"), 6)])
def test_the_tracker_runs_its_configured_policy(nano_model, config, size):
    """Through the streaming tracker with per-frame source masks: a skip at t=3 leaves the official banks
    at five entries, while the default `fill` policy gets back to six."""
    scene = SyntheticScene(SceneConfig(seed=1, num_frames=10, ego_size=(64, 64), exo_size=(72, 96)))
    marked = np.zeros((64, 64), bool)
    marked[20:40, 20:40] = True
    tracker = CorrespondenceTracker(nano_model, config)
    frame = scene.frame(0)
    tracker.set_target("ego", frame.ego_image, frame.exo_image, mask=marked)
    for t in range(1, 10):
        frame = scene.frame(t)
        result = tracker.step(frame.ego_image, frame.exo_image, source_mask=marked if t != 3 else np.zeros_like(marked))
        assert result.skipped == (t == 3)
    assert tracker.memory_stats()["source_bank"] == tracker.memory_stats()["target_bank"] == size
