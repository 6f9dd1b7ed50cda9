"""Instantiate an `LMEEC` network from a sam2-format configuration."""
from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ..errors import ConfigError
from .lmeec import LMEEC
from .presets import preset_config, with_lmeec_target


def build_model(config: dict[str, Any], device: str | torch.device = "cpu") -> LMEEC:
    """Build the network described by `config` (see `presets`), in eval mode, on `device`."""
    cfg = OmegaConf.create(with_lmeec_target(config))
    OmegaConf.resolve(cfg)
    try:
        model = instantiate(cfg.model, _recursive_=True)
    except Exception as err:  # hydra wraps every constructor error in its own type
        raise ConfigError(f"cannot build the model from this configuration: {err}") from err
    return model.to(device).eval()


def build_preset(name: str, image_size: int | None = None, fusion: str = "moe",
                 device: str | torch.device = "cpu", seed: int | None = None) -> LMEEC:
    """A randomly initialised preset (seeded when `seed` is given): for tests and training from scratch."""
    if seed is not None:
        torch.manual_seed(seed)
    return build_model(preset_config(name, image_size=image_size, fusion=fusion), device=device)
