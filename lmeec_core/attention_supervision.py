"""Supervising where the memory attention looks: a matching loss for cross-view training.

The official F_view pass carries the source mask into the target view through the memory
attention's cross-attention from target tokens to source memory tokens. Trained only through the
decoder's mask loss, a small model from scratch finds the easy solution of the same-view tasks
(attend to the same position), which is useless across views. This loss says directly what the
attention must do: a target token on the object puts its attention mass on the source memory tokens
of the object, a target token off the object puts it elsewhere. The renderer gives both masks, so
every pair carries this dense signal, and nothing about which object is the target reaches the
model: the labels only enter the loss.

`CrossAttentionProbe` records, during one `LMEEC.condition` call, each layer's cross-attention
probabilities, recomputed from the layer's own projections and sam2's rotary encoding exactly as
`RoPEAttention.forward` computes them (the forward itself is untouched).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from sam2.modeling.position_encoding import apply_rotary_enc
from sam2.modeling.sam.transformer import RoPEAttention
from torch import nn


def cross_attention_probabilities(attention: RoPEAttention, q: torch.Tensor, k: torch.Tensor,
                                  num_k_exclude_rope: int = 0) -> torch.Tensor:
    """Softmax attention [B, heads, Nq, Nk] of a `RoPEAttention` call with inputs q [B, Nq, C], k [B, Nk, Ck]."""
    q = attention._separate_heads(attention.q_proj(q), attention.num_heads)
    k = attention._separate_heads(attention.k_proj(k), attention.num_heads)
    num_k_rope = k.shape[-2] - num_k_exclude_rope
    side = int(math.sqrt(q.shape[-2]))
    freqs = attention.compute_cis(end_x=side, end_y=side).to(q.device)
    q, k_rope = apply_rotary_enc(q, k[:, :, :num_k_rope], freqs_cis=freqs, repeat_freqs_k=attention.rope_k_repeat)
    k = torch.cat([k_rope, k[:, :, num_k_rope:]], dim=-2)
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


@contextmanager
def record_cross_attention(memory_attention: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, each memory-attention layer's cross-attention probabilities are appended."""
    recorded: list[torch.Tensor] = []

    def hook(module: RoPEAttention, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        q, k = (kwargs[name] if name in kwargs else args[i] for i, name in enumerate(("q", "k")))
        recorded.append(cross_attention_probabilities(module, q, k, kwargs.get("num_k_exclude_rope", 0)))

    handles = [layer.cross_attn_image.register_forward_hook(hook, with_kwargs=True)
               for layer in memory_attention.layers]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


OBJECT_COVER = 0.2  # a token belongs to the object when the mask covers this much of its cell


def object_tokens(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Tokens of the object on the feature grid: [B, 1, S, S] -> [B, h*w] in {0, 1}.

    A fifth of a cell, not half: the synthetic objects cover one to a few stride-16 cells.
    """
    return (F.adaptive_avg_pool2d(masks.float(), size).flatten(1) >= OBJECT_COVER).float()


def matching_loss(probabilities: torch.Tensor, target_tokens: torch.Tensor, source_tokens: torch.Tensor,
                  ) -> torch.Tensor:
    """Per-row BCE between the attention mass a target token puts on the source object and whether it is on it.

    `probabilities` [B, heads, Nq, Nk] (query = target token, key = source memory token, the first
    Nk_src keys), object tokens [B, Nq] / [B, Nk_src] from `object_tokens`. Object and background
    target tokens weigh half each (the object covers a few tokens); rows without a source object
    token give 0. Returns [B].
    """
    keys = source_tokens.shape[1]
    mass = (probabilities[..., :keys] * source_tokens[:, None, None, :]).sum(-1).mean(1)  # [B, Nq]
    bce = F.binary_cross_entropy(mass.clamp(1e-6, 1 - 1e-6), target_tokens, reduction="none")
    object_term = (bce * target_tokens).sum(1) / target_tokens.sum(1).clamp(min=1)
    background_term = (bce * (1 - target_tokens)).sum(1) / (1 - target_tokens).sum(1).clamp(min=1)
    has_object = target_tokens.any(1).float()
    return source_tokens.any(1).float() * (has_object * object_term + background_term) / (1 + has_object)


def frame_matching_loss(attention: list[torch.Tensor], size: tuple[int, int], target_masks: torch.Tensor,
                        source_masks: torch.Tensor) -> torch.Tensor:
    """One frame's matching loss from its recorded layers: summed over rows, averaged over the layers.

    `size` is the feature grid (h, w); masks [B, 1, S, S] at the model input size.
    """
    target_tokens, source_tokens = object_tokens(target_masks, size), object_tokens(source_masks, size)
    return sum(matching_loss(p, target_tokens, source_tokens).sum() for p in attention) / len(attention)
