"""A vectorised numpy ray caster: a textured room, textured boxes, spheres and cylinders.

Analytic ray casting gives exact occlusion and pixel-exact instance masks without a GPU or a
rasteriser dependency. It stays fast because every step is a whole-array numpy operation: one ray
per pixel, each solid intersected only inside the image rectangle its bounding box projects to,
then one deferred shading pass per visible surface (texture lookup, Lambert light, blob shadows).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmeec_core.data.camera import PinholeCamera, Pose
from lmeec_core.data.textures import Texture

EPS = 1e-4  # ignore hits this close to the ray origin
ROOM_FACES = 6  # surface ids 0..5 are the room (-x, +x, -y, +y walls, floor, ceiling); 6 + k is solid k
FLOOR = 4


def _rotate_z(v: np.ndarray, angle: float) -> np.ndarray:
    """Rotate vectors [3, ...] about the world z axis by `angle` radians."""
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return np.stack([c * v[0] - s * v[1], s * v[0] + c * v[1], v[2]])


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in its local frame, centred at the origin."""

    half: tuple[float, float, float]

    @property
    def half_extents(self) -> np.ndarray:
        return np.asarray(self.half, np.float32)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Ray parameter of the first hit (inf where missed), slab method."""
        t_near = np.full(d.shape[1:], -np.inf, np.float32)
        t_far = np.full(d.shape[1:], np.inf, np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            for axis, h in enumerate(self.half):
                inv = 1.0 / d[axis]
                t1 = (-h - o[axis]) * inv
                t2 = (h - o[axis]) * inv
                t_near = np.maximum(t_near, np.minimum(t1, t2))
                t_far = np.minimum(t_far, np.maximum(t1, t2))
        return np.where((t_near <= t_far) & (t_near > EPS), t_near, np.float32(np.inf))

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Outward normals [3, N] and texture coordinates u, v (metres) of local points [3, N]."""
        axis = np.argmax(np.abs(p) / self.half_extents[:, None], axis=0)
        cols = np.arange(p.shape[1])
        normal = np.zeros_like(p)
        normal[axis, cols] = np.sign(p[axis, cols])
        u = p[np.array([1, 0, 0])[axis], cols]
        v = p[np.array([2, 2, 1])[axis], cols]
        return normal, u, v


@dataclass(frozen=True)
class Sphere:
    radius: float

    @property
    def half_extents(self) -> np.ndarray:
        return np.full(3, self.radius, np.float32)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
        b = o[0] * d[0] + o[1] * d[1] + o[2] * d[2]
        c = np.float32(o @ o - self.radius**2)
        disc = b * b - a * c
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        return np.where((disc >= 0) & (t > EPS), t, np.float32(np.inf))

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        normal = p / self.radius
        u = self.radius * np.arctan2(p[1], p[0])
        v = self.radius * np.arccos(np.clip(normal[2], -1.0, 1.0))
        return normal, u, v


@dataclass(frozen=True)
class Cylinder:
    """Upright cylinder (axis = local z), centred at the origin."""

    radius: float
    half_height: float

    @property
    def half_extents(self) -> np.ndarray:
        return np.asarray([self.radius, self.radius, self.half_height], np.float32)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        a = d[0] * d[0] + d[1] * d[1]
        b = o[0] * d[0] + o[1] * d[1]
        c = np.float32(o[0] ** 2 + o[1] ** 2 - self.radius**2)
        disc = b * b - a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
            z = o[2] + t_side * d[2]
            side = (disc >= 0) & (np.abs(z) <= self.half_height) & (t_side > EPS)
            t = np.where(side, t_side, np.float32(np.inf))
            if abs(o[2]) > self.half_height:  # only a camera above (below) the top (bottom) sees a cap
                t_cap = (np.copysign(self.half_height, o[2]) - o[2]) / d[2]
                x, y = o[0] + t_cap * d[0], o[1] + t_cap * d[1]
                cap = (x * x + y * y <= self.radius**2) & (t_cap > EPS)
                t = np.where(cap, np.minimum(t, t_cap), t)
        return t

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cap = np.abs(p[2]) >= self.half_height * (1.0 - 1e-4)
        radial = np.sqrt(p[0] ** 2 + p[1] ** 2) + 1e-9
        normal = np.where(cap, 0.0, p / radial)
        normal[2] = np.where(cap, np.sign(p[2]), 0.0)
        u = np.where(cap, p[0], self.radius * np.arctan2(p[1], p[0]))
        v = np.where(cap, p[1], p[2])
        return normal.astype(np.float32), u, v


Shape = Box | Sphere | Cylinder


@dataclass(frozen=True)
class Solid:
    """A shape placed in the world (centre, rotation about z), with its texture and instance id."""

    shape: Shape
    texture: Texture
    instance: int
    position: np.ndarray  # world centre [3]
    yaw: float = 0.0

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        return self.shape.intersect(_rotate_z(o - self.position, -self.yaw), _rotate_z(d, -self.yaw))

    def surface(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World normals [3, N] and texture coordinates of world points [3, N] on this solid."""
        normal, u, v = self.shape.surface(_rotate_z(points - self.position[:, None], -self.yaw))
        return _rotate_z(normal, self.yaw), u, v

    def corners(self) -> np.ndarray:
        """World corners [3, 8] of the rotated bounding box, for image-space culling."""
        signs = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, 8)
        return _rotate_z(signs * self.shape.half_extents[:, None], self.yaw) + self.position[:, None]


@dataclass(frozen=True)
class Room:
    """Inside of an axis-aligned box: walls at x = +-half_x, y = +-half_y, floor z = 0, ceiling."""

    half_x: float
    half_y: float
    height: float
    textures: tuple[Texture, ...]  # one per face, in ROOM_FACES order

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exit distance [H, W] and face id [H, W] of rays leaving the room from inside."""
        with np.errstate(divide="ignore"):
            tx = (self.half_x - np.where(d[0] >= 0, o[0], -o[0])) / np.abs(d[0])
            ty = (self.half_y - np.where(d[1] >= 0, o[1], -o[1])) / np.abs(d[1])
            tz = np.where(d[2] >= 0, self.height - o[2], o[2]) / np.abs(d[2])
        t = np.stack([tx, ty, tz]).astype(np.float32)
        axis = np.argmin(t, axis=0)
        positive = np.take_along_axis(d, axis[None], axis=0)[0] >= 0
        return np.take_along_axis(t, axis[None], axis=0)[0], 2 * axis + positive

    @staticmethod
    def surface(face: int, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inward normal [3, 1] and texture coordinates of world points [3, N] on `face`."""
        axis, positive = divmod(face, 2)
        normal = np.zeros((3, 1), np.float32)
        normal[axis] = -1.0 if positive else 1.0
        u_axis, v_axis = {0: (1, 2), 1: (0, 2), 2: (0, 1)}[axis]
        return normal, p[u_axis], p[v_axis]


@dataclass(frozen=True)
class Light:
    """Directional light plus ambient term; `direction` is a unit vector pointing at the light."""

    direction: np.ndarray
    ambient: float
    diffuse: float


@dataclass(frozen=True)
class RenderedView:
    radiance: np.ndarray  # float32 [H, W, 3], 1.0 = white
    instances: np.ndarray  # uint8 [H, W], 0 = room, otherwise Solid.instance


def render(camera: PinholeCamera, pose: Pose, room: Room, solids: list[Solid], light: Light) -> RenderedView:
    """Cast one ray per pixel, keep the nearest hit, then shade every visible surface once."""
    h, w = camera.height, camera.width
    d = (pose.rotation @ camera.rays.reshape(3, -1)).reshape(3, h, w)
    o = pose.position
    depth, surface = room.intersect(o, d)
    for k, solid in enumerate(solids):
        bounds = camera.pixel_bounds(pose, solid.corners())
        if bounds is None:
            continue
        r0, r1, c0, c1 = bounds
        t = solid.intersect(o, d[:, r0:r1, c0:c1])
        closer = t < depth[r0:r1, c0:c1]
        depth[r0:r1, c0:c1][closer] = t[closer]
        surface[r0:r1, c0:c1][closer] = ROOM_FACES + k

    radiance = _shade(camera, o, d.reshape(3, -1), depth.ravel(), surface.ravel(), room, solids, light)
    instance_of_surface = np.array([0] * ROOM_FACES + [s.instance for s in solids], np.uint8)
    return RenderedView(radiance.reshape(h, w, 3), instance_of_surface[surface])


def _shade(
    camera: PinholeCamera,
    o: np.ndarray,
    d: np.ndarray,
    depth: np.ndarray,
    surface: np.ndarray,
    room: Room,
    solids: list[Solid],
    light: Light,
) -> np.ndarray:
    """Radiance [N, 3] of every pixel from its surface id and hit depth (deferred shading)."""
    radiance = np.empty((depth.size, 3), np.float32)
    for s in range(ROOM_FACES + len(solids)):
        idx = np.flatnonzero(surface == s)
        if idx.size == 0:
            continue
        points = o[:, None] + d[:, idx] * depth[idx]
        if s < ROOM_FACES:
            normal, u, v = room.surface(s, points)
            texture = room.textures[s]
        else:
            normal, u, v = solids[s - ROOM_FACES].surface(points)
            texture = solids[s - ROOM_FACES].texture
        albedo = texture.sample(u, v, depth[idx] / camera.focal)
        lambert = light.ambient + light.diffuse * np.maximum(light.direction @ normal, 0.0)
        if s == FLOOR:
            lambert = lambert * _blob_shadows(points, solids, light)
        radiance[idx] = albedo * lambert[:, None]
    return radiance


def _blob_shadows(points: np.ndarray, solids: list[Solid], light: Light) -> np.ndarray:
    """Darkening [N] of floor points under each solid, displaced away from the light.

    Soft blobs instead of shadow rays: they ground the objects visually at a tiny fraction of the
    cost of a second intersection pass.
    """
    factor = np.ones(points.shape[1], np.float32)
    lx, ly, lz = light.direction
    for solid in solids:
        cx = solid.position[0] - lx / lz * solid.position[2]
        cy = solid.position[1] - ly / lz * solid.position[2]
        radius = 1.3 * float(max(solid.shape.half_extents[:2]))
        r2 = ((points[0] - cx) ** 2 + (points[1] - cy) ** 2) / radius**2
        factor *= 1.0 - 0.5 * np.exp(-r2)
    return factor
