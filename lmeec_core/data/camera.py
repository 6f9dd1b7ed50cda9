"""Cameras of the synthetic scenes: pinhole geometry, poses, and the sensor that makes pixels.

Conventions (OpenCV-like): camera x right, y down, z forward; world z up, metres. Sizes are
(height, width) like numpy shapes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics of an undistorted camera with square pixels and the principal point at the centre."""

    height: int
    width: int
    hfov_deg: float

    @property
    def focal(self) -> float:
        """Focal length in pixels."""
        return 0.5 * self.width / np.tan(np.radians(self.hfov_deg) / 2.0)

    @cached_property
    def rays(self) -> np.ndarray:
        """Per-pixel ray directions in the camera frame, float32 [3, H, W], scaled to z = 1.

        With z = 1 a ray parameter t is the depth of the hit, which the texture filter needs.
        """
        v, u = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
        x = (u + 0.5 - 0.5 * self.width) / self.focal
        y = (v + 0.5 - 0.5 * self.height) / self.focal
        return np.stack([x, y, np.ones_like(x)]).astype(np.float32)

    @cached_property
    def vignette(self) -> np.ndarray:
        """Relative illumination falloff towards the corners (cos^4 law), float32 [H, W]."""
        x, y, z = self.rays
        return (z / np.sqrt(x * x + y * y + z * z)) ** 4

    def pixel_bounds(self, pose: Pose, points: np.ndarray) -> tuple[int, int, int, int] | None:
        """Row/column range (r0, r1, c0, c1) covering the projection of world `points` [3, N].

        The whole image when a point is behind or very near the camera (the projection is then
        unbounded); None when the points fall entirely outside the image.
        """
        cam = pose.rotation.T @ (points - pose.position[:, None])
        if np.any(cam[2] < 0.05):
            return 0, self.height, 0, self.width
        u = cam[0] / cam[2] * self.focal + 0.5 * self.width
        v = cam[1] / cam[2] * self.focal + 0.5 * self.height
        c0, c1 = max(int(np.floor(u.min())), 0), min(int(np.ceil(u.max())) + 1, self.width)
        r0, r1 = max(int(np.floor(v.min())), 0), min(int(np.ceil(v.max())) + 1, self.height)
        if c0 >= c1 or r0 >= r1:
            return None
        return r0, r1, c0, c1


@dataclass(frozen=True)
class Pose:
    """Camera position (world, [3]) and rotation camera-to-world ([3, 3], columns = x, y, z axes)."""

    position: np.ndarray
    rotation: np.ndarray


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> Pose:
    """Pose of a camera at `eye` looking at `target` with world z up, rolled by `roll` radians."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = np.cos(roll), np.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    return Pose(np.asarray(eye, np.float32), np.stack([right, down, forward], axis=1).astype(np.float32))


@dataclass(frozen=True)
class Sensor:
    """What turns scene radiance into 8-bit RGB: white balance, exposure, vignetting and noise.

    The two cameras of a scene get different sensors so that the same object never has exactly the
    same colours in both views, as with real ego and exo cameras.
    """

    gains: tuple[float, float, float]
    vignetting: float  # 0 = none, 1 = full cos^4 falloff
    noise_std: float  # in 8-bit grey levels

    def expose(self, radiance: np.ndarray, camera: PinholeCamera, rng: np.random.Generator) -> np.ndarray:
        """RGB uint8 [H, W, 3] from radiance [H, W, 3] (1.0 = white)."""
        falloff = 1.0 - self.vignetting * (1.0 - camera.vignette)
        linear = radiance * np.asarray(self.gains, np.float32) * falloff[..., None]
        encoded = 255.0 * np.clip(linear, 0.0, 1.0)
        if self.noise_std > 0:
            encoded += rng.standard_normal(encoded.shape, dtype=np.float32) * self.noise_std
        return np.clip(encoded + 0.5, 0, 255).astype(np.uint8)
