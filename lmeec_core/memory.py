"""The two bounded memory banks of LM-EEC and their compression.

Each bank (source view, target view) holds at most `capacity` entries of per-token memories
([N, B, C] with N spatial tokens). A bank policy says when a processed frame enters the banks and
how far compression shortens them:

* `official` is the official inference code's (spec section 3.2). While at most `capacity`
  frames have been stored (Case A), the banks are the index window t-capacity .. t-1 of stored
  frames, so gaps from skipped frames shrink them. From then on (Case B) the previous frame is
  appended only if it was processed (frame t-1), and the bank is compressed exactly once, so the
  size reached at the last Case-A step persists for the rest of the sequence.
* `fill` is the streaming policy: every processed frame enters the banks (on the next processed
  frame) and compression runs until the banks are back at `capacity`. Without skipped frames it
  is the official policy; after a gap the banks fill up again and the last frame before the gap
  is kept instead of lost, which is what a robot stream that loses its target for a while needs.

Compression works per spatial token on the adjacent pair of entries closest in L2:
`drop` removes the later element (what the official code actually does), `merge` replaces the
pair by its mean (what the paper describes and the code intended), `fifo` drops the oldest entry.
Nothing here grows with stream length: banks are bounded and so is the recent-frame store that
serves index windows and object pointers.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

COMPRESSIONS = ("merge", "drop", "fifo")
BANKS = ("dual", "source", "target")
BANK_POLICIES = ("official", "fill")


def closest_adjacent_pair(bank: torch.Tensor) -> torch.Tensor:
    """Per token, the index k of the adjacent pair (k, k+1) with the smallest L2 distance.

    `bank` is [T, N, B, C]; returns [B, N] (first index on ties, as torch.min).
    """
    seq = bank.permute(2, 0, 1, 3)  # [B, T, N, C], the official layout
    dist = torch.norm(seq[:, :-1] - seq[:, 1:], p=2, dim=-1)  # [B, T-1, N]
    return torch.min(dist, dim=1).indices


def compress(bank: torch.Tensor, strategy: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Shorten a [T, N, B, C] bank by one entry; returns the bank and the per-token pair index."""
    if strategy == "fifo":
        return bank[1:], None
    if strategy not in ("drop", "merge"):
        raise ValueError(f"unknown compression {strategy!r}; expected one of {COMPRESSIONS}")
    length = bank.shape[0]
    kstar = closest_adjacent_pair(bank)  # [B, N]
    slots = torch.arange(length - 1, device=bank.device)[:, None, None]  # [T-1, 1, 1]
    k = kstar.t()[None]  # [1, N, B]
    source = slots + (slots > k).long()  # keep 0..k, skip k+1
    index = source[..., None].expand(-1, -1, -1, bank.shape[-1])
    out = torch.gather(bank, 0, index)
    if strategy == "merge":
        pair_mean = 0.5 * (torch.gather(bank, 0, k[..., None].expand_as(out[:1]))
                           + torch.gather(bank, 0, (k + 1)[..., None].expand_as(out[:1])))
        out = torch.where((slots == k)[..., None], pair_mean, out)
    return out, kstar


@dataclass(frozen=True)
class BankPolicy:
    """When a processed frame enters the banks, and how many compressions follow (module docstring)."""

    name: str
    capacity: int

    def __post_init__(self) -> None:
        if self.name not in BANK_POLICIES:
            raise ValueError(f"unknown bank policy {self.name!r}; expected one of {BANK_POLICIES}")
        if self.capacity < 1:
            raise ValueError(f"memory capacity must be >= 1, got {self.capacity}")

    def rebuilds_window(self, stored: int) -> bool:
        """Official Case A: with at most `capacity` frames stored, the banks are rebuilt as the index window."""
        return self.name == "official" and stored <= self.capacity

    def admits(self, frame: int, index: int) -> bool:
        """Whether the newest stored `frame` enters the banks of frame `index` (official Case B: only t-1)."""
        return self.name == "fill" or frame == index - 1

    def compressions(self, length: int) -> int:
        """Compressions after an append made the banks `length` long.

        Official: exactly one. A single entry cannot be compressed (the official code raises there:
        its per-token minimum runs over zero adjacent pairs), so it is kept. Fill: down to capacity.
        """
        if self.name == "official":
            return 1 if length > 1 else 0
        return max(0, length - self.capacity)


@dataclass
class FrameMemory:
    """What one processed frame leaves behind for later frames."""

    source: torch.Tensor  # source-view memory [N, B, C]
    target: torch.Tensor  # target-view memory [N, B, C]
    target_pointer: torch.Tensor  # target object pointer [B, C_hidden]
    source_pointer: torch.Tensor | None  # source object pointer when the source is tracked


@dataclass
class BankView:
    """The banks as the memory attention sees them for one frame."""

    source: list[torch.Tensor]
    target: list[torch.Tensor]
    kstar: tuple[torch.Tensor, torch.Tensor] | None  # per-token pair indices when compression ran

    def __len__(self) -> int:
        return len(self.source)


class DualMemory:
    """Source and target banks, plus the bounded store of recent frames for windows and pointers."""

    def __init__(self, capacity: int = 6, compression: str = "drop", pointer_frames: int = 16,
                 policy: str = "official") -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"unknown compression {compression!r}; expected one of {COMPRESSIONS}")
        self.policy = BankPolicy(policy, capacity)
        self.capacity = capacity
        self.compression = compression
        self.pointer_frames = pointer_frames
        self._history = max(capacity, pointer_frames - 1)
        self.clear()

    def clear(self) -> None:
        """Forget every memory (new target, or a reset after a time jump)."""
        self._recent: OrderedDict[int, FrameMemory] = OrderedDict()
        self._source: list[torch.Tensor] = []
        self._target: list[torch.Tensor] = []
        self._newest: int | None = None  # the stored frame that has not entered the banks yet
        self.stored = 0  # frames stored since the last clear (S in the spec)

    def banks_for(self, index: int) -> BankView:
        """Build the banks frame `index` attends to, updating the carried compressed banks."""
        newest, self._newest = self._newest, None
        if self.policy.rebuilds_window(self.stored):
            window = [self._recent[j] for j in range(index - self.capacity, index) if j in self._recent]
            self._source = [m.source for m in window]
            self._target = [m.target for m in window]
            return BankView(list(self._source), list(self._target), None)
        kstar = None
        if newest is not None and self.policy.admits(newest, index):
            entry = self._recent[newest]
            self._source, k_src = self._append_compressed(self._source, entry.source)
            self._target, k_tgt = self._append_compressed(self._target, entry.target)
            kstar = None if k_src is None else (k_src, k_tgt)
        return BankView(list(self._source), list(self._target), kstar)

    def _append_compressed(
        self, bank: list[torch.Tensor], entry: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        stacked = torch.stack([*bank, entry], dim=0)
        kstar = None
        for _ in range(self.policy.compressions(stacked.shape[0])):
            stacked, kstar = compress(stacked, self.compression)
        return list(stacked.unbind(0)), kstar

    def pointers_for(self, index: int, view: str = "target") -> list[tuple[int, torch.Tensor]]:
        """Object pointers of earlier frames as (distance, pointer), newest first (SAM 2's rule)."""
        found = []
        for distance in range(1, self.pointer_frames):
            frame = index - distance
            if frame < 0:
                break
            memory = self._recent.get(frame)
            if memory is None:
                continue
            pointer = memory.target_pointer if view == "target" else memory.source_pointer
            if pointer is not None:
                found.append((distance, pointer))
        return found

    def latest_source(self) -> torch.Tensor | None:
        """The source memory of the newest stored frame, None when nothing is stored since the last clear.

        A target the source view has lost is followed in the target view from this memory: the
        last view of the object the source camera had.
        """
        if not self._recent:
            return None
        return next(reversed(self._recent.values())).source

    def store(self, index: int, memory: FrameMemory) -> None:
        """Keep a processed frame's memories; frames too old for any window or pointer are dropped."""
        self._recent[index] = memory
        self._newest = index
        self.stored += 1
        while self._recent and next(iter(self._recent)) < index - self._history:
            self._recent.popitem(last=False)

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor this memory holds: banks, recent frames' memories and pointers (for footprints)."""
        held = [*self._source, *self._target]
        for frame in self._recent.values():
            held += [frame.source, frame.target, frame.target_pointer]
            if frame.source_pointer is not None:
                held.append(frame.source_pointer)
        return held

    def stats(self) -> dict[str, int]:
        return {
            "source_bank": len(self._source),
            "target_bank": len(self._target),
            "recent_frames": len(self._recent),
        }
