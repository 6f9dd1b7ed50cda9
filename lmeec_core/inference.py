"""One LM-EEC correspondence step on tensors, for one or several targets sharing the images.

This is the official per-frame computation (spec sections 2-4): the source memory of the current
frame gives the cross-view feature F_view, the two banks plus target object pointers give the
temporal feature F_mem, MV-MoE fuses them, the SAM decoder predicts the target mask, and both
views' memories are stored for later frames. Each memory is encoded once and reused.

Source tracking is what a robot needs on top: the target is given once (the prompt frame), then
segmented in the source view on every frame by SAM 2 video tracking over the prompt memory, the
source bank and source object pointers, and that mask drives the cross-view branch.

Several targets share one image encoding. Each keeps its own `TargetState` (banks, pointers,
prompt, frame index); every head after the image encoder runs once over the batch of targets,
one row per target. Memory attention needs memories of one length per call, so targets are
grouped by the length of theirs (in a steady stream all have full banks: one group).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .memory import BANKS, BankView, DualMemory, FrameMemory
from .model import LMEEC, MaskPrediction, ViewFeatures
from .model.memory_conditioning import Memory

Probe = Callable[[str, object], None]
# Memory tokens [L, 1, mem_dim] of one target, their encodings, and how many trailing ones are pointers.
TargetMemoryTokens = tuple[torch.Tensor, torch.Tensor, int]


def no_probe(name: str, value: object) -> None:
    """Default probe: intermediate values are not kept."""


def _tokens(memory_map: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> sequence-first [hw, B, C]."""
    return memory_map.flatten(2).permute(2, 0, 1)


def _own(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` as a tensor of its own storage (copied only when it is part of a larger one).

    What a target keeps between frames must not pin the storage of the whole batch of targets,
    or memory per target would grow with the number of targets.
    """
    if tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size():
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


def _row(batch: torch.Tensor, row: int, dim: int) -> torch.Tensor:
    """Row `row` of a batch along `dim`, kept as a tensor of its own."""
    return _own(batch.narrow(dim, row, 1))


def temporal_slot(position: int, length: int, num_maskmem: int) -> int:
    """`maskmem_tpos_enc` slot of bank entry `position` (0 = oldest) in a bank of `length`.

    The official inference code assigns slots by list position from the oldest entry
    (num_maskmem-2-position), so a partly filled bank's newest entry does not get slot 0.
    Banks longer than num_maskmem-1 (a capacity ablation) count from the newest entry and
    share the oldest slot.
    """
    oldest_slot = num_maskmem - 2
    if length <= num_maskmem - 1:
        return oldest_slot - position
    return min(oldest_slot, length - 1 - position)


@dataclass
class PromptMemory:
    """The prompt frame's source memory and object pointer, which source tracking conditions on."""

    memory: torch.Tensor  # [N, 1, mem_dim]
    pointer: torch.Tensor  # [1, C]
    index: int  # frame index of the prompt


@dataclass
class TargetState:
    """Everything one target carries from frame to frame; nothing in it is shared with other targets."""

    memory: DualMemory
    index: int = 0  # frame index of the frame being processed (0: the prompt frame)
    prompt: PromptMemory | None = None


@dataclass
class CrossViewResult:
    prediction: MaskPrediction  # one row per target
    bank_lens: list[int]  # per target
    pointer_tokens: list[int]  # per target


class CorrespondenceEngine:
    """Tensor-level LM-EEC inference over per-target bounded dual memories; no images, no numpy."""

    def __init__(self, model: LMEEC, banks: str = "dual", probe: Probe = no_probe) -> None:
        if banks not in BANKS:
            raise ValueError(f"unknown bank setting {banks!r}; expected one of {BANKS}")
        self.model = model
        self.banks = banks
        self.probe = probe
        self._memory_pos: torch.Tensor | None = None  # [N, 1, mem_dim]; depends on the grid size only

    def encode_source_memory(self, view: ViewFeatures, masks: torch.Tensor) -> torch.Tensor:
        """Memory tokens [N, K, mem_dim] of K source masks ([K, 1, S, S] in {0, 1}) on one image.

        The object score is fixed at 1 as in the official code, so no no-object embedding is added.
        """
        batch = masks.shape[0]
        score = torch.ones(batch, 1, device=masks.device)
        features, pos = self.model.encode_memory(view.expand(batch), masks, score)
        self._memory_pos = _tokens(pos[:1])
        self.probe("source_memory", features)
        return _tokens(features)

    def set_prompt(self, state: TargetState, source: ViewFeatures, source_memory: torch.Tensor,
                   pointer: torch.Tensor | None = None) -> torch.Tensor:
        """Remember the prompt frame's source memory for source tracking; returns its pointer.

        A mask prompt has no decoder output of its own, so its pointer comes from decoding the
        prompt frame against its own memory, the way a tracked frame gets one.
        """
        if pointer is None:
            slot = self.model.temporal_encoding(self.model.num_maskmem - 1)
            own, = self.model.condition_many(source, [(source_memory, self._memory_pos + slot, 0)])
            pointer = self.model.predict_mask(own, source).obj_ptr
        state.prompt = PromptMemory(source_memory, pointer, state.index)
        return pointer

    def track_source(self, states: list[TargetState], source: ViewFeatures, banks: list[BankView]) -> MaskPrediction:
        """SAM 2 tracking of each target in the source view: prompt memory + source bank + pointers."""
        memories = [self._source_tracking_memory(state, bank) for state, bank in zip(states, banks)]
        groups, rows = _by_length(memories)
        conditioned = _in_row_order(self.model.condition_many(source, groups), rows)
        return self.model.predict_mask(conditioned, source.expand(len(states)))

    def _source_tracking_memory(self, state: TargetState, banks: BankView) -> TargetMemoryTokens:
        model, prompt = self.model, state.prompt
        cond_pos = self._memory_pos + model.temporal_encoding(model.num_maskmem - 1)
        tokens, token_pos = [prompt.memory, *banks.source], [cond_pos, *self._bank_encodings(len(banks))]
        max_distance = state.memory.pointer_frames - 1
        pointers = [(min(state.index - prompt.index, max_distance), prompt.pointer),
                    *state.memory.pointers_for(state.index, view="source")]
        ptr_tokens, ptr_pos = model.pointer_memory(pointers, max_distance)
        return torch.cat([*tokens, ptr_tokens], dim=0), torch.cat([*token_pos, ptr_pos], dim=0), ptr_tokens.shape[0]

    def cross_view(self, states: list[TargetState], target: ViewFeatures, source_memory: torch.Tensor,
                   banks: list[BankView], source_pointers: list[torch.Tensor | None]) -> CrossViewResult:
        """Predict each target's mask in the target view and store both views' memories per target.

        Row k of `source_memory` ([N, K, mem_dim]) and of the result belongs to `states[k]`.
        """
        model, batch = self.model, len(states)
        target_rows = target.expand(batch)
        temporal = [self._temporal_memory(state, bank) for state, bank in zip(states, banks)]
        with_memory = [row for row, memory in enumerate(temporal) if memory is not None]
        groups, rows = _by_length([temporal[row] for row in with_memory])
        # One memory attention call: the target image's first self-attention is computed once and
        # shared by F_view and every group of F_mem.
        f_view, *f_mem = model.condition_many(target, [(source_memory, self._memory_pos.expand(-1, batch, -1), 0),
                                                       *groups])
        f_mem = _in_row_order(f_mem, rows) if f_mem else None
        fused = self._fuse(f_mem, f_view, with_memory)
        prediction = model.predict_mask(fused, target_rows)
        target_features, _ = model.encode_memory(target_rows, prediction.high_res, prediction.score_logit)
        target_memory = _tokens(target_features)
        for row, (state, pointer) in enumerate(zip(states, source_pointers)):
            state.memory.store(state.index, FrameMemory(
                _row(source_memory, row, 1), _row(target_memory, row, 1), _row(prediction.obj_ptr, row, 0),
                None if pointer is None else _own(pointer)))
        for name, value in (("banks", banks), ("F_view", f_view), ("F_mem", f_mem), ("fused", fused),
                            ("target_memory", target_features), ("memory_pos", self._memory_pos)):
            self.probe(name, value)
        return CrossViewResult(prediction, [len(bank) for bank in banks],
                               [0 if memory is None else memory[2] for memory in temporal])

    def _fuse(self, f_mem: torch.Tensor | None, f_view: torch.Tensor, with_memory: list[int]) -> torch.Tensor:
        """Fuse F_mem and F_view of the targets that have temporal memory; the others keep F_view.

        Without memory (first frame after a prompt or reset) every fusion is F_view alone, as in
        the official code.
        """
        if f_mem is None or len(with_memory) == f_view.shape[0]:
            return self.model.fuse(f_mem, f_view)
        rows = torch.tensor(with_memory, device=f_view.device)
        return f_view.index_copy(0, rows, self.model.fuse(f_mem, f_view.index_select(0, rows)))

    def _bank_encodings(self, length: int) -> list[torch.Tensor]:
        num_maskmem = self.model.num_maskmem
        return [self._memory_pos + self.model.temporal_encoding(temporal_slot(i, length, num_maskmem))
                for i in range(length)]

    def _temporal_memory(self, state: TargetState, banks: BankView) -> TargetMemoryTokens | None:
        """[source bank; target bank; target pointer tokens] with their encodings, per the bank setting."""
        if len(banks) == 0:
            return None
        encodings = self._bank_encodings(len(banks))
        tokens, token_pos = [], []
        if self.banks in ("dual", "source"):
            tokens, token_pos = [*tokens, *banks.source], [*token_pos, *encodings]
        if self.banks in ("dual", "target"):
            tokens, token_pos = [*tokens, *banks.target], [*token_pos, *encodings]
        pointer_tokens = 0
        memory = state.memory
        pointers = memory.pointers_for(state.index) if self.banks != "source" else []
        if pointers:
            ptr_tokens, ptr_pos = self.model.pointer_memory(pointers, memory.pointer_frames - 1)
            tokens, token_pos = [*tokens, ptr_tokens], [*token_pos, ptr_pos]
            pointer_tokens = ptr_tokens.shape[0]
        return torch.cat(tokens, dim=0), torch.cat(token_pos, dim=0), pointer_tokens


def _by_length(memories: list[TargetMemoryTokens]) -> tuple[list[Memory], list[int]]:
    """Targets' memories as batched memories, one per (length, pointer count): memory attention
    needs one length per call. Returns them and the target rows in the order of their outputs."""
    groups: dict[tuple[int, int], list[int]] = {}
    for row, (memory, _, pointer_tokens) in enumerate(memories):
        groups.setdefault((memory.shape[0], pointer_tokens), []).append(row)
    batched = [(torch.cat([memories[row][0] for row in rows], dim=1),
                torch.cat([memories[row][1] for row in rows], dim=1), pointer_tokens)
               for (_, pointer_tokens), rows in groups.items()]
    return batched, [row for rows in groups.values() for row in rows]


def _in_row_order(outputs: list[torch.Tensor], rows: list[int]) -> torch.Tensor:
    """The outputs of `_by_length`'s groups ([k, C, h, w] each) as one batch in target row order."""
    conditioned = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
    if rows == sorted(rows):
        return conditioned
    return conditioned[torch.tensor(rows, device=conditioned.device).argsort()]
