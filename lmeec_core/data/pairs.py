"""Single synchronised frame pairs with every pixel's instance id, for the trunk stage of training.

The renderer knows which object each pixel of both views shows. One ego/exo pair therefore carries
hundreds of labelled cross-view correspondences (every token of an object in one view matches the
tokens of the same object in the other), far more supervision per encoder pass than one mask of an
8-frame clip. Items come from the training rooms only (`train_scene_seeds`) and are a pure function
of (sample seed, index), like the clips.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .. import preprocess as pp
from ..errors import ConfigError
from .clips import MIN_SOURCE_PIXELS, RoomRecipe, TrainingRooms
from .synthetic import SyntheticFrame

MAX_INSTANCES = 32  # instance ids are below this (objects 1..14, the wearer last)
PAIR_ATTEMPTS = 20
MIN_SHARED_OBJECTS = 2  # a pair must show at least this many objects in both views to teach anything


@dataclass
class FramePairBatch:
    """B frame pairs at the model input size: images [B, 3, S, S] normalised, instances [B, S, S] uint8."""

    ego_images: torch.Tensor
    exo_images: torch.Tensor
    ego_instances: torch.Tensor
    exo_instances: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.ego_images.shape[0]

    def to(self, device: torch.device) -> "FramePairBatch":
        return FramePairBatch(*(getattr(self, name).to(device, non_blocking=True) for name in _PAIR_FIELDS))


_PAIR_FIELDS = ("ego_images", "exo_images", "ego_instances", "exo_instances")


def collate_pairs(pairs: Sequence[FramePairBatch]) -> FramePairBatch:
    """DataLoader collate function: concatenate single-pair batches."""
    return FramePairBatch(*(torch.cat([getattr(p, name) for p in pairs]) for name in _PAIR_FIELDS))


def instances_to_tensor(instances: np.ndarray, size: int) -> torch.Tensor:
    """[1, S, S] instance ids at the model input size (nearest: ids are labels, not intensities)."""
    if instances.max(initial=0) >= MAX_INSTANCES:
        raise ConfigError(f"instance id {instances.max()} >= {MAX_INSTANCES}; expected fewer objects per room")
    resized = Image.fromarray(instances).resize((size, size), Image.NEAREST)
    return torch.from_numpy(np.asarray(resized).copy())[None]


def pair_to_batch(frame: SyntheticFrame, size: int) -> FramePairBatch:
    """One rendered frame pair, preprocessed as the tracker preprocesses images."""
    cpu = torch.device("cpu")
    return FramePairBatch(
        pp.image_to_tensor(frame.ego_image, size, cpu)[0],
        pp.image_to_tensor(frame.exo_image, size, cpu)[0],
        instances_to_tensor(frame.ego_instances, size),
        instances_to_tensor(frame.exo_instances, size),
    )


def shared_objects(frame: SyntheticFrame) -> int:
    """How many objects (the wearer included) show at least MIN_SOURCE_PIXELS pixels in both views."""
    ego = np.bincount(frame.ego_instances.ravel(), minlength=MAX_INSTANCES)[1:]
    exo = np.bincount(frame.exo_instances.ravel(), minlength=MAX_INSTANCES)[1:]
    return int(((ego >= MIN_SOURCE_PIXELS) & (exo >= MIN_SOURCE_PIXELS)).sum())


class SyntheticFramePairs(Dataset):
    """`length` frame pairs rendered on demand from the training rooms; item i depends only on i.

    A pair is a random frame of a random room that shows at least MIN_SHARED_OBJECTS objects in
    both views (the ego camera looks away now and then; such frames teach nothing here).
    """

    def __init__(self, image_size: int, rooms: RoomRecipe, length: int, sample_seed: int = 0) -> None:
        self.image_size = image_size
        self.rooms = rooms
        self.length = length
        self.sample_seed = sample_seed
        self.source = TrainingRooms(rooms)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> FramePairBatch:
        return pair_to_batch(self.draw(index), self.image_size)

    def draw(self, index: int) -> SyntheticFrame:
        """Item `index`'s frame pair (the last attempt if none shows enough shared objects)."""
        rng = np.random.default_rng([self.sample_seed, index])
        for _ in range(PAIR_ATTEMPTS):
            scene = self.source.open(int(self.source.seeds[rng.integers(len(self.source.seeds))]))
            frame = scene.frame(int(rng.integers(self.rooms.scene_frames)))
            if shared_objects(frame) >= MIN_SHARED_OBJECTS:
                return frame
        return frame
