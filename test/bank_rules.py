"""The bank policies written down from their specification, for frames that carry one number each.

`official_banks` transcribes shared/reference/lmeec-official.md section 3.2 (Case A / Case B) and
section 3.3 (drop compression) line by line; `fill_banks` the `fill` policy of lmeec_core.memory's
docstring. Neither imports lmeec_core: the tests compare the implementation with these.

A frame's memory is a constant (`values[t]` on every token and channel), so every token picks the
same closest pair, and a bank is the list of the frames whose memories it holds, oldest first.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Step:
    """What one processed frame sees: the frames in its banks and the dropped pair index, if any."""

    frame: int
    bank: list[int]
    kstar: int | None


def closest_pair(bank: list[int], values: dict[int, float]) -> int:
    """Spec 3.3 steps 1-2: first index k minimising |v[k+1] - v[k]|."""
    distances = [abs(values[bank[k + 1]] - values[bank[k]]) for k in range(len(bank) - 1)]
    return distances.index(min(distances))


def drop_once(bank: list[int], values: dict[int, float]) -> tuple[list[int], int | None]:
    """Spec 3.3 step 4: remove element k*+1. A single entry has no pair (the official code raises): kept."""
    if len(bank) < 2:
        return bank, None
    k = closest_pair(bank, values)
    return bank[:k + 1] + bank[k + 2:], k


def official_banks(processed: list[bool], values: dict[int, float], capacity: int = 6) -> list[Step]:
    """Spec 3.2 for every processed frame t; S = stored target frames before t (Case A while S < capacity+1)."""
    stored: list[int] = []
    lists: list[int] = []
    steps = []
    for t, is_processed in enumerate(processed):
        if not is_processed:
            continue  # skipped: no forward pass, no memory, lists carried unchanged
        kstar = None
        if len(stored) < capacity + 1:  # Case A: the index window t-capacity .. t-1, rebuilt
            lists = [j for j in range(t - capacity, t) if j in stored]
        elif t - 1 in stored:  # Case B: append t-1, then compress exactly once
            lists, kstar = drop_once(lists + [t - 1], values)
        steps.append(Step(t, list(lists), kstar))
        stored.append(t)
    return steps


def fill_banks(processed: list[bool], values: dict[int, float], capacity: int = 6) -> list[Step]:
    """Fill: each processed frame enters on the next processed frame; drop down to capacity."""
    bank: list[int] = []
    last: int | None = None
    steps = []
    for t, is_processed in enumerate(processed):
        if not is_processed:
            continue
        kstar = None
        if last is not None:
            bank = bank + [last]
            while len(bank) > capacity:
                bank, kstar = drop_once(bank, values)
        steps.append(Step(t, list(bank), kstar))
        last = t
    return steps
