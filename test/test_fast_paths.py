"""The inference fast paths: bit-identical where they claim to be, within float noise where named.

The references here are SAM 2's own modules (`forward_image`, `MemoryAttention`), run on the same
small seeded models, so each check fails if the fast path computes anything else.
"""
from dataclasses import replace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lmeec_core.data.synthetic import SceneConfig, render_scene
from lmeec_core.errors import ConfigError
from lmeec_core.model import build_preset
from lmeec_core.tracker import OFFICIAL, SPEEDUPS, CorrespondenceTracker, TrackerConfig, parse_speedups


@pytest.fixture(scope="module")
def padded_model():
    """nano at 256 px: the 16x16 stride-16 map is padded to 28x28 by Hiera's 14x14 windows."""
    return build_preset("nano", image_size=256, seed=3)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))


def _sam2_features(model, images):
    """What `encode_image` computed before: SAM 2's forward_image and feature preparation."""
    _, feats, pos, _ = model._prepare_backbone_features(model.forward_image(images))
    return feats, pos


@torch.inference_mode()
def test_encoding_is_bit_identical_to_sam2_forward_image(padded_model, images):
    feats, pos = _sam2_features(padded_model, images)
    for _ in range(2):  # the second call uses the cached window position embedding
        view = padded_model.encode_image(images)
        assert torch.equal(view.feat, feats[-1]) and torch.equal(view.pos, pos[-1])
        for ours, theirs in zip(view.high_res, feats[:-1]):
            assert torch.equal(ours.flatten(2).permute(2, 0, 1), theirs)


@torch.inference_mode()
def test_unpadded_windows_skip_the_padding_and_stay_within_float_noise(padded_model, images):
    feats, _ = _sam2_features(padded_model, images)
    counted = {}
    for unpadded in (False, True):
        with FlopCounterMode(display=False) as counter:
            view = padded_model.encode_image(images, unpadded_windows=unpadded)
        counted[unpadded] = counter.get_total_flops()
    assert counted[True] < 0.95 * counted[False]
    assert torch.allclose(view.feat, feats[-1], rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(view.high_res, feats[:-1]):
        assert torch.allclose(ours.flatten(2).permute(2, 0, 1), theirs, rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_window_positions_follow_new_weights(padded_model, images):
    model = build_preset("nano", image_size=256, seed=3)
    model.encode_image(images[:1])
    model.image_encoder.trunk.pos_embed.data.add_(1.0)  # e.g. a checkpoint loaded after first use
    feats, _ = _sam2_features(model, images[:1])
    assert torch.equal(model.encode_image(images[:1]).feat, feats[-1])


@torch.inference_mode()
def test_batched_views_split_into_the_single_view_features(padded_model, images):
    both = padded_model.encode_image(images).split()
    for i, view in enumerate(both):
        alone = padded_model.encode_image(images[i:i + 1])
        assert view.feat.shape == alone.feat.shape and view.feat.is_contiguous()
        assert torch.allclose(view.feat, alone.feat, rtol=1e-5, atol=1e-5)
        assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(view.high_res, alone.high_res))


@torch.inference_mode()
def test_condition_many_is_bit_identical_to_sam2_memory_attention(padded_model, images):
    model = padded_model
    view = model.encode_image(images[:1])
    g = torch.Generator().manual_seed(1)
    tokens = view.feat.shape[0]
    ptr = 8
    memories = [
        (torch.randn(tokens, 1, 64, generator=g), torch.randn(tokens, 1, 64, generator=g), 0),
        (torch.randn(3 * tokens + ptr, 1, 64, generator=g), torch.randn(3 * tokens + ptr, 1, 64, generator=g), ptr),
    ]
    ours = model.condition_many(view, memories)
    for out, (memory, pos, pointers) in zip(ours, memories):
        assert torch.equal(out, model.condition(view, memory, pos, pointers))


@torch.inference_mode()
def test_condition_many_under_bf16_autocast_matches_sam2(padded_model, images):
    model = padded_model
    with torch.autocast("cpu", dtype=torch.bfloat16):
        view = model.encode_image(images[:1])
        memory = torch.randn(2 * view.feat.shape[0], 1, 64)
        ours, = model.condition_many(view, [(memory, memory.flip(0), 0)])
        theirs = model.condition(view, memory, memory.flip(0), 0)
    assert torch.equal(ours, theirs)


def test_speedup_names_parse_and_unknown_ones_are_refused():
    assert parse_speedups("all") == SPEEDUPS
    assert parse_speedups("none") == ()
    assert parse_speedups("batch_views") == ("batch_views",)
    with pytest.raises(ConfigError, match="unknown speed-up"):
        parse_speedups("batch_views,turbo")
    with pytest.raises(ConfigError, match="speedups"):
        TrackerConfig(speedups=("turbo",)).validate()
    assert OFFICIAL.speedups == ()


def test_fp32_speedups_track_like_the_official_numerics(padded_model):
    """A short stream: the named fp32 speed-ups stay within the parity fixture's float tolerance."""
    scene = list(render_scene(SceneConfig(seed=11, num_frames=6, ego_size=(120, 160), exo_size=(150, 200))))
    seen = {}
    for name, speedups in (("reference", ()), ("fast", SPEEDUPS)):
        values = seen[name] = {"fused": [], "score": []}

        def probe(key, value, values=values):
            if key == "fused":
                values["fused"].append(value.clone())
            elif key == "prediction":
                values["score"].append(value.prediction.score_logit.clone())

        tracker = CorrespondenceTracker(padded_model, replace(TrackerConfig(), speedups=speedups), probe)
        tracker.set_target("ego", scene[0].ego_image, scene[0].exo_image, mask=scene[0].ego_mask)
        for frame in scene[1:]:
            assert not tracker.step(frame.ego_image, frame.exo_image, source_mask=frame.ego_mask).skipped
    for key in ("fused", "score"):
        reference, fast = torch.stack(seen["reference"][key]), torch.stack(seen["fast"][key])
        assert reference.shape[0] == len(scene)
        assert float((reference - fast).abs().max()) <= 1e-4 * max(1.0, float(reference.abs().max()))
