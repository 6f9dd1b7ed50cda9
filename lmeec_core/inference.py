"""One LM-EEC correspondence step on tensors, and SAM 2 tracking of the target in the source view.

This is the official per-frame computation (spec sections 2-4): the source memory of the current
frame gives the cross-view feature F_view, the two banks plus target object pointers give the
temporal feature F_mem, MV-MoE fuses them, the SAM decoder predicts the target mask, and both
views' memories are stored for later frames. Each memory is encoded once and reused.

Source tracking is what a robot needs on top: the target is given once (the prompt frame), then
segmented in the source view on every frame by SAM 2 video tracking over the prompt memory, the
source bank and source object pointers, and that mask drives the cross-view branch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .memory import BANKS, BankView, DualMemory, FrameMemory
from .model import LMEEC, MaskPrediction, ViewFeatures

Probe = Callable[[str, object], None]


def no_probe(name: str, value: object) -> None:
    """Default probe: intermediate values are not kept."""


def _tokens(memory_map: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> sequence-first [hw, B, C]."""
    return memory_map.flatten(2).permute(2, 0, 1)


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
class CrossViewResult:
    prediction: MaskPrediction
    bank_len: int
    pointer_tokens: int


class CorrespondenceEngine:
    """Tensor-level LM-EEC inference with bounded dual memory; no images, no numpy."""

    def __init__(self, model: LMEEC, memory: DualMemory, banks: str = "dual", probe: Probe = no_probe) -> None:
        if banks not in BANKS:
            raise ValueError(f"unknown bank setting {banks!r}; expected one of {BANKS}")
        self.model = model
        self.memory = memory
        self.banks = banks
        self.probe = probe
        self._prompt: tuple[torch.Tensor, torch.Tensor, int] | None = None  # memory, pointer, index
        self._memory_pos: torch.Tensor | None = None

    def clear(self) -> None:
        """Forget the prompt and every memory."""
        self._prompt = None
        self.memory.clear()

    def reset(self) -> None:
        """Forget temporal memory but keep the prompt (after a time jump the target is unchanged)."""
        self.memory.clear()

    def encode_source_memory(self, view: ViewFeatures, mask: torch.Tensor) -> torch.Tensor:
        """Memory tokens of a source frame from its binary mask ([B, 1, S, S] in {0, 1}).

        The object score is fixed at 1 as in the official code, so no no-object embedding is added.
        """
        score = torch.ones(mask.shape[0], 1, device=mask.device)
        features, pos = self.model.encode_memory(view, mask, score)
        self._memory_pos = _tokens(pos)
        self.probe("source_memory", features)
        return _tokens(features)

    def set_prompt(self, index: int, source: ViewFeatures, source_memory: torch.Tensor,
                   pointer: torch.Tensor | None = None) -> torch.Tensor:
        """Remember the prompt frame's source memory for source tracking; returns its pointer.

        A mask prompt has no decoder output of its own, so its pointer comes from decoding the
        prompt frame against its own memory, the way a tracked frame gets one.
        """
        if pointer is None:
            slot = self.model.temporal_encoding(self.model.num_maskmem - 1)
            own, = self.model.condition_many(source, [(source_memory, self._memory_pos + slot, 0)])
            pointer = self.model.predict_mask(own, source).obj_ptr
        self._prompt = (source_memory, pointer, index)
        return pointer

    def track_source(self, index: int, source: ViewFeatures, banks: BankView) -> MaskPrediction:
        """SAM 2 tracking of the target in the source view: prompt memory + source bank + pointers."""
        prompt_memory, prompt_pointer, prompt_index = self._prompt
        model = self.model
        cond_pos = self._memory_pos + model.temporal_encoding(model.num_maskmem - 1)
        tokens, token_pos = [prompt_memory, *banks.source], [cond_pos, *self._bank_encodings(len(banks))]
        max_distance = self.memory.pointer_frames - 1
        pointers = [(min(index - prompt_index, max_distance), prompt_pointer),
                    *self.memory.pointers_for(index, view="source")]
        ptr_tokens, ptr_pos = model.pointer_memory(pointers, max_distance)
        memory = torch.cat([*tokens, ptr_tokens], dim=0)
        memory_pos = torch.cat([*token_pos, ptr_pos], dim=0)
        conditioned, = model.condition_many(source, [(memory, memory_pos, ptr_tokens.shape[0])])
        return model.predict_mask(conditioned, source)

    def cross_view(self, index: int, source: ViewFeatures, target: ViewFeatures, source_memory: torch.Tensor,
                   banks: BankView, source_pointer: torch.Tensor | None = None) -> CrossViewResult:
        """Predict the target mask of frame `index` and store both views' memories."""
        model = self.model
        memory, memory_pos, pointer_tokens = self._temporal_memory(index, banks)
        memories = [(source_memory, self._memory_pos, 0)]
        if memory is not None:
            memories.append((memory, memory_pos, pointer_tokens))
        f_view, *f_mem = model.condition_many(target, memories)  # one pass each, first self-attention shared
        f_mem = f_mem[0] if f_mem else None
        fused = model.fuse(f_mem, f_view)
        prediction = model.predict_mask(fused, target)
        target_features, _ = model.encode_memory(target, prediction.high_res, prediction.score_logit)
        self.memory.store(index, FrameMemory(source_memory, _tokens(target_features),
                                             prediction.obj_ptr, source_pointer))
        for name, value in (("banks", banks), ("F_view", f_view), ("F_mem", f_mem), ("fused", fused),
                            ("target_memory", target_features), ("memory_pos", self._memory_pos)):
            self.probe(name, value)
        return CrossViewResult(prediction, len(banks), pointer_tokens)

    def _bank_encodings(self, length: int) -> list[torch.Tensor]:
        num_maskmem = self.model.num_maskmem
        return [self._memory_pos + self.model.temporal_encoding(temporal_slot(i, length, num_maskmem))
                for i in range(length)]

    def _temporal_memory(self, index: int, banks: BankView) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
        """[source bank; target bank; target pointer tokens] with their encodings, per the bank setting."""
        if len(banks) == 0:
            return None, None, 0
        encodings = self._bank_encodings(len(banks))
        tokens, token_pos = [], []
        if self.banks in ("dual", "source"):
            tokens, token_pos = [*tokens, *banks.source], [*token_pos, *encodings]
        if self.banks in ("dual", "target"):
            tokens, token_pos = [*tokens, *banks.target], [*token_pos, *encodings]
        pointer_tokens = 0
        pointers = self.memory.pointers_for(index) if self.banks != "source" else []
        if pointers:
            ptr_tokens, ptr_pos = self.model.pointer_memory(pointers, self.memory.pointer_frames - 1)
            tokens, token_pos = [*tokens, ptr_tokens], [*token_pos, ptr_pos]
            pointer_tokens = ptr_tokens.shape[0]
        return torch.cat(tokens, dim=0), torch.cat(token_pos, dim=0), pointer_tokens
