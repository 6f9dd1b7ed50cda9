"""Training LM-EEC with the paper's recipe (spec section 7) on synthetic rooms or processed takes.

One step takes B clips of T consecutive frame pairs. Frame by frame, as the official
`_prepare_memory_conditioned_features_wo_prompt`: F_view from the source memory of the current
frame (GT source mask), F_mem from the last M frames of both banks (uncompressed FIFO, temporal
encoding by relative offset: t-1 -> slot 0) plus the target object pointers, fusion (MV-MoE or
the configured ablation), the decoder without a dense prompt; the target memory is encoded from
the prediction, so errors propagate through time as at inference. Losses: `lmeec_core.losses`.

On top of the paper, an optional source-view tracking loss trains what the robot mode of the
tracker runs (`CorrespondenceEngine.track_source`): the clip's first source mask is the prompt,
later frames are segmented in the source view from the prompt memory, the source bank and the
source object pointers.

Optimiser: AdamW, one learning rate for the image encoder and one for the rest, layer-wise decay
on the Hiera trunk, weight decay except on biases and norms, gradient clipping, cosine schedule.
`torchrun` launches DistributedDataParallel; on CUDA the forward runs under bf16 autocast.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import platform
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from sam2.modeling.sam2_utils import LayerNorm2d
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from .data.clips import (DIRECTION_CHOICES, OBJECT_CHOICES, ClipBatch, ClipConfig, RoomRecipe, SyntheticClips,
                         TakeClips, collate_clips)
from .attention_supervision import frame_matching_loss, record_cross_attention
from .contrastive import TrunkForward
from .data.pairs import FramePairBatch, SyntheticFramePairs, collate_pairs
from .errors import CheckpointError, ConfigError
from .losses import LOSS_TERMS, LossAccumulator, LossWeights
from .model import FORMAT, LMEEC, MaskPrediction, ViewFeatures, build_model, load_checkpoint, preset_config
from .model.checkpoint import read_checkpoint_file, save_checkpoint
from .prompt_sampling import sample_prompt

log = logging.getLogger(__name__)

STAGES = ("lmeec", "trunk")
PROGRESS_KEYS = ("target_iou_train", "s16_top1")  # the figure the progress bar shows, per stage
STATE_FORMAT = "lmeec_ros.train_state/1"
STATE_FILE = "train_state.pt"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.csv"


def _arg(default: Any, help: str) -> Any:  # noqa: A002 - argparse's word
    """A TrainConfig field with its command-line help text."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything a training run depends on.

    The defaults are the paper's fine-tuning recipe (spec 7.1), except two additions for the robot:
    clips of both directions (`direction`) and the source-view tracking loss (`source_loss_weight`).
    """

    out_dir: str = _arg("runs/lmeec", "run folder: train_state.pt, model.pt, metrics.csv, tb/")
    stage: str = _arg("lmeec", "lmeec: the LM-EEC clip training; trunk: only the image encoder, on single frame "
                               "pairs with a dense cross-view contrastive loss (lmeec_core.contrastive), the "
                               "first stage of a from-scratch model")
    preset: str = _arg("nano", "model preset when not initialising from a project checkpoint")
    image_size: int | None = _arg(None, "model input size (multiple of 32); default: the preset's")
    fusion: str | None = _arg(None, "moe | add | view | memory; default: moe, or the init checkpoint's")
    init: str | None = _arg(None, "initial weights: a SAM 2.1, official LM-EEC or lmeec_ros checkpoint; "
                                  "none = from scratch")
    data: str = _arg("synthetic", "training data: 'synthetic' (rooms rendered on the fly) or a folder of "
                                  "processed takes (EgoExo4D layout)")
    direction: str = _arg("random", "ego2exo | exo2ego | random (per clip)")
    clip_frames: int = _arg(8, "T, consecutive frames per clip")
    memory_size: int = _arg(6, "M, past frames per memory bank (at most num_maskmem - 1)")
    pointer_frames: int | None = _arg(None, "object pointers span pointer_frames - 1 frames and their "
                                            "distances are normalised by it; default min(T, 16) as the "
                                            "official training, 16 matches the tracker")
    scenes: int = _arg(10_000, "synthetic: number of training rooms (seeds disjoint from held-out ones)")
    frame_cache: str | None = _arg(None, "synthetic: read the rooms from this frame cache (written by `python -m "
                                         "lmeec_core.data.frame_cache`) instead of rendering them")
    scene_frames: int = _arg(60, "synthetic: frames per room that clips are cut from")
    scene_fps: float = _arg(3.0, "synthetic: frame rate, i.e. 1/fps seconds between clip frames")
    objects: str = _arg("any", "synthetic: the object a clip follows: 'any' visible one (the prompt says which), "
                               "a visible one on the 'table' (no floor objects), or always the room's 'target' "
                               "(learnable without the prompt)")
    objects_per_clip: int = _arg(1, "synthetic, objects 'any'/'table': follow up to this many distinct objects "
                                    "per clip, each a batch row sharing the clip's image encodings")
    steps: int = _arg(1000, "optimiser steps")
    schedule_steps: int | None = _arg(None, "length of the warm-up + cosine schedule; default --steps. Give "
                                            "the final total to split one run into --resume sessions")
    batch_size: int = _arg(1, "clips per step and process")
    lr: float = _arg(5e-6, "peak learning rate of everything but the image encoder")
    vision_lr: float = _arg(3e-6, "peak learning rate of the image encoder")
    lr_end_factor: float = _arg(0.1, "cosine schedule ends at lr * lr_end_factor")
    warmup_steps: int = _arg(0, "linear warm-up steps before the cosine schedule")
    layer_decay: float = _arg(0.9, "layer-wise learning-rate decay on the Hiera trunk")
    weight_decay: float = _arg(0.1, "AdamW weight decay (0 on biases and norms)")
    grad_clip: float = _arg(0.1, "gradient clipping, max L2 norm")
    loss_mask: float = _arg(20.0, "weight of the sigmoid focal mask loss")
    loss_dice: float = _arg(1.0, "weight of the dice loss")
    loss_iou: float = _arg(1.0, "weight of the IoU-prediction L1 loss")
    loss_score: float = _arg(1.0, "weight of the object-score BCE")
    source_loss_weight: float = _arg(1.0, "weight of the source-view tracking loss (0 = the paper's recipe)")
    prompt_loss_weight: float = _arg(0.0, "weight of a loss on segmenting each clip's first source frame from a "
                                          "sampled box or clicks (SAM 2's prompt training; 0 = the paper's recipe)")
    match_loss_weight: float = _arg(0.0, "weight of a loss on the F_view cross-attention: target tokens on the "
                                         "object attend to the source object's memory tokens, others elsewhere "
                                         "(lmeec_core.attention_supervision; 0 = the paper's recipe)")
    seed: int = _arg(0, "seed of the initial weights, the clip sampling and dropout")
    device: str = _arg("auto", "auto | cpu | cuda | cuda:N (torchrun: the local rank's GPU)")
    threads: int | None = _arg(None, "torch CPU threads (torch.set_num_threads)")
    num_workers: int = _arg(0, "DataLoader worker processes rendering or reading clips")
    log_every: int = _arg(10, "steps between CSV/TensorBoard rows")
    save_every: int = _arg(200, "steps between training-state checkpoints (and at the end)")
    resume: bool = _arg(False, "continue from out_dir/train_state.pt (a larger --steps extends a finished "
                               "run; without --schedule-steps the cosine stretches to the new total)")
    half: bool = _arg(False, "store the exported model.pt in float16")

    def __post_init__(self) -> None:
        checks = [
            (self.stage in STAGES, f"stage {self.stage!r}; expected one of {STAGES}"),
            (self.stage != "trunk" or self.data == "synthetic",
             "stage 'trunk' needs data 'synthetic' (it learns from the renderer's instance ids)"),
            (self.direction in DIRECTION_CHOICES, f"direction {self.direction!r}; expected one of {DIRECTION_CHOICES}"),
            (self.objects in OBJECT_CHOICES, f"objects {self.objects!r}; expected one of {OBJECT_CHOICES}"),
            (self.data == "synthetic" or Path(self.data).is_dir(),
             f"data {self.data!r}; expected 'synthetic' or a folder of processed takes"),
            (min(self.clip_frames, self.steps, self.batch_size, self.objects_per_clip) >= 1,
             "clip_frames, steps, batch_size and objects_per_clip must be >= 1"),
            (self.memory_size >= 1, f"memory_size {self.memory_size}; expected >= 1"),
            (self.schedule_steps is None or self.schedule_steps >= self.steps,
             f"schedule_steps {self.schedule_steps}; expected at least steps ({self.steps})"),
            (self.pointer_frames is None or self.pointer_frames >= 2,
             f"pointer_frames {self.pointer_frames}; expected >= 2"),
            (0 < self.lr_end_factor <= 1, f"lr_end_factor {self.lr_end_factor}; expected in (0, 1]"),
            (self.grad_clip > 0 and self.log_every >= 1 and self.save_every >= 1,
             "grad_clip, log_every and save_every must be positive"),
        ]
        problems = [text for ok, text in checks if not ok]
        if problems:
            raise ConfigError("train config: " + "; ".join(problems))

    @property
    def loss_weights(self) -> LossWeights:
        return LossWeights(self.loss_mask, self.loss_dice, self.loss_iou, self.loss_score)


# --------------------------------------------------------------------------------------------
# The clip forward


def _tokens(memory_map: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> sequence-first [hw, B, C]."""
    return memory_map.flatten(2).permute(2, 0, 1)


def _select(view: ViewFeatures, index: torch.Tensor | slice) -> ViewFeatures:
    """The batch rows `index` of encoded views."""
    return ViewFeatures(view.feat[:, index], view.pos[:, index], [h[index] for h in view.high_res], view.size)


def _frame_rows(view: ViewFeatures, t: int, rows: int) -> ViewFeatures:
    """Frame t of views laid out frame-major as one [T*R] batch."""
    return _select(view, slice(t * rows, (t + 1) * rows))


@dataclass
class _ClipMemory:
    """What earlier frames of the clip leave for later ones (nothing is compressed in training)."""

    source: list[torch.Tensor]  # per frame: memory tokens of the GT source mask [hw, B, C]
    pos: torch.Tensor  # spatial encoding of every memory [hw, B, C]
    target: list[torch.Tensor] = field(default_factory=list)  # per frame: memory of the prediction
    target_pointers: list[torch.Tensor] = field(default_factory=list)
    source_pointers: list[torch.Tensor] = field(default_factory=list)  # source tracking; [0] = prompt


class ClipForward(nn.Module):
    """The training forward of one clip batch, as a module so that DDP can drive it.

    Returns the weighted loss ("loss") and, detached, every term and the training IoUs.
    """

    def __init__(self, model: LMEEC, memory_size: int, pointer_frames: int, weights: LossWeights,
                 source_loss_weight: float, prompt_loss_weight: float = 0.0, match_loss_weight: float = 0.0) -> None:
        super().__init__()
        if not 1 <= memory_size <= model.num_maskmem - 1:
            raise ConfigError(f"memory_size {memory_size}; this model has temporal encodings for at most "
                              f"{model.num_maskmem - 1} past frames")
        self.model = model
        self.memory_size = memory_size
        self.max_distance = min(pointer_frames, model.max_obj_ptrs_in_encoder) - 1
        self.weights = weights
        self.source_loss_weight = source_loss_weight
        self.prompt_loss_weight = prompt_loss_weight
        self.match_loss_weight = match_loss_weight

    def forward(self, batch: ClipBatch) -> dict[str, torch.Tensor]:
        model, frames, rows = self.model, batch.num_frames, batch.num_rows
        source_all = model.encode_image(batch.source_images.flatten(0, 1))  # each image once, frame-major
        target_all = model.encode_image(batch.target_images.flatten(0, 1))
        frame_base = torch.arange(frames, device=batch.row_clips.device)[:, None] * batch.num_clips
        image_of_row = (frame_base + batch.row_clips[None]).flatten()  # [T*R]: image of object row r at frame t
        source_rows, target_rows = _select(source_all, image_of_row), _select(target_all, image_of_row)
        ones = torch.ones(frames * rows, 1, device=batch.source_images.device)
        source_maps, pos = model.encode_memory(source_rows, batch.source_masks.flatten(0, 1), ones)
        memory = _ClipMemory(source=list(_tokens(source_maps).split(rows, dim=1)), pos=_tokens(pos)[:, :rows])
        losses = {name: LossAccumulator(rows) for name in ("target", "source", "prompt")}
        match = torch.zeros((), device=batch.source_images.device)
        for t in range(frames):
            target = _frame_rows(target_rows, t, rows)
            prediction, attention = self._cross_view(t, target, memory)
            losses["target"].add(prediction, batch.target_masks[t])
            if attention:
                match = match + frame_matching_loss(attention, target.size, batch.target_masks[t],
                                                    batch.source_masks[t]) / rows
            if self.source_loss_weight > 0:
                source = _frame_rows(source_rows, t, rows)
                losses["source"].add(self._track_source(t, source, memory), batch.source_masks[t])
        if self.prompt_loss_weight > 0:
            first = _frame_rows(source_rows, 0, rows)
            coords, labels = sample_prompt(batch.source_masks[0])
            losses["prompt"].add(model.segment_prompt(first, coords, labels), batch.source_masks[0])
        return self._outputs(losses, match)

    def _outputs(self, losses: dict[str, LossAccumulator], match: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted total and, detached, each enabled branch's terms and training IoU."""
        weights = {"target": 1.0, "source": self.source_loss_weight, "prompt": self.prompt_loss_weight}
        out: dict[str, torch.Tensor] = {}
        loss = 0.0
        for branch, weight in weights.items():
            if weight <= 0:
                continue
            terms = losses[branch].terms
            loss = loss + weight * self.weights.total(terms)
            out.update({f"{branch}_{name}": terms[name].detach() for name in LOSS_TERMS})
            out[f"{branch}_iou_train"] = torch.tensor(losses[branch].mean_iou())
        if self.match_loss_weight > 0:
            loss = loss + self.match_loss_weight * match
            out["match"] = match.detach()
        out["loss"] = loss
        return out

    def _window(self, t: int, first: int = 0) -> range:
        return range(max(first, t - self.memory_size), t)

    def _bank(self, t: int, banks: list[list[torch.Tensor]], pos: torch.Tensor) -> tuple[list, list]:
        """FIFO banks over frames t-M..t-1; temporal slot by relative offset (t-1 -> 0), spec 7.3."""
        tokens, encodings = [], []
        for bank in banks:
            for j in self._window(t):
                tokens.append(bank[j])
                encodings.append(pos + self.model.temporal_encoding(t - j - 1))
        return tokens, encodings

    def _pointers(self, t: int, pointers: list[torch.Tensor], first: int = 0) -> list[tuple[int, torch.Tensor]]:
        """Pointers of frames t-1 .. t-max_distance, newest first (SAM 2's non-conditioning rule)."""
        return [(d, pointers[t - d]) for d in range(1, self.max_distance + 1) if t - d >= first]

    def _attend(self, view: ViewFeatures, tokens: list[torch.Tensor], encodings: list[torch.Tensor],
                pointers: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
        """Memory attention over [tokens; pointer tokens]."""
        num_pointer_tokens = 0
        if pointers:
            ptr_tokens, ptr_pos = self.model.pointer_memory(pointers, self.max_distance)
            tokens, encodings = [*tokens, ptr_tokens], [*encodings, ptr_pos]
            num_pointer_tokens = ptr_tokens.shape[0]
        return self.model.condition(view, torch.cat(tokens), torch.cat(encodings), num_pointer_tokens)

    def _cross_view(self, t: int, target: ViewFeatures, memory: _ClipMemory
                    ) -> tuple[MaskPrediction, list[torch.Tensor]]:
        """The official target-view step: F_view, F_mem, fusion, decoder; stores the target memory.

        Also returns F_view's cross-attention per layer when the matching loss is on (else []).
        """
        model = self.model
        recording = record_cross_attention(model.memory_attention) if self.match_loss_weight > 0 else nullcontext([])
        with recording as attention:
            f_view = model.condition(target, memory.source[t], memory.pos)
        f_mem = None
        if t > 0:
            tokens, encodings = self._bank(t, [memory.source, memory.target], memory.pos)
            f_mem = self._attend(target, tokens, encodings, self._pointers(t, memory.target_pointers))
        prediction = model.predict_mask(model.fuse(f_mem, f_view), target)
        target_memory, _ = model.encode_memory(target, prediction.high_res, prediction.score_logit)
        memory.target.append(_tokens(target_memory))
        memory.target_pointers.append(prediction.obj_ptr)
        return prediction, attention

    def _track_source(self, t: int, source: ViewFeatures, memory: _ClipMemory) -> MaskPrediction:
        """Source tracking as `CorrespondenceEngine`: frame 0 is the mask prompt, later frames are tracked.

        Frame 0 is decoded against its own memory to give the prompt pointer (`set_prompt`); frame t
        attends to the prompt memory (conditioning slot), the source bank and the source pointers.
        The bank holds GT-mask memories, as the cross-view branch's does (teacher forcing).
        """
        model = self.model
        prompt_pos = memory.pos + model.temporal_encoding(model.num_maskmem - 1)
        if t == 0:
            prediction = model.predict_mask(model.condition(source, memory.source[0], prompt_pos), source)
        else:
            tokens, encodings = self._bank(t, [memory.source], memory.pos)
            pointers = [(min(t, self.max_distance), memory.source_pointers[0]),
                        *self._pointers(t, memory.source_pointers, first=1)]
            conditioned = self._attend(source, [memory.source[0], *tokens], [prompt_pos, *encodings], pointers)
            prediction = model.predict_mask(conditioned, source)
        memory.source_pointers.append(prediction.obj_ptr)
        return prediction


# --------------------------------------------------------------------------------------------
# Model, optimiser, schedule


def initial_model(config: TrainConfig) -> tuple[LMEEC, dict[str, Any]]:
    """The network to train and the configuration stored with it (from scratch, or an init checkpoint)."""
    torch.manual_seed(config.seed)
    if config.init is None:
        model_config = preset_config(config.preset, image_size=config.image_size, fusion=config.fusion or "moe")
        return build_model(model_config), model_config
    data = read_checkpoint_file(config.init)
    model_config = data.get("config") if data.get("format") == FORMAT else None
    model, report = load_checkpoint(config.init, config=model_config, preset=None if model_config else config.preset,
                                    image_size=config.image_size, fusion=config.fusion or "moe")
    log.info("initialised from %s", report.summary())
    if model_config is None:
        model_config = preset_config(report.preset, image_size=config.image_size, fusion=config.fusion or "moe")
    if config.fusion:
        model.fusion = model_config["model"]["fusion"] = config.fusion
    return model, model_config


def param_groups(model: LMEEC, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: two base rates, layer-wise decay on the trunk, no weight decay on biases and norms.

    Layer ids are Hiera's own (`get_layer_id`: patch embedding 0, block i -> i+1); the position
    embeddings keep the full rate, as in the official configuration.
    """
    trunk = model.image_encoder.trunk
    top = trunk.get_num_layers() + 1
    norms = {id(p) for m in model.modules() if isinstance(m, (nn.LayerNorm, LayerNorm2d))
             for p in m.parameters(recurse=False)}
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = config.vision_lr if name.startswith("image_encoder.") else config.lr
        if name.startswith("image_encoder.trunk.") and "pos_embed" not in name:
            lr *= config.layer_decay ** (top - trunk.get_layer_id(name[len("image_encoder.trunk."):]))
        decay = 0.0 if name.endswith("bias") or id(param) in norms else config.weight_decay
        groups.setdefault((lr, decay), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in sorted(groups.items())]


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the peak rates at `step`: linear warm-up, then cosine down to lr_end_factor."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max((config.schedule_steps or config.steps) - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    end = config.lr_end_factor
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------------------------
# Run plumbing: processes, devices, data, state, logs


@dataclass(frozen=True)
class Processes:
    """This process's place in a `torchrun` launch (rank 0 of 1 otherwise)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Processes":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(config: TrainConfig, procs: Processes) -> torch.device:
    if config.device == "auto":
        return torch.device(f"cuda:{procs.local_rank}" if torch.cuda.is_available() else "cpu")
    if config.device == "cuda" and procs.world > 1:
        return torch.device(f"cuda:{procs.local_rank}")
    return torch.device(config.device)


def data_loader(config: TrainConfig, image_size: int, procs: Processes, start_step: int) -> DataLoader:
    """Batches for steps start_step..steps of this process; sample k of step s is item (s*world+rank)*B+k.

    Clips for the LM-EEC stage, single frame pairs for the trunk stage.
    """
    per_step = config.batch_size
    length = config.steps * procs.world * per_step
    rooms = RoomRecipe(num_scenes=config.scenes, scene_frames=config.scene_frames, fps=config.scene_fps,
                       objects=config.objects, objects_per_clip=config.objects_per_clip, cache=config.frame_cache)
    if config.stage == "trunk":
        dataset, collate = SyntheticFramePairs(image_size, rooms, length, config.seed), collate_pairs
    else:
        clip = ClipConfig(image_size=image_size, num_frames=config.clip_frames, direction=config.direction,
                          sample_seed=config.seed)
        collate = collate_clips
        dataset = SyntheticClips(clip, rooms, length) if config.data == "synthetic" else TakeClips(config.data, clip,
                                                                                                  length)
    items = [(s * procs.world + procs.rank) * per_step + k
             for s in range(start_step, config.steps) for k in range(per_step)]
    return DataLoader(dataset, batch_size=per_step, sampler=items, collate_fn=collate,
                      num_workers=config.num_workers)


def objective_parameters(objective: nn.Module) -> dict[str, nn.Parameter]:
    """Trainable parameters of a stage's objective that are not the network's (e.g. projection heads)."""
    return {name: p for name, p in objective.named_parameters() if not name.startswith("model.")}


def save_state(path: Path, step: int, objective: nn.Module, model_config: dict[str, Any],
               optimizer: torch.optim.Optimizer, config: TrainConfig, elapsed_s: float) -> None:
    """Everything needed to continue exactly: weights (the network's and the objective's own), optimiser
    moments, step, RNG, the run config."""
    state = {
        "format": STATE_FORMAT, "step": step, "elapsed_s": elapsed_s, "model_config": model_config,
        "model": objective.model.state_dict(), "optimizer": optimizer.state_dict(), "train_config": asdict(config),
        "objective": {name: p.detach() for name, p in objective_parameters(objective).items()},
        "rng": torch.get_rng_state(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


# What runs saved before an option existed did, for comparing their config with a resumed one.
BEFORE_OPTION = {"objects": "target", "stage": "lmeec", "objects_per_clip": 1}


def load_state(path: Path, objective: nn.Module, optimizer: torch.optim.Optimizer,
               config: TrainConfig) -> tuple[int, float]:
    """Restore a training state written by `save_state`; returns (step, elapsed seconds)."""
    state = read_checkpoint_file(path)
    if state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a training state ({STATE_FORMAT}); expected the file train() writes")
    saved = state["train_config"]
    changed = [k for k in ("stage", "preset", "image_size", "fusion", "init", "data", "objects", "objects_per_clip",
                           "clip_frames", "batch_size", "seed")
               if saved.get(k, BEFORE_OPTION.get(k)) != getattr(config, k)]
    if changed:
        raise ConfigError(f"cannot resume {path}: {', '.join(changed)} differ from the saved run; "
                          "expected the same command line")
    objective.model.load_state_dict(state["model"])
    with torch.no_grad():
        for name, param in objective_parameters(objective).items():
            param.copy_(state["objective"][name])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return int(state["step"]), float(state["elapsed_s"])


class MetricsLog:
    """Rows of training metrics to CSV (appending on resume) and TensorBoard."""

    def __init__(self, out_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # heavy import, rank 0 only

        self.path = out_dir / METRICS_FILE
        self.writer = SummaryWriter(str(out_dir / "tb"))
        self.columns: list[str] | None = None
        if self.path.exists():
            with self.path.open() as f:
                self.columns = next(csv.reader(f), None)

    def write(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **values}
        if self.columns is None:
            self.columns = list(row)
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([row.get(c, "") for c in self.columns])
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


# --------------------------------------------------------------------------------------------
# The loop


def _seed_everything(seed: int, rank: int) -> None:
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def _init_processes(procs: Processes, device: torch.device) -> None:
    if procs.world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)


def _step_values(out: dict[str, torch.Tensor], grad_norm: torch.Tensor,
                 optimizer: torch.optim.Optimizer) -> dict[str, float]:
    values = {name: value.item() for name, value in out.items()}
    values["grad_norm"] = float(grad_norm)
    values["lr"] = max(group["lr"] for group in optimizer.param_groups)
    return values


def describe_machine(device: torch.device) -> str:
    """Where a run happened, for the checkpoint's record."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.system()} {platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


@dataclass
class _Run:
    """A set-up run: the network, its step function, the optimiser, and the step it starts at."""

    config: TrainConfig
    procs: Processes
    device: torch.device
    model: LMEEC
    model_config: dict[str, Any]
    objective: nn.Module  # the stage's forward (ClipForward or TrunkForward)
    step_fn: nn.Module  # the objective, wrapped for DDP when several processes train
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    start: int
    elapsed_s: float

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out_dir)


def _set_up(config: TrainConfig) -> _Run:
    procs = Processes.from_env()
    device = resolve_device(config, procs)
    _init_processes(procs, device)
    if config.threads:
        torch.set_num_threads(config.threads)
    Path(config.out_dir).mkdir(parents=True, exist_ok=True)
    model, model_config = initial_model(config)
    model.to(device).train()
    objective = stage_objective(model, config).to(device)
    step_fn = DistributedDataParallel(objective, find_unused_parameters=True) if procs.world > 1 else objective
    own = list(objective_parameters(objective).values())
    optimizer = torch.optim.AdamW(param_groups(model, config) + ([{"params": own, "lr": config.lr, "weight_decay": 0.0}]
                                                                 if own else []))
    start, elapsed = 0, 0.0
    state_path = Path(config.out_dir) / STATE_FILE
    if config.resume and state_path.exists():
        start, elapsed = load_state(state_path, objective, optimizer, config)
        log.info("resumed %s at step %d", state_path, start)
    else:
        _seed_everything(config.seed, procs.rank)
        for group in optimizer.param_groups:
            group["initial_lr"] = group["lr"]
    # initial_lr (the peak rate) travels in the optimizer state, so a resumed schedule continues at `start`.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config), last_epoch=start - 1)
    return _Run(config, procs, device, model, model_config, objective, step_fn, optimizer, scheduler, start, elapsed)


def stage_objective(model: LMEEC, config: TrainConfig) -> nn.Module:
    """The module whose forward turns a batch into the stage's losses."""
    if config.stage == "trunk":
        return TrunkForward(model)
    pointer_frames = config.pointer_frames or min(config.clip_frames, model.max_obj_ptrs_in_encoder)
    return ClipForward(model, config.memory_size, pointer_frames, config.loss_weights, config.source_loss_weight,
                       config.prompt_loss_weight, config.match_loss_weight)


def _optimise(run: _Run, batch: ClipBatch | FramePairBatch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One step: forward under autocast (bf16 on CUDA), backward, clip, AdamW, schedule."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=run.device.type == "cuda"):
        out = run.step_fn(batch.to(run.device))
    run.optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    grad_norm = nn.utils.clip_grad_norm_(run.objective.parameters(), run.config.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    return out, grad_norm


def _export(run: _Run, wall_s: float) -> Path:
    """The trained network in the project checkpoint format, with how it was made."""
    config = run.config
    meta = {"preset": config.preset, "train_config": asdict(config), "steps": config.steps,
            "wall_s": round(wall_s, 1), "world_size": run.procs.world, "machine": describe_machine(run.device)}
    path = save_checkpoint(run.model, run.out_dir / MODEL_FILE, run.model_config, meta, half=config.half)
    log.info("wrote %s after %d steps in %.0f s", path, config.steps, wall_s)
    return path


def train(config: TrainConfig) -> Path:
    """Run (or resume) a training run; returns the exported model checkpoint (out_dir/model.pt)."""
    run = _set_up(config)
    main = run.procs.main
    metrics = MetricsLog(run.out_dir) if main else None
    loader = data_loader(config, run.model.image_size, run.procs, run.start)
    progress = tqdm(total=config.steps, initial=run.start, disable=not main, desc="train", unit="step")
    began = time.perf_counter() - run.elapsed_s
    for done, batch in enumerate(loader, start=run.start + 1):
        out, grad_norm = _optimise(run, batch)
        progress.update(1)
        progress.set_postfix(loss=f"{out['loss'].item():.3f}",
                             **{key: f"{out[key].item():.2f}" for key in PROGRESS_KEYS if key in out})
        last = done == config.steps
        if metrics and (done % config.log_every == 0 or last):
            metrics.write(done, {**_step_values(out, grad_norm, run.optimizer),
                                 "elapsed_s": time.perf_counter() - began})
        if main and (done % config.save_every == 0 or last):
            save_state(run.out_dir / STATE_FILE, done, run.objective, run.model_config, run.optimizer, config,
                       time.perf_counter() - began)
    progress.close()
    path = run.out_dir / MODEL_FILE
    if main:
        metrics.close()
        path = _export(run, time.perf_counter() - began)
    if run.procs.world > 1:
        dist.barrier()
    return path


# --------------------------------------------------------------------------------------------
# Command line (wired as `lmeec train` in cli.py)


def _parse_optional(kind: type) -> Callable[[str], Any]:
    """Parser of an optional value: 'none' (or nothing) means None."""
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "") else kind(text)
    return parse


_ARG_TYPES: dict[str, Callable[[str], Any]] = {
    "int": int, "float": float, "str": str, "int | None": _parse_optional(int),
    "float | None": _parse_optional(float), "str | None": _parse_optional(str),
}


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add one option per TrainConfig field (--out-dir, --steps, ...), with the field's default and help."""
    for spec in fields(TrainConfig):
        flag = "--" + spec.name.replace("_", "-")
        help_text = spec.metadata.get("help", "")
        if spec.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=spec.default, help=help_text)
            continue
        parser.add_argument(flag, type=_ARG_TYPES[spec.type], default=spec.default,
                            help=f"{help_text} (default: {spec.default})")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed `add_train_arguments` options."""
    return TrainConfig(**{spec.name: getattr(args, spec.name) for spec in fields(TrainConfig)})


def main_train(args: argparse.Namespace) -> int:
    """`lmeec train`: run training and print the exported checkpoint's path as JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = train(config_from_args(args))
    if Processes.from_env().main:
        print(json.dumps({"model": str(path)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main_train(add_train_arguments(argparse.ArgumentParser(description=__doc__)).parse_args()))
