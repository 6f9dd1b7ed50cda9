"""Checkpoint reading and writing, strict about what a file holds.

Accepted inputs:
  * this project's format: {"format": FORMAT, "config": model config, "model": state dict, "meta": {...}},
    which rebuilds its own network;
  * official LM-EEC training checkpoints: {"model": state dict, "optimizer": ..., ...};
  * raw state dicts, including the `module.`-prefixed DDP dumps the official trainer writes;
  * SAM 2.1 checkpoints ({"model": ...} without `MV_MoE.*`): the MV-MoE is freshly initialised and
    the load report says so.
Anything else fails with a `CheckpointError` that names the offending keys; a wrong file never
silently yields random weights (the official loader's non-strict behaviour).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from .builder import build_model
from .lmeec import LMEEC
from .presets import preset_config

FORMAT = "lmeec_ros.checkpoint/1"
_MOE_PREFIX = "MV_MoE."
_SHOW_KEYS = 8


@dataclass
class LoadReport:
    """What a checkpoint turned out to be and what loading it did."""

    path: str
    kind: str  # "lmeec_ros", "lmeec_official", "raw_state_dict", "sam2"
    preset: str | None
    initialised: list[str] = field(default_factory=list)  # keys not in the file, freshly initialised
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        text = f"{self.path}: {self.kind} checkpoint"
        if self.preset:
            text += f" ({self.preset})"
        if self.initialised:
            text += f"; {len(self.initialised)} MV-MoE tensors freshly initialised (SAM 2.1 weights)"
        return text


def read_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file's top-level dict, turning every failure into a clear CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (expected a .pt/.pth file)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError... depending on the damage
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} is not a readable torch checkpoint (truncated, corrupt or not a torch "
            f"file; weights-only loading): {first_line}"
        ) from err
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, expected a dict")
    return data


def _state_dict_of(data: dict[str, Any], path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    if data.get("format") == FORMAT:
        return "lmeec_ros", data["model"]
    if isinstance(data.get("model"), dict):
        return "lmeec_official", data["model"]
    if data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return "raw_state_dict", data
    raise CheckpointError(
        f"checkpoint {path} has keys {sorted(data)[:_SHOW_KEYS]}; expected a state dict, "
        f"an LM-EEC/SAM 2 training checkpoint with a 'model' entry, or a {FORMAT} file"
    )


def _strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def infer_preset(state: dict[str, torch.Tensor]) -> str | None:
    """Recognise the SAM 2.1 Hiera size from the trunk's width and depth (b+, s or t)."""
    patch = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        return None
    blocks = {k.split(".")[3] for k in state if k.startswith("image_encoder.trunk.blocks.")}
    return {(112, 24): "b+", (96, 16): "s", (96, 12): "t"}.get((patch.shape[0], len(blocks)))


def _describe(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW_KEYS])
    return shown + (f" (+{len(keys) - _SHOW_KEYS} more)" if len(keys) > _SHOW_KEYS else "")


def load_weights(model: LMEEC, state: dict[str, torch.Tensor], path: str | Path) -> list[str]:
    """Strictly load `state` into `model`; only the MV-MoE may be absent (a SAM 2.1 file).

    Returns the keys that were freshly initialised.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    moe_only = bool(missing) and all(k.startswith(_MOE_PREFIX) for k in missing)
    problems = []
    if missing and not moe_only:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if wrong_shape:
        problems.append(
            "shape mismatches: "
            + _describe([f"{k} file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong_shape])
        )
    if problems:
        raise CheckpointError(f"checkpoint {path} does not fit this model: " + "; ".join(problems))
    model.load_state_dict(state, strict=not moe_only)
    return missing


def load_checkpoint(
    path: str | Path,
    config: dict[str, Any] | None = None,
    preset: str | None = None,
    image_size: int | None = None,
    fusion: str = "moe",
    device: str | torch.device = "cpu",
) -> tuple[LMEEC, LoadReport]:
    """Build the network a checkpoint belongs to and load it strictly.

    A project checkpoint carries its configuration. For other files the configuration comes from
    `config`, else the SAM 2.1 size recognised from the weights (480 px input), else `preset`.
    """
    data = read_checkpoint_file(path)
    kind, state = _state_dict_of(data, Path(path))
    state = _strip_module_prefix(state)
    meta = data.get("meta", {}) if kind == "lmeec_ros" else {}
    if kind == "lmeec_ros" and config is None:
        config = data["config"]
        preset = meta.get("preset", preset)
    if config is None:
        # The weights say which SAM 2.1 trunk they are for; `preset` only names trunks they cannot.
        preset = infer_preset(state) or preset
        if preset is None:
            raise CheckpointError(
                f"checkpoint {path} does not say which model it is for and its trunk is not a SAM 2.1 "
                "b+/s/t trunk; pass a preset or a model config"
            )
        config = preset_config(preset, image_size=image_size, fusion=fusion)
    model = build_model(config)
    initialised = load_weights(model, state, path)
    if initialised and kind == "lmeec_official":
        kind = "sam2"
    report = LoadReport(str(path), kind, preset, initialised, meta)
    return model.to(device), report


def save_checkpoint(
    model: LMEEC,
    path: str | Path,
    config: dict[str, Any],
    meta: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write weights plus the configuration that built them (so the file alone rebuilds its model).

    `half` stores floating tensors as float16 (the shipped nano checkpoint), loaded back as float32.
    """
    state = {
        k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu()
        for k, v in model.state_dict().items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, "config": config, "model": state, "meta": dict(meta or {})}, tmp)
    tmp.replace(path)
    return path
