"""Model presets: SAM 2.1 Hiera configurations from the `sam2` package, adapted to LM-EEC.

A model configuration is the Hydra node that `sam2` itself instantiates (`{"model": {...}}`), with
`_target_` pointing at `LMEEC` and an extra `lmeec` node for the options LM-EEC adds. Keeping the
sam2 format means an official LM-EEC or SAM 2.1 YAML can be used as it is.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import sam2
from omegaconf import OmegaConf

from ..errors import ConfigError

LMEEC_TARGET = "lmeec_core.model.lmeec.LMEEC"

# preset -> (sam2 package config, default input size). b+ at 480 is the paper's model.
_SAM2_PRESETS = {
    "b+": ("configs/sam2.1/sam2.1_hiera_b+.yaml", 480),
    "s": ("configs/sam2.1/sam2.1_hiera_s.yaml", 480),
    "t": ("configs/sam2.1/sam2.1_hiera_t.yaml", 480),
}

# `nano`: the tiny trunk of the parity fixture (Hiera 16 channels) with a 2-layer memory attention,
# so one frame pair runs in well under a second on 2 CPU cores and a checkpoint fits in 25 MB.
_NANO_CHANGES = {
    "trunk": {
        "embed_dim": 16, "num_heads": 1, "stages": [1, 2, 3, 1], "global_att_blocks": [4],
        "window_spec": [8, 4, 14, 7], "window_pos_embed_bkg_spatial_size": [14, 14],
    },
    "backbone_channel_list": [128, 64, 32, 16],
    "memory_attention": {"num_layers": 2, "dim_feedforward": 256},
    "fuser_layers": 1,
}

PRESETS = (*_SAM2_PRESETS, "nano")


def _read_yaml(path: str | Path) -> dict[str, Any]:
    # OmegaConf's loader, as sam2's own: plain PyYAML reads `1e-6` as a string.
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def preset_config(name: str, image_size: int | None = None, fusion: str = "moe") -> dict[str, Any]:
    """The full model configuration of a preset (plain dict, ready for `build_model`)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    base = "t" if name == "nano" else name
    rel, default_size = _SAM2_PRESETS[base]
    cfg = _read_yaml(Path(sam2.__path__[0]) / rel)
    model = cfg["model"]
    if name == "nano":
        _apply_nano(model)
        default_size = 256
    model["image_size"] = image_size or default_size
    return with_lmeec_target({"model": model}, fusion=fusion)


def _apply_nano(model: dict[str, Any]) -> None:
    model["image_encoder"]["trunk"].update(_NANO_CHANGES["trunk"])
    model["image_encoder"]["neck"]["backbone_channel_list"] = _NANO_CHANGES["backbone_channel_list"]
    att = _NANO_CHANGES["memory_attention"]
    model["memory_attention"]["num_layers"] = att["num_layers"]
    model["memory_attention"]["layer"]["dim_feedforward"] = att["dim_feedforward"]
    model["memory_encoder"]["fuser"]["num_layers"] = _NANO_CHANGES["fuser_layers"]


def with_lmeec_target(config: dict[str, Any], fusion: str = "moe") -> dict[str, Any]:
    """Point a sam2-format configuration at the LM-EEC class and validate its image size."""
    config = copy.deepcopy(config)
    model = config.get("model")
    if not isinstance(model, dict) or "image_encoder" not in model:
        raise ConfigError("model configuration needs a 'model' node with an 'image_encoder' (sam2 format)")
    size = int(model.get("image_size", 1024))
    if size % 32:
        raise ConfigError(f"image_size {size} is not a multiple of 32 (Hiera's total stride)")
    model["_target_"] = LMEEC_TARGET
    model["fusion"] = model.get("fusion", fusion)
    return config


def load_config_file(path: str | Path, fusion: str = "moe") -> dict[str, Any]:
    """Read a sam2/LM-EEC Hydra model YAML (e.g. a fixture's model.yaml)."""
    try:
        return with_lmeec_target(_read_yaml(path), fusion=fusion)
    except Exception as err:  # OmegaConf raises its own error types for malformed YAML
        raise ConfigError(f"cannot read model config {path}: {err}") from err
