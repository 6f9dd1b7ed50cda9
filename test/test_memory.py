"""Bank compression (drop / merge / fifo), the official bank policy and temporal slots."""
from __future__ import annotations

import pytest
import torch

from lmeec_core.inference import temporal_slot
from lmeec_core.memory import DualMemory, FrameMemory, closest_adjacent_pair, compress


def crafted_bank() -> torch.Tensor:
    """[T=4, N=3, B=1, C=2]: token 0 closest pair (1,2); token 1 a tie (0,1)/(2,3); token 2 pair (2,3)."""
    values = [
        [[0.0, 0], [5.0, 0], [5.1, 0], [9.0, 0]],
        [[0.0, 0], [1.0, 0], [3.0, 0], [4.0, 0]],
        [[0.0, 0], [4.0, 0], [8.0, 0], [8.5, 0]],
    ]
    return torch.tensor(values).permute(1, 0, 2)[:, :, None, :]


def test_closest_pair_per_token_takes_first_index_on_ties():
    assert closest_adjacent_pair(crafted_bank()).tolist() == [[1, 0, 2]]


def test_drop_removes_the_later_element_of_the_closest_pair_per_token():
    out, kstar = compress(crafted_bank(), "drop")
    assert kstar.tolist() == [[1, 0, 2]]
    assert out[:, :, 0, 0].t().tolist() == [[0.0, 5.0, 9.0], [0.0, 3.0, 4.0], [0.0, 4.0, 8.0]]


def test_merge_replaces_the_closest_pair_by_its_mean():
    out, _ = compress(crafted_bank(), "merge")
    torch.testing.assert_close(out[:, :, 0, 0].t(), torch.tensor([[0.0, 5.05, 9.0], [0.5, 3.0, 4.0], [0.0, 4.0, 8.25]]))


def test_fifo_drops_the_oldest():
    out, kstar = compress(crafted_bank(), "fifo")
    assert kstar is None and torch.equal(out, crafted_bank()[1:])


def test_unknown_compression_is_refused():
    with pytest.raises(ValueError, match="unknown compression"):
        compress(crafted_bank(), "kmeans")
    with pytest.raises(ValueError, match="unknown compression"):
        DualMemory(compression="kmeans")
    with pytest.raises(ValueError, match="capacity"):
        DualMemory(capacity=0)


def _entry(value: float) -> FrameMemory:
    token = torch.full((2, 1, 3), value)
    return FrameMemory(token, -token, torch.full((1, 4), value), None)


def test_window_then_compression_then_gap_follow_the_official_cases():
    memory = DualMemory(capacity=3, compression="fifo", pointer_frames=16)
    sizes = []
    for t in range(8):
        if t == 6:  # skipped frame: nothing stored, banks_for not called
            continue
        banks = memory.banks_for(t)
        sizes.append(len(banks))
        memory.store(t, _entry(float(t)))
    # Case A windows {}, {0}, {0,1}, {0,1,2}; then Case B: append t-1 and compress back to 3;
    # at t=7 the previous frame (6) was skipped: the banks [2, 3, 4] are reused unchanged, and
    # frame 5, the last one before the gap, never enters them (official quirk).
    assert sizes == [0, 1, 2, 3, 3, 3, 3]
    assert [float(e[0, 0, 0]) for e in memory.banks_for(8).source] == [3.0, 4.0, 7.0]


def test_pointers_are_bounded_and_newest_first():
    memory = DualMemory(capacity=6, compression="drop", pointer_frames=4)
    for t in range(10):
        memory.store(t, _entry(float(t)))
    pointers = memory.pointers_for(10)
    assert [d for d, _ in pointers] == [1, 2, 3]
    assert [float(p[0, 0]) for _, p in pointers] == [9.0, 8.0, 7.0]
    assert memory.stats()["recent_frames"] <= 6 + 1


def test_recent_store_stays_bounded_over_a_long_stream():
    memory = DualMemory(capacity=6, compression="merge", pointer_frames=16)
    for t in range(500):
        memory.banks_for(t)
        memory.store(t, _entry(float(t)))
    stats = memory.stats()
    assert stats["source_bank"] == 6 and stats["target_bank"] == 6 and stats["recent_frames"] <= 16


def test_temporal_slots_are_position_based_like_the_official_code():
    assert [temporal_slot(i, 1, 7) for i in range(1)] == [5]
    assert [temporal_slot(i, 3, 7) for i in range(3)] == [5, 4, 3]
    assert [temporal_slot(i, 6, 7) for i in range(6)] == [5, 4, 3, 2, 1, 0]
    assert [temporal_slot(i, 8, 7) for i in range(8)] == [5, 5, 5, 4, 3, 2, 1, 0]
