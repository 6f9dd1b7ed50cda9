"""The trunk stage: token shares of instance maps, the cross-view soft InfoNCE, and a resumable run."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmeec_core.contrastive import ContrastiveConfig, soft_infonce, token_shares
from lmeec_core.data.clips import RoomRecipe
from lmeec_core.data.pairs import MIN_SHARED_OBJECTS, SyntheticFramePairs, shared_objects
from lmeec_core.errors import ConfigError
from lmeec_core.train import STATE_FILE, TrainConfig, train

SIZE = 64


def test_token_shares_are_the_covered_fractions_of_each_token():
    instances = torch.zeros(1, 8, 8, dtype=torch.uint8)
    instances[0, :4, :4] = 3  # the whole top-left token of stride 4
    instances[0, 4:6, 4:8] = 5  # half of the bottom-right token
    shares = token_shares(instances, stride=4)  # [1, 4 tokens, MAX_INSTANCES]
    assert torch.allclose(shares.sum(-1), torch.ones(1, 4))
    assert shares[0, 0, 3] == 1.0 and shares[0, 3, 5] == 0.5 and shares[0, 3, 0] == 0.5
    assert shares[0, 1, 0] == 1.0


def _views(num_objects: int, tokens: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token shares of two views that show the same objects at different tokens (one object per token)."""
    rng = np.random.default_rng(seed)
    shares = []
    for _ in range(2):
        labels = np.zeros(tokens, dtype=np.int64)
        labels[rng.choice(tokens, num_objects, replace=False)] = np.arange(1, num_objects + 1)
        shares.append(F.one_hot(torch.from_numpy(labels), 32).float()[None])
    return shares[0], shares[1]


def test_the_loss_is_low_when_features_name_the_object_and_high_otherwise():
    config = ContrastiveConfig()
    ego_shares, exo_shares = _views(num_objects=5, tokens=16, seed=0)
    codes = F.normalize(torch.randn(32, 8), dim=-1)  # one code per instance id
    ego, exo = ego_shares @ codes, exo_shares @ codes
    matched, anchors = soft_infonce(ego, exo, ego_shares, exo_shares, config)
    assert anchors == 5  # background tokens are never anchors
    shuffled, _ = soft_infonce(ego, exo[:, torch.randperm(16, generator=torch.Generator().manual_seed(0))],
                               ego_shares, exo_shares, config)
    assert matched / anchors < 0.5 * shuffled / anchors


def test_objects_missing_from_the_other_view_are_not_anchors():
    config = ContrastiveConfig()
    ego_shares, _ = _views(num_objects=3, tokens=9, seed=1)
    empty = F.one_hot(torch.zeros(1, 9, dtype=torch.long), 32).float()
    features = F.normalize(torch.randn(1, 9, 4), dim=-1)
    loss, anchors = soft_infonce(features, features, ego_shares, empty, config)
    assert anchors == 0 and loss.item() == 0.0


def test_frame_pairs_show_objects_in_both_views():
    pairs = SyntheticFramePairs(SIZE, RoomRecipe(num_scenes=20, scene_frames=30), length=4, sample_seed=3)
    for index in range(len(pairs)):
        assert shared_objects(pairs.draw(index)) >= MIN_SHARED_OBJECTS
    batch = pairs[0]
    assert batch.ego_images.shape == (1, 3, SIZE, SIZE) and batch.exo_instances.shape == (1, SIZE, SIZE)
    assert torch.equal(pairs[1].ego_instances, pairs[1].ego_instances)  # item i is a pure function of i


def test_the_trunk_stage_trains_the_encoder_only_and_resumes_with_its_heads(tmp_path):
    settings = dict(stage="trunk", out_dir=str(tmp_path / "run"), preset="nano", image_size=SIZE, batch_size=2,
                    scenes=6, scene_frames=8, lr=1e-3, vision_lr=1e-3, grad_clip=1.0, log_every=1, save_every=1)
    first = torch.load(train(TrainConfig(**settings, steps=1)), weights_only=False)["model"]
    state = torch.load(tmp_path / "run" / STATE_FILE, weights_only=False)
    assert set(state["objective"]) == {"heads.s16.weight", "heads.s16.bias", "heads.s8.weight", "heads.s8.bias"}
    resumed = train(TrainConfig(**settings, steps=2, resume=True))
    straight = train(TrainConfig(**{**settings, "out_dir": str(tmp_path / "straight")}, steps=2))
    weights = [first, *(torch.load(p, weights_only=False)["model"] for p in (resumed, straight))]
    changed = {k for k in weights[0] if not torch.equal(weights[0][k], weights[1][k])}
    assert changed and all(k.startswith("image_encoder.") for k in changed)
    for key in weights[1]:
        assert torch.allclose(weights[1][key], weights[2][key], atol=1e-6), key
    with pytest.raises(ConfigError, match="trunk"):
        TrainConfig(stage="trunk", data=str(tmp_path))
