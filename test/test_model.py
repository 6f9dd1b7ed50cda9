"""The LM-EEC network: MV-MoE, fusion switches, presets, checkpoint formats and refusals."""
from __future__ import annotations

import pytest
import torch

from lmeec_core.errors import CheckpointError, ConfigError
from lmeec_core.model import (FUSIONS, MV_MoE, build_model, load_checkpoint, preset_config,
                              save_checkpoint)
from lmeec_core.model.mv_moe import fuse

MOE_KEYS = {f"MV_MoE.{name}" for name in (
    "mlp1.0.weight", "mlp1.0.bias", "mlp1.2.weight", "mlp1.2.bias",
    "mlp2.0.weight", "mlp2.0.bias", "mlp2.2.weight", "mlp2.2.bias",
    "conv1.0.weight", "conv1.2.weight", "conv2.0.weight", "conv2.2.weight")}


def test_mv_moe_has_the_official_keys_shapes_and_size():
    moe = MV_MoE(256)
    shapes = {f"MV_MoE.{k}": tuple(v.shape) for k, v in moe.state_dict().items()}
    assert set(shapes) == MOE_KEYS
    assert shapes["MV_MoE.conv1.0.weight"] == (256, 512, 3, 3)
    assert shapes["MV_MoE.conv2.2.weight"] == (1, 256, 1, 1)
    assert sum(p.numel() for p in moe.parameters()) == 2_754_048


def test_mv_moe_matches_its_closed_form():
    torch.manual_seed(0)
    moe = MV_MoE(8)
    mem, view = torch.randn(2, 8, 5, 6), torch.randn(2, 8, 5, 6)
    pooled = torch.cat([mem.mean((2, 3)), view.mean((2, 3))], 1)
    w_m, w_v = moe.mlp1(pooled)[..., None, None], moe.mlp2(pooled)[..., None, None]
    m1, v1 = mem * (1 + w_m), view * (1 + w_v)
    z = torch.cat([m1, v1], 1)
    expected = m1 * (1 + moe.conv1(z)) + v1 * (1 + moe.conv2(z))
    torch.testing.assert_close(moe(mem, view), expected, rtol=1e-5, atol=1e-6)


def test_fusion_switches():
    torch.manual_seed(1)
    moe = MV_MoE(4)
    mem, view = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    assert torch.equal(fuse("add", moe, mem, view), mem + view)
    assert torch.equal(fuse("view", moe, mem, view), view)
    assert torch.equal(fuse("memory", moe, mem, view), mem)
    for fusion in FUSIONS:  # no memory yet: every variant uses the cross-view feature alone
        assert torch.equal(fuse(fusion, moe, None, view), view)
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse("concat", moe, mem, view)


@pytest.mark.parametrize("preset", ["b+", "s", "t", "nano"])
def test_presets_describe_lmeec_models(preset):
    config = preset_config(preset)
    assert config["model"]["_target_"] == "lmeec_core.model.lmeec.LMEEC"
    assert config["model"]["image_size"] == (256 if preset == "nano" else 480)


def test_unknown_preset_and_bad_image_size_are_refused():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_config("xl")
    with pytest.raises(ConfigError, match="multiple of 32"):
        preset_config("nano", image_size=250)


def test_own_checkpoint_round_trip_rebuilds_the_model(tmp_path, nano_model):
    config = preset_config("nano", image_size=128)
    path = save_checkpoint(nano_model, tmp_path / "m.pt", config, meta={"preset": "nano", "note": "x"})
    loaded, report = load_checkpoint(path)
    assert report.kind == "lmeec_ros" and report.meta["note"] == "x" and not report.initialised
    assert loaded.image_size == 128
    for key, value in nano_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_half_checkpoint_loads_as_float32(tmp_path, nano_model):
    path = save_checkpoint(nano_model, tmp_path / "h.pt", preset_config("nano", image_size=128), half=True)
    loaded, _ = load_checkpoint(path)
    weight = loaded.state_dict()["MV_MoE.conv1.0.weight"]
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, nano_model.state_dict()["MV_MoE.conv1.0.weight"], atol=1e-3, rtol=1e-3)


def test_official_formats_load_strictly(tmp_path, nano_model):
    config = preset_config("nano", image_size=128)
    state = nano_model.state_dict()
    torch.save({"model": state, "optimizer": {}, "epoch": 3}, tmp_path / "official.pt")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pth")
    for name, kind in (("official.pt", "lmeec_official"), ("ddp.pth", "raw_state_dict")):
        loaded, report = load_checkpoint(tmp_path / name, config=config)
        assert report.kind == kind
        assert torch.equal(loaded.state_dict()["MV_MoE.mlp1.0.weight"], state["MV_MoE.mlp1.0.weight"])


def test_sam2_checkpoint_initialises_and_reports_the_moe(tmp_path, nano_model):
    state = {k: v for k, v in nano_model.state_dict().items() if not k.startswith("MV_MoE.")}
    torch.save({"model": state}, tmp_path / "sam21.pt")
    _, report = load_checkpoint(tmp_path / "sam21.pt", config=preset_config("nano", image_size=128))
    assert report.kind == "sam2" and set(report.initialised) == MOE_KEYS
    assert "12 MV-MoE tensors freshly initialised" in report.summary()


def test_wrong_files_fail_with_the_offending_keys(tmp_path, nano_model):
    config = preset_config("nano", image_size=128)
    state = dict(nano_model.state_dict())
    state.pop("memory_attention.norm.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save({"model": state}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"missing keys: memory_attention.norm.weight.*unexpected keys: extra.weight"):
        load_checkpoint(tmp_path / "bad.pt", config=config)
    state = dict(nano_model.state_dict())
    state["no_obj_ptr"] = torch.zeros(1, 3)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"shape mismatches: no_obj_ptr file \(1, 3\)"):
        load_checkpoint(tmp_path / "shape.pt", config=config)


def test_unreadable_files_are_refused(tmp_path, nano_model):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    good = save_checkpoint(nano_model, tmp_path / "good.pt", preset_config("nano", image_size=128))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(truncated)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, expected a dict"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="expected a state dict"):
        load_checkpoint(tmp_path / "other.pt")


def test_unknown_trunk_needs_a_preset(tmp_path, nano_model):
    torch.save({"model": nano_model.state_dict()}, tmp_path / "anon.pt")
    with pytest.raises(CheckpointError, match="pass a preset or a model config"):
        load_checkpoint(tmp_path / "anon.pt")


def test_sam21_sized_state_is_recognised():
    from lmeec_core.model.checkpoint import infer_preset

    for preset in ("t", "s"):
        model = build_model(preset_config(preset, image_size=128))
        assert infer_preset(model.state_dict()) == preset


def test_bad_config_is_a_config_error():
    config = preset_config("nano")
    config["model"]["memory_attention"]["num_layers"] = "two"
    with pytest.raises(ConfigError, match="cannot build the model"):
        build_model(config)
    with pytest.raises(ConfigError, match="'model' node"):
        build_model({"image_encoder": {}})


def test_checkpoint_command_describes_a_file(tmp_path, nano_model, capsys):
    import json

    from lmeec_core.cli import main

    path = save_checkpoint(nano_model, tmp_path / "m.pt", preset_config("nano", image_size=128), meta={"preset": "nano"})
    assert main(["checkpoint", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "lmeec_ros" and info["image_size"] == 128 and len(info["sha256"]) == 64
    torch.save({"model": nano_model.state_dict()}, tmp_path / "anon.pt")
    assert main(["checkpoint", str(tmp_path / "anon.pt")]) == 2
    assert "pass a preset or a model config" in capsys.readouterr().err


def test_recognised_trunk_wins_over_a_default_preset(tmp_path):
    model = build_model(preset_config("t", image_size=128))
    torch.save({"model": model.state_dict()}, tmp_path / "t.pt")
    loaded, report = load_checkpoint(tmp_path / "t.pt", preset="nano")  # the node's default preset
    assert report.preset == "t" and loaded.image_size == 480
