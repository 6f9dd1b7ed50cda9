"""The trunk stage's objective: view-invariant object features from dense cross-view correspondences.

LM-EEC carries the source mask to the target view through memory attention: target tokens attend to
source memory tokens, which are projections of the source image features. That only lands on the
right object if a target token's feature resembles the source tokens of the same object, whatever
the viewpoint. Learning that from one mask per 8-frame clip is slow (a from-scratch model learned to
find the usual target instead). The renderer gives every pixel's instance in both views, so here the
image encoder alone is trained on single frame pairs with a soft InfoNCE loss between the tokens of
the two views: a token of object i in one view must pick, among all tokens of the other view, those
covered by object i (weighted by how much of each token the object covers); other objects, look-alikes
included, and the background are the negatives.

The loss applies to the stride-16 feature that memory attention reads and, with a smaller weight, to
the stride-8 FPN level. Each level has a linear projection head that exists only for this stage (it is
saved in the training state, not in the exported model): downstream, memory attention learns its own
linear query/key projections.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .data.pairs import MAX_INSTANCES, FramePairBatch
from .model import LMEEC

# FPN levels of sam2's image encoder output (`backbone_fpn`, after scalp): stride 4, 8, 16.
LEVELS = {"s16": 2, "s8": 1}


@dataclass(frozen=True)
class ContrastiveConfig:
    """Weights per FPN level, temperature, projection width and what counts as an anchor token."""

    weights: tuple[tuple[str, float], ...] = (("s16", 1.0), ("s8", 0.5))
    temperature: float = 0.1
    dim: int = 64
    min_anchor_share: float = 0.3  # an anchor token is covered at least this much by one object
    min_match_mass: float = 0.25  # the object covers at least this many tokens' worth in the other view


def token_shares(instances: torch.Tensor, stride: int) -> torch.Tensor:
    """[B, N, I]: the share of each stride x stride token covered by each instance id (rows sum to 1)."""
    one_hot = F.one_hot(instances.long(), MAX_INSTANCES).permute(0, 3, 1, 2).float()  # [B, I, S, S]
    pooled = F.avg_pool2d(one_hot, kernel_size=stride, stride=stride)
    return pooled.flatten(2).transpose(1, 2)


def soft_infonce(queries: torch.Tensor, keys: torch.Tensor, query_shares: torch.Tensor,
                 key_shares: torch.Tensor, config: ContrastiveConfig) -> tuple[torch.Tensor, int]:
    """Sum over anchors of -sum_k w_k log softmax(q.k / T), and the number of anchors.

    `queries` [B, Nq, D] and `keys` [B, Nk, D] are L2-normalised tokens of the two views. An anchor is a
    query token mostly covered by one object (not the background, id 0) that the key view also shows;
    its target distribution w over the key tokens is that object's share of each key token, normalised.
    """
    share, label = query_shares.max(-1)  # [B, Nq]
    weights = torch.gather(key_shares.transpose(1, 2), 1, label[..., None].expand(-1, -1, keys.shape[1]))
    mass = weights.sum(-1)  # [B, Nq]: the anchor's object in the key view, in tokens
    anchors = (label > 0) & (share >= config.min_anchor_share) & (mass >= config.min_match_mass)
    if not anchors.any():
        return queries.sum() * 0.0, 0
    log_prob = (queries @ keys.transpose(1, 2) / config.temperature).log_softmax(-1)
    target = weights / mass.clamp(min=1e-6)[..., None]
    loss = -(target * log_prob).sum(-1)
    return loss[anchors].sum(), int(anchors.sum())


class TrunkForward(nn.Module):
    """The trunk stage's forward on a batch of frame pairs: returns the loss and, detached, its parts.

    Both views go through the image encoder as one batch; the loss is symmetric (ego tokens as
    anchors against exo tokens, and the reverse) and averaged over all anchors of the batch.
    """

    def __init__(self, model: LMEEC, config: ContrastiveConfig = ContrastiveConfig()) -> None:
        super().__init__()
        self.model = model
        self.config = config
        width = model.hidden_dim
        self.heads = nn.ModuleDict({level: nn.Linear(width, config.dim) for level, _ in config.weights})

    def forward(self, batch: FramePairBatch) -> dict[str, torch.Tensor]:
        size = batch.batch_size
        features = self.model.image_encoder(torch.cat([batch.ego_images, batch.exo_images]))["backbone_fpn"]
        out: dict[str, torch.Tensor] = {}
        loss = 0.0
        for level, weight in self.config.weights:
            feature = features[LEVELS[level]]  # [2B, C, h, w]
            stride = batch.ego_instances.shape[-1] // feature.shape[-1]
            tokens = F.normalize(self.heads[level](feature.flatten(2).transpose(1, 2)), dim=-1)
            ego, exo = tokens[:size], tokens[size:]
            ego_shares = token_shares(batch.ego_instances, stride)
            exo_shares = token_shares(batch.exo_instances, stride)
            to_exo, n_ego = soft_infonce(ego, exo, ego_shares, exo_shares, self.config)
            to_ego, n_exo = soft_infonce(exo, ego, exo_shares, ego_shares, self.config)
            level_loss = (to_exo + to_ego) / max(n_ego + n_exo, 1)
            loss = loss + weight * level_loss
            out[f"{level}_infonce"] = level_loss.detach()
            out[f"{level}_anchors"] = torch.tensor(float(n_ego + n_exo) / size)
            out[f"{level}_top1"] = _top1(ego, exo, ego_shares, exo_shares, self.config)
        out["loss"] = loss
        return out


@torch.no_grad()
def _top1(queries: torch.Tensor, keys: torch.Tensor, query_shares: torch.Tensor, key_shares: torch.Tensor,
          config: ContrastiveConfig) -> torch.Tensor:
    """Share of anchors whose most similar key token shows their object: a readable progress figure."""
    share, label = query_shares.max(-1)
    best = (queries @ keys.transpose(1, 2)).argmax(-1)  # [B, Nq]
    best_shares = torch.gather(key_shares, 1, best[..., None].expand(-1, -1, key_shares.shape[-1]))
    hit = torch.gather(best_shares, 2, label[..., None])[..., 0] > 0
    present = torch.gather(key_shares.sum(1), 1, label) >= config.min_match_mass
    anchors = (label > 0) & (share >= config.min_anchor_share) & present
    return hit[anchors].float().mean() if anchors.any() else torch.tensor(float("nan"))
