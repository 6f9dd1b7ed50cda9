"""Procedural, tileable surface textures for the synthetic scenes, with a mip pyramid.

Textures are small periodic images (stripes, checks, noise) so that every object gets a distinctive
appearance from a handful of random numbers and no asset files. Each texture keeps a pyramid of
blurred copies: the ray caster picks a level from the size of a pixel on the surface, which keeps
distant floors and walls from turning into moire that no real camera would show.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lmeec_core.errors import ConfigError

TEXTURE_SIZE = 64  # texels per side; a power of two so that wrapping is a bit mask
MIP_LEVELS = 5
PatternKind = Literal["stripes", "checks", "noise", "plain"]
PATTERNS: tuple[PatternKind, ...] = ("stripes", "checks", "noise")


@dataclass(frozen=True)
class Texture:
    """A tileable albedo image sampled in metres of surface.

    `levels[l]` is the texture box-filtered over 2**l texels (stored at full size, so one fancy
    index serves every level); `texels_per_metre` sets how large one period looks in the world.
    """

    levels: np.ndarray  # float32 [MIP_LEVELS, TEXTURE_SIZE, TEXTURE_SIZE, 3], albedo in 0..1
    texels_per_metre: float

    def sample(self, u: np.ndarray, v: np.ndarray, metres_per_pixel: np.ndarray) -> np.ndarray:
        """Albedo [N, 3] at surface coordinates (u, v) in metres, filtered for the pixel footprint."""
        texels_per_pixel = np.maximum(metres_per_pixel * self.texels_per_metre, 1.0)
        level = np.minimum(np.log2(texels_per_pixel).astype(np.int32), MIP_LEVELS - 1)
        iu = np.floor(u * self.texels_per_metre).astype(np.int32) & (TEXTURE_SIZE - 1)
        iv = np.floor(v * self.texels_per_metre).astype(np.int32) & (TEXTURE_SIZE - 1)
        return self.levels[level, iv, iu]


def random_colour(
    rng: np.random.Generator, *, hue: float | None = None, saturation: tuple[float, float] = (0.45, 0.95)
) -> np.ndarray:
    """A mid-bright RGB colour (float32 [3]); `hue` fixes the hue in 0..1."""
    h = rng.random() if hue is None else hue % 1.0
    s = rng.uniform(*saturation)
    v = rng.uniform(0.45, 0.95)
    return np.asarray(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def make_texture(
    kind: PatternKind,
    colour_a: np.ndarray,
    colour_b: np.ndarray,
    rng: np.random.Generator,
    texels_per_metre: float,
    grain: float = 0.12,
) -> Texture:
    """Mix two colours by a random pattern of `kind`, add fine grain, and build the mip pyramid."""
    weight = _pattern(kind, rng)[..., None]
    albedo = colour_a * (1.0 - weight) + colour_b * weight
    albedo = albedo * (1.0 + grain * (_tileable_noise(rng, TEXTURE_SIZE // 2)[..., None] - 0.5))
    return Texture(_mip_pyramid(np.clip(albedo, 0.0, 1.0).astype(np.float32)), texels_per_metre)


def _pattern(kind: PatternKind, rng: np.random.Generator) -> np.ndarray:
    """Mixing weight in 0..1, [TEXTURE_SIZE, TEXTURE_SIZE], periodic over the texture."""
    y, x = np.mgrid[0:TEXTURE_SIZE, 0:TEXTURE_SIZE].astype(np.float32) / TEXTURE_SIZE
    if kind == "stripes":
        # Integer wave numbers keep the stripes seamless when the texture wraps.
        kx, ky = int(rng.integers(1, 5)), int(rng.integers(-3, 4))
        wave = np.sin(2.0 * np.pi * (kx * x + ky * y))
        return np.clip(0.5 + rng.uniform(1.0, 4.0) * wave, 0.0, 1.0)
    if kind == "checks":
        cells = int(rng.choice([2, 4, 8]))
        return ((np.floor(x * cells) + np.floor(y * cells)) % 2).astype(np.float32)
    if kind == "noise":
        octaves = sum(_tileable_noise(rng, g) * a for g, a in ((4, 1.0), (8, 0.5), (16, 0.25)))
        lo, hi = octaves.min(), octaves.max()
        return np.clip((octaves - lo) / (hi - lo) * 1.6 - 0.3, 0.0, 1.0)
    if kind == "plain":
        return np.zeros((TEXTURE_SIZE, TEXTURE_SIZE), np.float32)
    raise ConfigError(f"unknown texture pattern {kind!r}; expected one of {PATTERNS + ('plain',)}")


def _tileable_noise(rng: np.random.Generator, grid: int) -> np.ndarray:
    """Smooth value noise in 0..1 that wraps: a random [grid, grid] lattice, smoothly interpolated."""
    lattice = rng.random((grid, grid)).astype(np.float32)
    pos = np.arange(TEXTURE_SIZE, dtype=np.float32) * grid / TEXTURE_SIZE
    i0 = pos.astype(np.int32)
    i1 = (i0 + 1) % grid
    f = pos - i0
    f = f * f * (3.0 - 2.0 * f)
    rows = lattice[i0] * (1.0 - f)[:, None] + lattice[i1] * f[:, None]
    return rows[:, i0] * (1.0 - f)[None, :] + rows[:, i1] * f[None, :]


def _mip_pyramid(image: np.ndarray) -> np.ndarray:
    """Stack of box-filtered copies, level l averaged over 2**l x 2**l texels, all at full size."""
    levels = []
    for level in range(MIP_LEVELS):
        k = 2**level
        coarse = image.reshape(TEXTURE_SIZE // k, k, TEXTURE_SIZE // k, k, 3).mean(axis=(1, 3))
        levels.append(np.repeat(np.repeat(coarse, k, axis=0), k, axis=1))
    return np.stack(levels).astype(np.float32)
