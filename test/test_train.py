"""Training: the loss falls, a run resumes where it stopped, and its checkpoint drives the tracker."""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from lmeec_core.data.clips import (MIN_SOURCE_PIXELS, Clip, ClipConfig, RoomRecipe, SyntheticClips, TakeClips,
                                   clip_from_frames, collate_clips, held_out_scene_seeds, train_scene_seeds,
                                   write_held_out_takes)
from lmeec_core.data.scene_layout import TARGET_ID
from lmeec_core.data.synthetic import SceneConfig, SyntheticScene, object_names
from lmeec_core.errors import ConfigError
from lmeec_core.model import build_preset, load_checkpoint, preset_config, save_checkpoint
from lmeec_core.train import STATE_FILE, ClipForward, TrainConfig, initial_model, lr_factor, param_groups, train
from lmeec_core.tracker import CorrespondenceTracker

SIZE = 64  # smallest input the nano trunk takes (multiple of 32); enough to exercise every path


def _tiny_run(tmp_path, **changes) -> TrainConfig:
    settings = dict(out_dir=str(tmp_path / "run"), preset="nano", image_size=SIZE, clip_frames=2, steps=2,
                    scenes=4, scene_frames=4, lr=1e-3, vision_lr=1e-3, grad_clip=1.0, log_every=1,
                    save_every=1, seed=0)
    return TrainConfig(**{**settings, **changes})


def test_the_loss_falls_on_a_fixed_clip():
    torch.manual_seed(0)
    model = build_preset("nano", image_size=SIZE, seed=0).train()
    config = TrainConfig(image_size=SIZE, lr=1e-3, vision_lr=1e-3, grad_clip=1.0, steps=8)
    step = ClipForward(model, memory_size=6, pointer_frames=3, weights=config.loss_weights, source_loss_weight=1.0)
    optimizer = torch.optim.AdamW(param_groups(model, config))
    clips = SyntheticClips(ClipConfig(image_size=SIZE, num_frames=3, direction="ego2exo"), RoomRecipe(10, 6), 1)
    batch = collate_clips([clips[0]])
    losses = []
    for _ in range(config.steps):
        out = step(batch)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    assert all(np.isfinite(losses))
    assert {"target_mask", "target_dice", "target_iou", "target_score", "source_mask"} <= set(out)
    assert np.mean(losses[-2:]) < 0.5 * np.mean(losses[:2])


@pytest.mark.parametrize("prompt_loss_weight", [0.0, 1.0])
def test_the_prompt_loss_trains_the_box_and_click_prompt_path(prompt_loss_weight):
    torch.manual_seed(0)
    model = build_preset("nano", image_size=SIZE, seed=0).train()
    config = TrainConfig(image_size=SIZE, lr=1e-3, vision_lr=1e-3, grad_clip=1.0, steps=6)
    step = ClipForward(model, memory_size=6, pointer_frames=2, weights=config.loss_weights, source_loss_weight=1.0,
                       prompt_loss_weight=prompt_loss_weight)
    optimizer = torch.optim.AdamW(param_groups(model, config))
    clips = SyntheticClips(ClipConfig(image_size=SIZE, num_frames=2, direction="ego2exo"), RoomRecipe(10, 6), 1)
    batch = collate_clips([clips[0]])
    prompt_embeddings = model.sam_prompt_encoder.point_embeddings  # [1] click, [2]/[3] box corners
    gradient = torch.zeros(len(prompt_embeddings))
    for _ in range(config.steps):
        out = step(batch)
        optimizer.zero_grad()
        out["loss"].backward()
        gradient += torch.stack([e.weight.grad.abs().sum() for e in prompt_embeddings])
        optimizer.step()
    assert ("prompt_iou_train" in out) == (prompt_loss_weight > 0)
    assert np.isfinite(out["loss"].item())
    # mask prompts never use the click or box embeddings; the prompt loss trains both (6 steps of
    # box-or-clicks with seed 0 draw each kind)
    assert (gradient[1:4] > 0).tolist() == [prompt_loss_weight > 0] * 3


def test_a_run_resumes_from_its_saved_step_and_exports_a_tracker_checkpoint(tmp_path):
    first = train(_tiny_run(tmp_path))
    state = torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)
    assert state["step"] == 2
    before = load_checkpoint(first)[0].state_dict()

    path = train(_tiny_run(tmp_path, steps=3, resume=True))
    with open(tmp_path / "run" / "metrics.csv") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == [1, 2, 3]
    assert torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)["step"] == 3

    model, report = load_checkpoint(path)
    assert report.kind == "lmeec_ros" and report.meta["steps"] == 3
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # step 3 did train
    frame = SyntheticScene(SceneConfig(seed=3, num_frames=2)).frame(0)
    tracker = CorrespondenceTracker(model)
    tracker.set_target("ego", frame.ego_image, frame.exo_image, mask=frame.ego_mask)
    result = tracker.step(frame.ego_image, frame.exo_image, source_mask=frame.ego_mask)
    assert result.mask.shape == frame.exo_mask.shape and 0.0 <= result.score <= 1.0


def test_a_run_split_into_sessions_by_schedule_steps_follows_the_schedule_of_one_run(tmp_path):
    def logged_rates(run_dir):
        with open(run_dir / "metrics.csv") as f:
            return [float(row["lr"]) for row in csv.DictReader(f)]

    whole = _tiny_run(tmp_path / "whole", steps=4, warmup_steps=1)
    train(whole)
    train(_tiny_run(tmp_path / "split", steps=2, schedule_steps=4, warmup_steps=1))
    train(_tiny_run(tmp_path / "split", steps=4, schedule_steps=4, warmup_steps=1, resume=True))
    rates = logged_rates(tmp_path / "whole" / "run")
    assert len(rates) == 4 and rates == pytest.approx(logged_rates(tmp_path / "split" / "run"), rel=1e-6)
    assert rates[1] > rates[2] > rates[3]  # one decay, no warm restart at the split
    with pytest.raises(ConfigError, match="schedule_steps"):
        _tiny_run(tmp_path, steps=4, schedule_steps=3)


def test_resume_refuses_a_different_run(tmp_path):
    train(_tiny_run(tmp_path, steps=1))
    with pytest.raises(ConfigError, match="seed"):
        train(_tiny_run(tmp_path, steps=2, seed=1, resume=True))


def test_initialisation_from_a_project_or_a_sam2_style_checkpoint(tmp_path):
    source = build_preset("nano", image_size=SIZE, seed=3)
    save_checkpoint(source, tmp_path / "own.pt", preset_config("nano", image_size=SIZE))
    model, config = initial_model(TrainConfig(init=str(tmp_path / "own.pt"), fusion="add"))
    assert model.fusion == config["model"]["fusion"] == "add"  # an ablation started from trained weights
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())

    sam2_like = {k: v for k, v in source.state_dict().items() if not k.startswith("MV_MoE.")}
    torch.save({"model": sam2_like}, tmp_path / "sam2.pt")
    model, config = initial_model(TrainConfig(init=str(tmp_path / "sam2.pt"), preset="nano", image_size=SIZE))
    assert config["model"]["image_size"] == SIZE and model.fusion == "moe"
    assert torch.equal(model.state_dict()["obj_ptr_proj.layers.0.weight"], source.state_dict()["obj_ptr_proj.layers.0.weight"])


def test_torchrun_trains_with_two_processes_over_loopback(tmp_path):
    """The DistributedDataParallel path (gloo on CPU): both ranks step, rank 0 logs and exports."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "lmeec_core.train",
         "--out-dir", str(tmp_path / "run"), "--preset", "nano", "--image-size", str(SIZE), "--clip-frames", "2",
         "--steps", "2", "--scenes", "4", "--scene-frames", "4", "--device", "cpu", "--threads", "1",
         "--log-every", "1"],
        env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"model": str(tmp_path / "run" / "model.pt")}
    with open(tmp_path / "run" / "metrics.csv") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == [1, 2]  # one writer: rank 0
    model, report = load_checkpoint(tmp_path / "run" / "model.pt")
    assert report.meta["world_size"] == 2 and report.meta["steps"] == 2
    start = initial_model(TrainConfig(preset="nano", image_size=SIZE, seed=0))[0].state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in model.state_dict().items())  # the ranks did train


def test_optimizer_groups_follow_the_recipe():
    model = build_preset("nano", image_size=SIZE, seed=0)
    config = TrainConfig(lr=1e-4, vision_lr=1e-5, layer_decay=0.5, weight_decay=0.1)
    groups = param_groups(model, config)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    params = dict(model.named_parameters())
    trunk = model.image_encoder.trunk
    top = trunk.get_num_layers() + 1
    assert rate[id(params["MV_MoE.mlp1.0.weight"])] == 1e-4
    assert rate[id(params["image_encoder.neck.convs.0.conv.weight"])] == 1e-5
    assert rate[id(params["image_encoder.trunk.pos_embed"])] == 1e-5  # exempt from layer decay
    assert rate[id(params["image_encoder.trunk.patch_embed.proj.weight"])] == pytest.approx(1e-5 * 0.5 ** top)
    assert rate[id(params["image_encoder.trunk.blocks.0.attn.qkv.weight"])] == pytest.approx(1e-5 * 0.5 ** (top - 1))
    assert decay[id(params["MV_MoE.mlp1.0.bias"])] == 0.0
    assert decay[id(params["memory_attention.norm.weight"])] == 0.0
    assert decay[id(params["memory_attention.layers.0.linear1.weight"])] == 0.1
    assert sum(len(g["params"]) for g in groups) == len(params)


def test_cosine_schedule_with_warmup():
    config = TrainConfig(steps=110, warmup_steps=10, lr_end_factor=0.1)
    assert lr_factor(0, config) == pytest.approx(0.1)
    assert lr_factor(9, config) == pytest.approx(1.0)
    assert lr_factor(10, config) == pytest.approx(1.0)
    assert lr_factor(60, config) == pytest.approx(0.55)
    assert lr_factor(110, config) == pytest.approx(0.1)
    assert lr_factor(60, TrainConfig(steps=50, schedule_steps=110, warmup_steps=10)) == pytest.approx(0.55)


def test_training_and_held_out_rooms_are_disjoint():
    assert not set(train_scene_seeds(100_000)) & set(held_out_scene_seeds(100_000))


def test_clips_from_processed_takes_match_the_rendered_frames(tmp_path):
    write_held_out_takes(tmp_path, scenes=1, frames=3, fps=3.0)
    clips = TakeClips(tmp_path, ClipConfig(image_size=SIZE, num_frames=2, direction="exo2ego"), length=1)
    clip = clips[0]
    assert clip.direction == "exo2ego"
    assert clip.source_images.shape == (2, 3, SIZE, SIZE) and clip.target_masks.shape == (2, 1, 1, SIZE, SIZE)
    assert clip.source_masks[0].any()  # the clip starts where the source view shows the target
    with pytest.raises(ConfigError, match="no take"):
        TakeClips(tmp_path, ClipConfig(num_frames=4), length=1)


def test_synthetic_clips_follow_any_visible_object_a_table_object_or_only_the_target():
    """'any': only the prompt tells which object; 'table': the same among table objects; 'target': the target."""
    def draws(objects: str) -> list[int]:
        clips = SyntheticClips(ClipConfig(image_size=SIZE, num_frames=2, direction="ego2exo"),
                               RoomRecipe(num_scenes=10, scene_frames=6, objects=objects), 8)
        followed = []
        for index in range(len(clips)):
            draw, frames = clips.draw(index)
            for frame in frames:
                assert np.array_equal(frame.ego_mask, frame.ego_instances == TARGET_ID)  # the room's target
            (instance,) = draw.instances
            assert (frames[0].ego_instances == instance).sum() >= MIN_SOURCE_PIXELS   # visible where prompted
            own = [frame.of_object(instance) for frame in frames]
            assert torch.equal(clips[index].source_masks, clip_from_frames([own], "ego2exo", SIZE).source_masks)
            followed.append(instance)
        return followed

    assert set(draws("target")) == {TARGET_ID}
    anywhere, on_table = draws("any"), draws("table")
    assert len(set(anywhere)) >= 3 and len(set(on_table)) >= 3
    table_ids = set(object_names(SceneConfig(), table_only=True).values())  # the same ids in every room
    assert set(on_table) <= table_ids and not set(anywhere) <= table_ids


def test_bad_configs_are_refused():
    with pytest.raises(ConfigError, match="direction"):
        TrainConfig(direction="sideways")
    with pytest.raises(ConfigError, match="objects"):
        TrainConfig(objects="everything")
    with pytest.raises(ConfigError, match="data"):
        TrainConfig(data="/no/such/folder")
    model = build_preset("nano", image_size=SIZE, seed=0)
    with pytest.raises(ConfigError, match="memory_size"):
        ClipForward(model, memory_size=7, pointer_frames=8, weights=TrainConfig().loss_weights, source_loss_weight=0)


def test_the_shipped_nano_checkpoint_matches_its_record():
    import hashlib
    from pathlib import Path

    assets = Path(__file__).resolve().parents[1] / "lmeec_core" / "assets"
    record = json.loads((assets / "nano.json").read_text())
    data = (assets / "nano.pt").read_bytes()
    assert len(data) < 25_000_000 and hashlib.sha256(data).hexdigest() == record["sha256"]
    model, report = load_checkpoint(assets / "nano.pt")
    assert report.kind == "lmeec_ros" and model.fusion == "moe" and model.image_size == record["model"]["image_size"]
    assert {"ego2exo", "exo2ego"} == set(record["held_out"]["results"])


def test_clips_can_follow_several_objects_that_share_the_images():
    one, three = (SyntheticClips(ClipConfig(image_size=SIZE, num_frames=2, direction="exo2ego"),
                                 RoomRecipe(num_scenes=10, scene_frames=6, objects_per_clip=k), 4) for k in (1, 3))
    for index in range(4):
        draw, frames = three.draw(index)
        assert len(set(draw.instances)) == len(draw.instances) >= 2
        assert draw.instances[0] == one.draw(index)[0].instances[0]  # the first object's stream is unchanged
        clip = three[index]
        assert clip.target_masks.shape == (2, len(draw.instances), 1, SIZE, SIZE)
        for k, instance in enumerate(draw.instances):
            alone = clip_from_frames([[f.of_object(instance) for f in frames]], "exo2ego", SIZE)
            assert torch.equal(clip.source_masks[:, k], alone.source_masks[:, 0])
            assert torch.equal(clip.target_images, alone.target_images)


def test_objects_of_one_clip_are_independent_rows():
    """A batch of K objects over one clip's images gives each object the loss it gets alone."""
    model = build_preset("nano", image_size=SIZE, seed=0).eval()  # no dropout: rows must match exactly
    step = ClipForward(model, memory_size=6, pointer_frames=3, weights=TrainConfig().loss_weights,
                       source_loss_weight=1.0)
    clips = SyntheticClips(ClipConfig(image_size=SIZE, num_frames=3, direction="ego2exo"),
                           RoomRecipe(num_scenes=10, scene_frames=6, objects_per_clip=3), 1)
    clip = clips[0]
    rows = clip.source_masks.shape[1]
    together = step(collate_clips([clip]))
    alone = [step(collate_clips([Clip(clip.source_images, clip.target_images, clip.source_masks[:, k:k + 1],
                                      clip.target_masks[:, k:k + 1], clip.direction)])) for k in range(rows)]
    for name in ("target_mask", "target_dice", "target_score", "source_mask", "loss"):
        assert together[name].item() == pytest.approx(np.mean([a[name].item() for a in alone]), rel=1e-4), name
