"""The matching loss on the memory attention: it reads the attention the layer really computes,
rewards attention on the source object from target object tokens, and trains the attention."""
from __future__ import annotations

import numpy as np
import torch

from lmeec_core.attention_supervision import matching_loss, object_tokens, record_cross_attention
from lmeec_core.data.clips import ClipConfig, RoomRecipe, SyntheticClips, collate_clips
from lmeec_core.model import build_preset
from lmeec_core.train import ClipForward, TrainConfig, param_groups

SIZE = 128  # objects must cover stride-16 cells


def test_recorded_probabilities_reproduce_each_layers_cross_attention_output():
    torch.manual_seed(0)
    model = build_preset("nano", image_size=SIZE, seed=0).eval()
    view = model.encode_image(torch.rand(2, 3, SIZE, SIZE))
    memory, pos = model.encode_memory(view, (torch.rand(2, 1, SIZE, SIZE) > 0.7).float(), torch.ones(2, 1))
    outputs = []
    hooks = [layer.cross_attn_image.register_forward_hook(lambda m, a, kw, out: outputs.append((m, kw, out)),
                                                          with_kwargs=True)
             for layer in model.memory_attention.layers]
    with record_cross_attention(model.memory_attention) as recorded, torch.no_grad():
        model.condition(view, memory.flatten(2).permute(2, 0, 1), pos.flatten(2).permute(2, 0, 1))
    for hook in hooks:
        hook.remove()
    assert len(recorded) == len(model.memory_attention.layers) == len(outputs)
    for probabilities, (attention, kwargs, output) in zip(recorded, outputs):
        values = attention._separate_heads(attention.v_proj(kwargs["v"]), attention.num_heads)
        rebuilt = attention.out_proj(attention._recombine_heads(probabilities @ values))
        torch.testing.assert_close(rebuilt, output, atol=1e-5, rtol=1e-4)
        assert torch.allclose(probabilities.sum(-1), torch.ones(()), atol=1e-5)
    # the probe leaves no hook behind
    assert all(not layer.cross_attn_image._forward_hooks for layer in model.memory_attention.layers)


def test_the_loss_is_low_for_attention_on_the_object_and_high_for_attention_at_the_same_place():
    grid = 4
    target = torch.zeros(1, 1, 16, 16)
    target[..., :4, :4] = 1  # target object: token 0
    source = torch.zeros(1, 1, 16, 16)
    source[..., 12:, 12:] = 1  # source object: token 15
    target_tokens, source_tokens = object_tokens(target, (grid, grid)), object_tokens(source, (grid, grid))
    matching = torch.full((1, 1, 16, 16), 1e-3)
    matching[0, 0, 0, 15] = 1.0  # the object token looks at the source object, the others elsewhere
    matching[0, 0, 1:, 0] = 1.0
    positional = torch.eye(16)[None, None]  # each token looks at its own place
    normalised = [p / p.sum(-1, keepdim=True) for p in (matching, positional)]
    good, bad = (matching_loss(p, target_tokens, source_tokens).item() for p in normalised)
    assert good < 0.05 < 3.0 < bad
    # a source object smaller than a token carries no signal
    tiny = torch.zeros(1, 1, 16, 16)
    tiny[..., 0, 0] = 1
    assert matching_loss(normalised[0], target_tokens, object_tokens(tiny, (grid, grid))).item() == 0


def test_the_matching_loss_trains_the_cross_attention_and_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    model = build_preset("nano", image_size=SIZE, seed=0).train()
    config = TrainConfig(image_size=SIZE, lr=2e-3, vision_lr=1e-3, grad_clip=1.0, steps=10)
    step = ClipForward(model, memory_size=6, pointer_frames=2, weights=config.loss_weights, source_loss_weight=0,
                       match_loss_weight=1.0)
    optimizer = torch.optim.AdamW(param_groups(model, config))
    clips = SyntheticClips(ClipConfig(image_size=SIZE, num_frames=1, direction="ego2exo"),
                           RoomRecipe(10, 6, objects="any"), 2)
    batch = collate_clips([clips[0], clips[1]])
    keys = model.memory_attention.layers[0].cross_attn_image.k_proj.weight
    matches = []
    for _ in range(config.steps):
        out = step(batch)
        optimizer.zero_grad()
        out["loss"].backward()
        if not matches:
            assert keys.grad is not None and keys.grad.abs().sum() > 0
        optimizer.step()
        matches.append(out["match"].item())
    assert np.isfinite(matches).all() and np.mean(matches[-3:]) < 0.8 * np.mean(matches[:3])
    without = ClipForward(model, memory_size=6, pointer_frames=2, weights=config.loss_weights, source_loss_weight=0)
    assert "match" not in without(batch)
