"""Training clips: T consecutive frame pairs of one target, cut into source and target roles.

A clip holds both views resized to the square model input exactly as the tracker preprocesses
them (`lmeec_core.preprocess`), so the network sees the same pixels in training and at inference.
"ego"/"exo" are cameras; "source"/"target" are roles: Ego->Exo takes the ego camera as the source.

Synthetic clips are a map-style dataset whose item i is a pure function of (sample seed, i): a
run is reproducible from its command line, and resuming at step k just starts at item k*B.
Training scenes and held-out scenes come from disjoint seed ranges (`train_scene_seeds`,
`held_out_scene_seeds`), so evaluation never sees a training room.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import preprocess as pp
from ..errors import ConfigError
from .synthetic import SceneConfig, SyntheticFrame, SyntheticScene

DIRECTIONS = ("ego2exo", "exo2ego")
DIRECTION_CHOICES = (*DIRECTIONS, "random")
TRAIN_SEED_BASE = 1_000_000  # training rooms: TRAIN_SEED_BASE + k
HELD_OUT_SEED_BASE = 500_000  # evaluation rooms: HELD_OUT_SEED_BASE + k, never trained on
MIN_SOURCE_PIXELS = 16  # the target must be visible in the source view on a clip's first frame
START_ATTEMPTS = 20


def train_scene_seeds(count: int) -> range:
    """Seeds of the synthetic rooms used for training."""
    return range(TRAIN_SEED_BASE, TRAIN_SEED_BASE + count)


def held_out_scene_seeds(count: int) -> range:
    """Seeds of the synthetic rooms used for evaluation (disjoint from `train_scene_seeds`)."""
    return range(HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE + count)


def source_and_target(direction: str) -> tuple[str, str]:
    """(source camera, target camera) of a direction."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction {direction!r}; expected one of {DIRECTIONS}")
    return ("ego", "exo") if direction == "ego2exo" else ("exo", "ego")


class FramePair(Protocol):
    """What a clip needs from one synchronised frame pair (a SyntheticFrame, or a take's frame)."""

    ego_image: np.ndarray
    exo_image: np.ndarray
    ego_mask: np.ndarray
    exo_mask: np.ndarray


@dataclass
class Clip:
    """One training sample, model-ready: images [T, 3, S, S] normalised, masks [T, 1, S, S] in {0, 1}."""

    source_images: torch.Tensor
    target_images: torch.Tensor
    source_masks: torch.Tensor
    target_masks: torch.Tensor
    direction: str


@dataclass
class ClipBatch:
    """B clips stacked frame-major: images [T, B, 3, S, S], masks [T, B, 1, S, S]."""

    source_images: torch.Tensor
    target_images: torch.Tensor
    source_masks: torch.Tensor
    target_masks: torch.Tensor

    @property
    def num_frames(self) -> int:
        return self.source_images.shape[0]

    @property
    def batch_size(self) -> int:
        return self.source_images.shape[1]

    def to(self, device: torch.device) -> "ClipBatch":
        return ClipBatch(*(getattr(self, name).to(device, non_blocking=True) for name in _BATCH_FIELDS))


_BATCH_FIELDS = ("source_images", "target_images", "source_masks", "target_masks")


def collate_clips(clips: Sequence[Clip]) -> ClipBatch:
    """DataLoader collate function: stack clips along a new batch dimension 1."""
    return ClipBatch(*(torch.stack([getattr(c, name) for c in clips], dim=1) for name in _BATCH_FIELDS))


def clip_from_frames(frames: Sequence[FramePair], direction: str, image_size: int) -> Clip:
    """Preprocess frame pairs into a clip with the given direction (tracker preprocessing)."""
    source, target = source_and_target(direction)
    cpu = torch.device("cpu")

    def images(view: str) -> torch.Tensor:
        return torch.cat([pp.image_to_tensor(getattr(f, f"{view}_image"), image_size, cpu)[0] for f in frames])

    def masks(view: str) -> torch.Tensor:
        return torch.cat([pp.mask_to_tensor(getattr(f, f"{view}_mask"), image_size, cpu) for f in frames])

    return Clip(images(source), images(target), masks(source), masks(target), direction)


@dataclass(frozen=True)
class SyntheticClipConfig:
    """How synthetic training clips are drawn."""

    image_size: int = 256
    num_frames: int = 8  # T, consecutive frames per clip
    direction: str = "random"  # "ego2exo" | "exo2ego" | "random" (per clip)
    num_scenes: int = 10_000  # training rooms, seeds train_scene_seeds(num_scenes)
    scene_frames: int = 60  # frames per room the clip start is drawn from
    fps: float = 3.0  # scene frame rate: 1/fps seconds between consecutive clip frames
    sample_seed: int = 0

    def __post_init__(self) -> None:
        if self.direction not in DIRECTION_CHOICES:
            raise ConfigError(f"direction {self.direction!r}; expected one of {DIRECTION_CHOICES}")
        if self.num_frames < 1 or self.scene_frames < self.num_frames:
            raise ConfigError(f"num_frames {self.num_frames} and scene_frames {self.scene_frames}; "
                              "expected 1 <= num_frames <= scene_frames")
        if self.num_scenes < 1:
            raise ConfigError(f"num_scenes {self.num_scenes}; expected >= 1")

    def scene(self, seed: int) -> SceneConfig:
        """The room of `seed` as this recipe renders it (default camera sizes)."""
        return replace(SceneConfig(seed=seed), num_frames=self.scene_frames, fps=self.fps)


class SyntheticClips(Dataset):
    """`length` clips rendered on demand from seeded training rooms; item i depends only on i."""

    def __init__(self, config: SyntheticClipConfig, length: int) -> None:
        self.config = config
        self.length = length
        self.seeds = train_scene_seeds(config.num_scenes)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Clip:
        cfg = self.config
        rng = np.random.default_rng([cfg.sample_seed, index])
        scene = SyntheticScene(cfg.scene(int(self.seeds[rng.integers(len(self.seeds))])))
        direction = cfg.direction if cfg.direction != "random" else DIRECTIONS[rng.integers(2)]
        source, _ = source_and_target(direction)
        start, first = self._visible_start(scene, source, rng)
        frames = [first, *(scene.frame(start + k) for k in range(1, cfg.num_frames))]
        return clip_from_frames(frames, direction, cfg.image_size)

    def _visible_start(self, scene: SyntheticScene, source: str,
                       rng: np.random.Generator) -> tuple[int, SyntheticFrame]:
        """A first frame showing the target in the source view (the official sampler's rule), rendered.

        Frame 0 is the fallback: every scene shows the target there in both views.
        """
        last_start = self.config.scene_frames - self.config.num_frames
        for _ in range(START_ATTEMPTS):
            start = int(rng.integers(last_start + 1))
            frame = scene.frame(start)
            if getattr(frame, f"{source}_mask").sum() >= MIN_SOURCE_PIXELS:
                return start, frame
        return 0, scene.frame(0)
