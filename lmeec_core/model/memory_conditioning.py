"""SAM 2's memory attention for inference: several memories per query view, RoPE without copies.

Bit-identical to `sam2.modeling.memory_attention.MemoryAttention` (the same operations on the same
operands, in the same order), only without work it repeats:

* One step attends the same target-view tokens to two memories (the source memory for F_view, the
  banks and pointers for F_mem). The first layer's self-attention sees only those tokens, so it is
  computed once and shared by both passes.
* SAM 2 rotates the keys by materialising the RoPE table repeated once per memory frame and writing
  the rotated keys back through a copy; here the rotation is an in-place complex multiply that
  broadcasts the per-frame table over the frames, the same products without the copies.

Inference only (in-place on fresh activations, no autograd); training keeps `LMEEC.condition`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2.modeling.sam.transformer import RoPEAttention

# (memory tokens [L, B, mem_dim], their encodings [L, B, mem_dim], trailing pointer tokens without RoPE)
Memory = tuple[torch.Tensor, torch.Tensor, int]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, channels = x.shape
    return x.reshape(batch, tokens, heads, channels // heads).transpose(1, 2).contiguous()


def _rotate_(x: torch.Tensor, freqs: torch.Tensor) -> None:
    """Rotate [B, heads, T, D] in place by the complex table [N, D/2], repeated over the T/N frames.

    Like SAM 2, the rotation is computed in float32 (a bf16 tensor is rotated in a float32 copy).
    """
    if x.dtype != torch.float32:
        rotated = x.float()
        _rotate_(rotated, freqs)
        x.copy_(rotated)
        return
    batch, heads, tokens, dim = x.shape
    frames = x.view(batch, heads, tokens // freqs.shape[0], freqs.shape[0], dim // 2, 2)
    torch.view_as_complex(frames).mul_(freqs)


def _rope_table(attn: RoPEAttention, tokens: int, device: torch.device) -> torch.Tensor:
    """The module's RoPE table for a square grid of `tokens` (SAM 2 recomputes it on a size change)."""
    if attn.freqs_cis.shape[0] != tokens or attn.freqs_cis.device != device:
        side = math.sqrt(tokens)
        attn.freqs_cis = attn.compute_cis(end_x=side, end_y=side).to(device)
    return attn.freqs_cis


def rope_attention(attn: RoPEAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   unrotated_keys: int = 0) -> torch.Tensor:
    """`RoPEAttention.forward` (batch-first inputs); the last `unrotated_keys` keys get no RoPE."""
    q = _heads(attn.q_proj(q), attn.num_heads)
    k = _heads(attn.k_proj(k), attn.num_heads)
    v = _heads(attn.v_proj(v), attn.num_heads)
    freqs = _rope_table(attn, q.shape[-2], q.device)
    if q.shape[-2] != k.shape[-2] and not attn.rope_k_repeat:
        raise ValueError("queries and keys differ in length but this attention does not repeat RoPE over keys")
    _rotate_(q, freqs)
    rotated = k.shape[-2] - unrotated_keys
    if rotated > 0:
        _rotate_(k[:, :, :rotated], freqs)
    out = F.scaled_dot_product_attention(q, k, v)
    batch, heads, tokens, dim = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(batch, tokens, heads * dim))


def _self_attention(layer: MemoryAttentionLayer, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
    normed = layer.norm1(tgt)
    qk = normed + query_pos if layer.pos_enc_at_attn else normed
    return tgt + rope_attention(layer.self_attn, qk, qk, normed)


def _cross_attention_and_mlp(layer: MemoryAttentionLayer, tgt: torch.Tensor, query_pos: torch.Tensor,
                             memory: torch.Tensor, pos: torch.Tensor, pointer_tokens: int) -> torch.Tensor:
    normed = layer.norm2(tgt)
    tgt = tgt + rope_attention(
        layer.cross_attn_image,
        normed + query_pos if layer.pos_enc_at_cross_attn_queries else normed,
        memory + pos if layer.pos_enc_at_cross_attn_keys else memory,
        memory,
        pointer_tokens,
    )
    return tgt + layer.linear2(layer.activation(layer.linear1(layer.norm3(tgt))))


def attend_memories(attention: MemoryAttention, curr: torch.Tensor, curr_pos: torch.Tensor,
                    memories: list[Memory]) -> list[torch.Tensor]:
    """`MemoryAttention(curr, memory, curr_pos, memory_pos, pointer_tokens)` for each memory.

    `curr`/`curr_pos` are sequence-first [HW, B, C]; returns one [HW, B', C] output per memory.
    A memory may hold B' rows for one query image (B = 1): several targets on one image share
    that image's first self-attention, computed once.
    """
    if not attention.batch_first:
        raise ValueError("memory attention with batch_first=False is not supported")
    tgt = curr + 0.1 * curr_pos if attention.pos_enc_at_input else curr
    tgt, query_pos = tgt.transpose(0, 1), curr_pos.transpose(0, 1)
    first, *rest = attention.layers
    shared = _self_attention(first, tgt, query_pos)
    outputs = []
    for memory, pos, pointer_tokens in memories:
        memory, pos = memory.transpose(0, 1), pos.transpose(0, 1)
        rows = memory.shape[0]
        queries = shared if rows == shared.shape[0] else shared.expand(rows, -1, -1)
        out = _cross_attention_and_mlp(first, queries, query_pos, memory, pos, pointer_tokens)
        for layer in rest:
            out = _self_attention(layer, out, query_pos)
            out = _cross_attention_and_mlp(layer, out, query_pos, memory, pos, pointer_tokens)
        outputs.append(attention.norm(out).transpose(0, 1))
    return outputs
