"""Training clips: T consecutive frame pairs of one or more objects, cut into source and target roles.

A clip holds both views resized to the square model input exactly as the tracker preprocesses
them (`lmeec_core.preprocess`), so the network sees the same pixels in training and at inference.
"ego"/"exo" are cameras; "source"/"target" are roles: Ego->Exo takes the ego camera as the source.
A synthetic clip can follow K objects of its room at once (`RoomRecipe.objects_per_clip`): the
images are encoded once per step and each object is one row of the batch from there on, as the
tracker's targets share one encoding per frame pair.

Both sources (synthetic rooms rendered on demand, processed takes on disk) are map-style datasets
whose item i is a pure function of (sample seed, i): a run is reproducible from its command line,
and resuming at step k just starts at item k*B.
Training scenes and held-out scenes come from disjoint seed ranges (`train_scene_seeds`,
`held_out_scene_seeds`), so evaluation never sees a training room.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import preprocess as pp
from ..errors import ConfigError
from .frame_cache import CachedRoom, FrameCache
from .scene_layout import TARGET_ID
from .synthetic import SceneConfig, SyntheticFrame, SyntheticScene, object_names, render_scene
from .takes import Take, list_takes, open_take, write_take

DIRECTIONS = ("ego2exo", "exo2ego")
DIRECTION_CHOICES = (*DIRECTIONS, "random")
TRAIN_SEED_BASE = 1_000_000  # training rooms: TRAIN_SEED_BASE + k
HELD_OUT_SEED_BASE = 500_000  # evaluation rooms: HELD_OUT_SEED_BASE + k, never trained on
MIN_SOURCE_PIXELS = 16  # the target must be visible in the source view on a clip's first frame
OBJECT_CHOICES = ("any", "table", "target")  # synthetic clips: which object a clip follows (RoomRecipe.objects)
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
    """One training sample, model-ready: images [T, 3, S, S] normalised, masks [T, K, 1, S, S] in {0, 1}
    (K objects followed through the same frames)."""

    source_images: torch.Tensor
    target_images: torch.Tensor
    source_masks: torch.Tensor
    target_masks: torch.Tensor
    direction: str


@dataclass
class ClipBatch:
    """B clips stacked frame-major: images [T, B, 3, S, S]; their R objects as rows: masks [T, R, 1, S, S]
    and `row_clips` [R], the clip (image column) each row belongs to."""

    source_images: torch.Tensor
    target_images: torch.Tensor
    source_masks: torch.Tensor
    target_masks: torch.Tensor
    row_clips: torch.Tensor

    @property
    def num_frames(self) -> int:
        return self.source_images.shape[0]

    @property
    def num_clips(self) -> int:
        return self.source_images.shape[1]

    @property
    def num_rows(self) -> int:
        return self.source_masks.shape[1]

    def to(self, device: torch.device) -> "ClipBatch":
        return ClipBatch(*(getattr(self, name).to(device, non_blocking=True) for name in _BATCH_FIELDS))


_BATCH_FIELDS = ("source_images", "target_images", "source_masks", "target_masks", "row_clips")


def collate_clips(clips: Sequence[Clip]) -> ClipBatch:
    """DataLoader collate function: clips along a new dimension 1, their objects as rows."""
    images = [torch.stack([getattr(c, name) for c in clips], dim=1) for name in ("source_images", "target_images")]
    masks = [torch.cat([getattr(c, name) for c in clips], dim=1) for name in ("source_masks", "target_masks")]
    row_clips = torch.cat([torch.full((c.source_masks.shape[1],), b) for b, c in enumerate(clips)])
    return ClipBatch(*images, *masks, row_clips)


def clip_from_frames(objects: Sequence[Sequence[FramePair]], direction: str, image_size: int) -> Clip:
    """Preprocess frame pairs into a clip with the given direction (tracker preprocessing).

    `objects[k]` are the clip's frames with object k's masks; every object shows the same images.
    """
    source, target = source_and_target(direction)
    cpu = torch.device("cpu")

    def images(view: str) -> torch.Tensor:
        return torch.cat([pp.image_to_tensor(getattr(f, f"{view}_image"), image_size, cpu)[0] for f in objects[0]])

    def masks(view: str) -> torch.Tensor:
        return torch.stack([torch.cat([pp.mask_to_tensor(getattr(f, f"{view}_mask"), image_size, cpu) for f in frames])
                            for frames in objects], dim=1)

    return Clip(images(source), images(target), masks(source), masks(target), direction)


@dataclass(frozen=True)
class ClipConfig:
    """How clips are cut, whatever the data: size, length, direction, and the sampling seed."""

    image_size: int = 256
    num_frames: int = 8  # T, consecutive frames per clip
    direction: str = "random"  # "ego2exo" | "exo2ego" | "random" (per clip)
    sample_seed: int = 0

    def __post_init__(self) -> None:
        if self.direction not in DIRECTION_CHOICES:
            raise ConfigError(f"direction {self.direction!r}; expected one of {DIRECTION_CHOICES}")
        if self.num_frames < 1:
            raise ConfigError(f"num_frames {self.num_frames}; expected >= 1")

    def draw_direction(self, rng: np.random.Generator) -> str:
        return self.direction if self.direction != "random" else DIRECTIONS[rng.integers(2)]


@dataclass(frozen=True)
class RoomRecipe:
    """Which synthetic rooms training clips come from, at what frame rate, and which object they follow.

    `objects`: "any" draws, per clip, one of the room's objects visible in the source view on the
    first frame, so that only the prompt tells which one is meant. "table" draws the same way among the
    objects on the table only (the target, its look-alikes and the small objects a robot handles, the
    ones the held-out rooms annotate), leaving out the large floor objects, which are easy to find and
    take a third of the "any" draws. "target" always follows the room's target (the object the wearer
    looks at and that moves, with two look-alikes): a model trained so can find it from those cues
    alone and learn to ignore the prompt, as the first shipped nano did.
    """

    num_scenes: int = 10_000  # training rooms, seeds train_scene_seeds(num_scenes)
    scene_frames: int = 60  # frames per room that clip starts are drawn from
    fps: float = 3.0  # 1/fps seconds between consecutive clip frames
    objects: str = "any"
    objects_per_clip: int = 1  # "any"/"table": up to this many distinct visible objects, each a batch row
    cache: str | None = None  # a frame cache folder (lmeec_core.data.frame_cache): its rooms, not rendered ones

    def __post_init__(self) -> None:
        if self.num_scenes < 1 or self.scene_frames < 1 or self.fps <= 0 or self.objects_per_clip < 1:
            raise ConfigError(f"room recipe {self}; expected num_scenes, scene_frames, objects_per_clip >= 1 "
                              "and fps > 0")
        if self.objects not in OBJECT_CHOICES:
            raise ConfigError(f"objects {self.objects!r}; expected one of {OBJECT_CHOICES}")

    def scene(self, seed: int, num_frames: int | None = None) -> SceneConfig:
        """The room of `seed` at this frame rate (default camera sizes)."""
        return replace(SceneConfig(seed=seed), num_frames=num_frames or self.scene_frames, fps=self.fps)


class TrainingRooms:
    """The rooms of a recipe: the first `num_scenes` training seeds rendered on demand, or a cache's rooms."""

    def __init__(self, recipe: RoomRecipe) -> None:
        self.recipe = recipe
        self.cache = FrameCache(recipe.cache) if recipe.cache else None
        if self.cache is None:
            self.seeds: Sequence[int] = train_scene_seeds(recipe.num_scenes)
            return
        if self.cache.fps != recipe.fps or self.cache.frames < recipe.scene_frames:
            raise ConfigError(f"frame cache {recipe.cache} has {self.cache.frames} frames per room at "
                              f"{self.cache.fps} fps; expected at least {recipe.scene_frames} at {recipe.fps}")
        if min(self.cache.seeds) < TRAIN_SEED_BASE:
            raise ConfigError(f"frame cache {recipe.cache} holds rooms below seed {TRAIN_SEED_BASE}, which may be "
                              "held-out rooms; expected training rooms only")
        self.seeds = self.cache.seeds[:recipe.num_scenes]

    def open(self, seed: int) -> SyntheticScene | CachedRoom:
        """Room `seed`, whose `frame(k)` renders or reads frame k."""
        return self.cache.room(seed) if self.cache else SyntheticScene(self.recipe.scene(seed))


def _visible_start(available: int, clip: ClipConfig, source_visible: Callable[[int], bool],
                   rng: np.random.Generator) -> int:
    """A clip start whose first frame shows the target in the source view (the official sampler's rule).

    Falls back to the first such frame found by scanning, then to frame 0.
    """
    last_start = available - clip.num_frames
    for _ in range(START_ATTEMPTS):
        start = int(rng.integers(last_start + 1))
        if source_visible(start):
            return start
    return next((k for k in range(last_start + 1) if source_visible(k)), 0)


class SyntheticClips(Dataset):
    """`length` clips rendered on demand from seeded training rooms; item i depends only on i."""

    def __init__(self, clip: ClipConfig, rooms: RoomRecipe, length: int) -> None:
        if rooms.scene_frames < clip.num_frames:
            raise ConfigError(f"scene_frames {rooms.scene_frames} < clip frames {clip.num_frames}; "
                              "expected rooms at least as long as a clip")
        self.clip = clip
        self.rooms = rooms
        self.length = length
        self.source = TrainingRooms(rooms)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Clip:
        draw, frames = self.draw(index)
        objects = [[frame.of_object(instance) for frame in frames] for instance in draw.instances]
        return clip_from_frames(objects, draw.direction, self.clip.image_size)

    def draw(self, index: int) -> tuple[ClipDraw, list[SyntheticFrame]]:
        """Item `index`'s room, direction, start and objects, with its frames (each rendered once)."""
        rng = np.random.default_rng([self.clip.sample_seed, index])
        seed = int(self.source.seeds[rng.integers(len(self.source.seeds))])
        scene = self.source.open(seed)
        direction = self.clip.draw_direction(rng)
        source, _ = source_and_target(direction)
        candidates = ((TARGET_ID,) if self.rooms.objects == "target"
                      else tuple(object_names(scene.config, table_only=self.rooms.objects == "table").values()))
        rendered: dict[int, SyntheticFrame] = {}

        def frame(k: int) -> SyntheticFrame:
            if k not in rendered:
                rendered[k] = scene.frame(k)
            return rendered[k]

        def visible(k: int) -> list[int]:
            pixels = np.bincount(getattr(frame(k), f"{source}_instances").ravel(), minlength=max(candidates) + 1)
            return [instance for instance in candidates if pixels[instance] >= MIN_SOURCE_PIXELS]

        start = _visible_start(self.rooms.scene_frames, self.clip, lambda k: bool(visible(k)), rng)
        shown = visible(start) or [TARGET_ID]
        # The first object is drawn as before objects_per_clip existed, so one-object streams are unchanged.
        instances = [shown.pop(int(rng.integers(len(shown))))]
        extra = min(self.rooms.objects_per_clip - 1, len(shown))
        if extra:
            instances += [int(i) for i in rng.choice(shown, size=extra, replace=False)]
        frames = [frame(start + k) for k in range(self.clip.num_frames)]
        return ClipDraw(seed, direction, start, tuple(instances)), frames


@dataclass(frozen=True)
class ClipDraw:
    """What a synthetic clip is: its room, direction, first frame and followed objects (instance ids)."""

    seed: int
    direction: str
    start: int
    instances: tuple[int, ...]


@dataclass(frozen=True)
class _TakeFrame:
    ego_image: np.ndarray
    exo_image: np.ndarray
    ego_mask: np.ndarray
    exo_mask: np.ndarray


@dataclass(frozen=True)
class _TakeSequence:
    take: Take
    obj: str
    exo: str
    direction: str
    frames: list[str]


class TakeClips(Dataset):
    """Clips from processed takes (EgoExo4D layout, real or synthetic); item i depends only on i.

    Every (take, object, exo camera, direction) sequence of at least T evaluable frames (the
    evaluation's frame rule, `Take.frames`) is a candidate; item i draws one and a start.
    A frame without an annotation in a camera counts as "object absent" there.
    """

    def __init__(self, root: str | Path, clip: ClipConfig, length: int) -> None:
        self.clip = clip
        self.length = length
        directions = DIRECTIONS if clip.direction == "random" else (clip.direction,)
        self.sequences = [
            _TakeSequence(take, obj, exo, direction, frames)
            for take in (open_take(Path(root) / name) for name in list_takes(root))
            for obj in take.objects for exo in take.annotated_exo_cameras(obj) for direction in directions
            if len(frames := take.frames(obj, exo, direction)) >= clip.num_frames
        ]
        if not self.sequences:
            raise ConfigError(f"no take under {root} has a sequence of {clip.num_frames} annotated frames; "
                              "expected processed takes (<take>/annotation.json) with longer sequences")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Clip:
        rng = np.random.default_rng([self.clip.sample_seed, index])
        seq = self.sequences[rng.integers(len(self.sequences))]
        source, _ = source_and_target(seq.direction)
        source_camera = seq.take.ego_camera if source == "ego" else seq.exo

        def visible(k: int) -> bool:
            frame = seq.frames[k]
            return (seq.take.has_mask(seq.obj, source_camera, frame)
                    and seq.take.load_mask(seq.obj, source_camera, frame).any())

        start = _visible_start(len(seq.frames), self.clip, visible, rng)
        frames = [self._frame(seq, name) for name in seq.frames[start:start + self.clip.num_frames]]
        return clip_from_frames([frames], seq.direction, self.clip.image_size)

    @staticmethod
    def _frame(seq: _TakeSequence, name: str) -> _TakeFrame:
        views = {}
        for view, camera in (("ego", seq.take.ego_camera), ("exo", seq.exo)):
            image = seq.take.load_image(camera, name)
            mask = (seq.take.load_mask(seq.obj, camera, name) if seq.take.has_mask(seq.obj, camera, name)
                    else np.zeros(image.shape[:2], bool))
            views[view] = (image, mask)
        return _TakeFrame(views["ego"][0], views["exo"][0], views["ego"][1], views["exo"][1])


def write_held_out_takes(root: str | Path, scenes: int, frames: int, fps: float,
                         objects: str = "target") -> list[Path]:
    """Render the held-out rooms as processed takes (lossless PNG) for `lmeec evaluate`.

    Same cameras and frame rate as training clips (`RoomRecipe`), rooms never trained on.
    `objects`: "target" annotates each room's target; "table" also its look-alikes and the other
    objects on the table, so that a model that ignores the prompt scores low on them.
    """
    if objects not in ("target", "table"):
        raise ConfigError(f"objects {objects!r}; expected 'target' or 'table'")
    recipe = RoomRecipe(fps=fps)
    takes = []
    for seed in held_out_scene_seeds(scenes):
        config = recipe.scene(seed, num_frames=frames)
        names = object_names(config, table_only=True) if objects == "table" else None
        takes.append(write_take(root, f"heldout_{seed}", render_scene(config), image_format="png", objects=names))
    return takes
