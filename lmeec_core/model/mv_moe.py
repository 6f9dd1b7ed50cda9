"""Memory-View Mixture of Experts (MV-MoE), the fusion block LM-EEC adds to SAM 2.

The class and sub-module names (`MV_MoE.mlp1/mlp2/conv1/conv2`) are those of the official code so
that official checkpoints load strictly. The forward pass follows the official `MV_MoE.forward`
(spec section 4): channel routing from pooled descriptors, then spatial routing from the
channel-modulated maps, each expert gated residually, the two experts summed.
"""
from __future__ import annotations

import torch
from torch import nn

FUSIONS = ("moe", "add", "view", "memory")


def _channel_router(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(2 * channels, channels), nn.ReLU(), nn.Linear(channels, channels), nn.Sigmoid()
    )


def _spatial_router(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2 * channels, channels, kernel_size=3, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(channels, 1, kernel_size=1, bias=False),
        nn.Sigmoid(),
    )


class MV_MoE(nn.Module):  # noqa: N801 - the official name keeps the state-dict keys
    """Fuse the temporal-memory feature with the cross-view feature.

    `memory_fused` (F_mem) and `view_guided` (F_view) are [B, C, H, W]; the result is
    F_mem*(1+w_M)*(1+s_M) + F_view*(1+w_V)*(1+s_V).
    """

    def __init__(self, channels: int = 256) -> None:
        super().__init__()
        self.mlp1 = _channel_router(channels)
        self.mlp2 = _channel_router(channels)
        self.conv1 = _spatial_router(channels)
        self.conv2 = _spatial_router(channels)

    def forward(self, memory_fused: torch.Tensor, view_guided: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([memory_fused.mean(dim=(2, 3)), view_guided.mean(dim=(2, 3))], dim=1)
        w_mem = self.mlp1(pooled)[:, :, None, None]
        w_view = self.mlp2(pooled)[:, :, None, None]
        mem = memory_fused + memory_fused * w_mem
        view = view_guided + view_guided * w_view
        both = torch.cat([mem, view], dim=1)
        mem = mem + mem * self.conv1(both)
        view = view + view * self.conv2(both)
        return mem + view


def fuse(fusion: str, moe: MV_MoE, memory_fused: torch.Tensor | None, view_guided: torch.Tensor) -> torch.Tensor:
    """Apply the configured fusion (the paper's ablation switch).

    With no temporal memory yet (first frame after a target or reset) every variant falls back to
    the cross-view feature alone, as the official code does.
    """
    if memory_fused is None or fusion == "view":
        return view_guided
    if fusion == "moe":
        return moe(memory_fused, view_guided)
    if fusion == "add":
        return memory_fused + view_guided
    if fusion == "memory":
        return memory_fused
    raise ValueError(f"unknown fusion {fusion!r}; expected one of {FUSIONS}")
