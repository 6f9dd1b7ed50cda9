"""Hiera's trunk for inference, without projecting the padding of its attention windows.

SAM 2's Hiera pads a feature map to a multiple of the window size, then runs the q/k/v projection
on every padded token and the output projection on every padded output, and crops afterwards. At
b+ 480 the stride-16 map is 30x30 with 14x14 windows (padded to 42x42: 1,764 tokens for 900) and the
stride-32 map 15x15 with 7x7 windows (441 for 225), so about a sixth of the trunk's FLOPs project
zeros. A padded token is the zero vector after `norm1`, so its q/k/v is exactly the projection's
bias: this trunk projects the real tokens only, fills the padding with the bias, and applies the
output projection after the crop. Attention sees the same queries, keys and values as SAM 2's; the
results differ from it only by GEMM rounding (a different row count can pick another kernel), which
is why `unpadded_windows` is a named tracker option and the official mode does not use it.

The window position embedding (a bicubic resize of `pos_embed` plus the tiled window embedding) is
the same for every image of one size, so it is computed once per size; that part is exact.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from sam2.modeling.backbones.hieradet import Hiera, MultiScaleAttention, MultiScaleBlock


def _padded(size: int, window: int) -> int:
    return -(-size // window) * window


def _to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, Hp, Wp, C] -> [B * windows, window, window, C]."""
    b, hp, wp, c = x.shape
    x = x.view(b, hp // window, window, wp // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window, window, c)


def _from_windows(x: torch.Tensor, window: int, batch: int, padded_hw: tuple[int, int],
                  hw: tuple[int, int]) -> torch.Tensor:
    """[B * windows, window, window, C] -> [B, H, W, C], the padding cropped."""
    (hp, wp), (h, w) = padded_hw, hw
    x = x.reshape(batch, hp // window, wp // window, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(batch, hp, wp, -1)
    return x[:, :h, :w] if (hp, wp) != (h, w) else x


def _attend(attn: MultiScaleAttention, qkv: torch.Tensor) -> torch.Tensor:
    """Multi-head attention (with Hiera's q pooling) on projected [N, h, w, 3C]; returns [N, h', w', C]."""
    n, h, w, _ = qkv.shape
    q, k, v = qkv.reshape(n, h * w, 3, attn.num_heads, -1).unbind(2)
    if attn.q_pool is not None:
        q = attn.q_pool(q.reshape(n, h, w, -1).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        h, w = q.shape[1:3]
        q = q.reshape(n, h * w, attn.num_heads, -1)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).reshape(n, h, w, -1)


def _block(block: MultiScaleBlock, x: torch.Tensor) -> torch.Tensor:
    """`MultiScaleBlock.forward` with the padding of its windows never projected."""
    shortcut = x
    x = block.norm1(x)
    if block.dim != block.dim_out:
        shortcut = block.pool(block.proj(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    attn, window = block.attn, block.window_size
    if window == 0:
        x = _attend(attn, attn.qkv(x))
    else:
        batch, h, w, _ = x.shape
        hp, wp = _padded(h, window), _padded(w, window)
        if (hp, wp) == (h, w):
            x = _attend(attn, attn.qkv(_to_windows(x, window)))
        else:
            qkv = attn.qkv(x)
            padded = attn.qkv.bias.to(qkv.dtype).expand(batch, hp, wp, qkv.shape[-1]).clone()
            padded[:, :h, :w] = qkv
            x = _attend(attn, _to_windows(padded, window))
        stride = block.q_stride[0] if block.q_stride else 1
        x = _from_windows(x, window // stride, batch, (hp // stride, wp // stride), shortcut.shape[1:3])
    x = shortcut + attn.proj(x)
    return x + block.mlp(block.norm2(x))


class WindowPositions:
    """Hiera's window position embedding per input grid, computed once per size at inference.

    It is recomputed when the embedding parameters change (e.g. weights loaded after first use:
    a comparison with the copy it was made from, a few thousand values); with gradients enabled
    (training) it is computed every time so that it receives its gradient.
    """

    def __init__(self, trunk: Hiera) -> None:
        self.trunk = trunk
        self._key: tuple | None = None
        self._made_from: tuple[torch.Tensor, ...] = ()
        self._embedding: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return self.trunk._get_pos_embed(x.shape[1:3])
        params = (self.trunk.pos_embed, self.trunk.pos_embed_window)
        key = (*x.shape[1:3], x.dtype, x.device)
        if key != self._key or not all(torch.equal(p, q) for p, q in zip(params, self._made_from)):
            self._embedding = self.trunk._get_pos_embed(x.shape[1:3])
            self._key, self._made_from = key, tuple(p.detach().clone() for p in params)
        return self._embedding


def trunk_features(trunk: Hiera, positions: WindowPositions, images: torch.Tensor,
                   unpadded_windows: bool) -> list[torch.Tensor]:
    """Hiera's per-stage outputs [B, C, H, W]; SAM 2's own block forward unless `unpadded_windows`."""
    x = trunk.patch_embed(images)
    x = x + positions(x)
    outputs = []
    for i, block in enumerate(trunk.blocks):
        x = _block(block, x) if unpadded_windows else block(x)
        if i == trunk.stage_ends[-1] or (i in trunk.stage_ends and trunk.return_interm_layers):
            outputs.append(x.permute(0, 3, 1, 2))
    return outputs
