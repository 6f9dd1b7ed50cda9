"""Rendered training rooms kept on disk, so that the CPU trains instead of rendering again.

A frame pair takes about 25 ms to ray-cast on one core, and a room's first frame is rendered once
more when it is laid out: on a 2-core machine, rendering training data on the fly costs about as
much as the trunk stage's and the single-frame stage's model compute. A cache renders the first N
training rooms once and serves their frames (memory-mapped .npy arrays at camera resolution, so
the preprocessing stays the tracker's) to any number of epochs, stages and runs.

Layout: `<root>/recipe.json` ({"fps", "frames", "rooms"}) and, per room, `<root>/<seed>/` with
`ego_image.npy` [F, He, We, 3], `exo_image.npy`, `ego_instances.npy` [F, He, We], `exo_instances.npy`.
Rooms are written to a scratch folder and renamed, so an interrupted writer leaves no half room.

    python -m lmeec_core.data.frame_cache DIR --rooms 1200 --frames 24 --fps 3 --workers 2
"""
from __future__ import annotations

import argparse
import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ConfigError
from .scene_layout import TARGET_ID
from .synthetic import SceneConfig, SyntheticFrame, SyntheticScene

RECIPE_FILE = "recipe.json"
ARRAYS = ("ego_image", "exo_image", "ego_instances", "exo_instances")


@dataclass(frozen=True)
class CachedRoom:
    """A cached room with the interface training uses of `SyntheticScene`: its config and `frame(k)`."""

    config: SceneConfig
    folder: Path

    def frame(self, index: int) -> SyntheticFrame:
        if not 0 <= index < self.config.num_frames:
            raise ConfigError(f"frame {index} of cached room {self.config.seed}; expected 0..{self.config.num_frames - 1}")
        arrays = {name: np.load(self.folder / f"{name}.npy", mmap_mode="r")[index].copy() for name in ARRAYS}
        return SyntheticFrame(index=index, stamp_s=index / self.config.fps,
                              ego_mask=arrays["ego_instances"] == TARGET_ID,
                              exo_mask=arrays["exo_instances"] == TARGET_ID, **arrays)


class FrameCache:
    """An existing cache folder: which rooms it holds and at what frame rate and length."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        recipe_path = self.root / RECIPE_FILE
        if not recipe_path.is_file():
            raise ConfigError(f"{self.root} is not a frame cache (no {RECIPE_FILE}); expected a folder written by "
                              "`python -m lmeec_core.data.frame_cache`")
        recipe = json.loads(recipe_path.read_text())
        self.fps, self.frames = float(recipe["fps"]), int(recipe["frames"])
        self.seeds = sorted(int(p.name) for p in self.root.iterdir() if p.is_dir() and p.name.isdigit())
        if not self.seeds:
            raise ConfigError(f"frame cache {self.root} holds no room yet")

    def room(self, seed: int) -> CachedRoom:
        return CachedRoom(SceneConfig(seed=seed, num_frames=self.frames, fps=self.fps), self.root / str(seed))


def _write_room(root: Path, seed: int, frames: int, fps: float) -> int:
    """Render room `seed` into `root/<seed>` (via a scratch folder); returns the seed."""
    scene = SyntheticScene(SceneConfig(seed=seed, num_frames=frames, fps=fps))
    rendered = [scene.frame(k) for k in range(frames)]
    scratch = root / f".{seed}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    for name in ARRAYS:
        np.save(scratch / f"{name}.npy", np.stack([getattr(f, name) for f in rendered]))
    scratch.rename(root / str(seed))
    return seed


def write_cache(root: str | Path, seeds: range, frames: int, fps: float, workers: int = 1) -> FrameCache:
    """Render the rooms of `seeds` that the cache does not hold yet; an existing cache must match."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    recipe = {"fps": fps, "frames": frames}
    recipe_path = root / RECIPE_FILE
    if recipe_path.exists() and json.loads(recipe_path.read_text()) != recipe:
        raise ConfigError(f"frame cache {root} was written with {recipe_path.read_text()}; expected {recipe}")
    recipe_path.write_text(json.dumps(recipe))
    missing = [s for s in seeds if not (root / str(s)).is_dir()]
    with ProcessPoolExecutor(max(workers, 1)) as pool:
        jobs = [pool.submit(_write_room, root, seed, frames, fps) for seed in missing]
        for job in tqdm(jobs, desc="render rooms", unit="room"):
            job.result()
    return FrameCache(root)


def main(argv: list[str] | None = None) -> int:
    from .clips import train_scene_seeds

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--rooms", type=int, required=True, help="the first N training rooms")
    parser.add_argument("--frames", type=int, default=24, help="frames per room (clips are cut from these)")
    parser.add_argument("--fps", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=1, help="rendering processes")
    args = parser.parse_args(argv)
    cache = write_cache(args.root, train_scene_seeds(args.rooms), args.frames, args.fps, args.workers)
    print(json.dumps({"root": str(cache.root), "rooms": len(cache.seeds), "frames": cache.frames, "fps": cache.fps}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
