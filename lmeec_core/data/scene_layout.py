"""Random layout of one synthetic scene: room, table, objects, the ego wearer, the exo camera, light.

Everything a seed decides lives here; `synthetic.py` only animates and renders it. The layout is a
room with a table in the middle. The target, its look-alike distractors and a few other small
objects stand on the table; bigger objects (some tall enough to occlude) stand on the floor around
it, never where the wearer walks or right in front of the exo camera. The wearer stands at the
table on one side; the exo camera is mounted high on another side, 90-155 degrees away.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lmeec_core.data.camera import Pose, Sensor, look_at
from lmeec_core.data.motion import PeriodicEvent, SmoothWalk
from lmeec_core.data.raycast import Box, Cylinder, Light, Room, Shape, Solid, Sphere
from lmeec_core.data.textures import PATTERNS, Texture, make_texture, random_colour
from lmeec_core.errors import ConfigError

if TYPE_CHECKING:
    from lmeec_core.data.synthetic import SceneConfig

TARGET_ID = 1  # instance id of the target; other objects 2..num_objects, the wearer num_objects + 1
EVENT_PERIOD_S = 10.0  # the wearer looks away and the target leaves the exo view once per period
TABLE_HEIGHT = 0.75
TARGET_WALK_M = 0.15  # how far the target slides around its home on the table
MAX_TABLE_OBJECTS = 5  # the target, its distractors, then other small objects up to this count


@dataclass(frozen=True)
class Wearer:
    """The person carrying the ego camera: where the head goes and where it looks."""

    base_azimuth: float
    head_height: float
    walk: SmoothWalk  # (azimuth offset rad, distance from the table centre m)
    gaze: SmoothWalk  # offset of the looked-at point from the target, m
    roll: SmoothWalk  # head roll, rad
    look_away: PeriodicEvent
    look_away_turn: float  # rad added to the gaze azimuth at full look-away
    body: Solid  # at the origin; placed under the ego camera per frame
    head: Solid


@dataclass(frozen=True)
class TargetMotion:
    home: np.ndarray  # [3] rest position on the table
    walk: SmoothWalk  # (dx, dy, yaw) around home
    excursion: PeriodicEvent  # weight of being carried to `hidden`
    hidden: np.ndarray  # [3] spot on the floor under the exo camera's field of view


@dataclass(frozen=True)
class Layout:
    """Every random choice of one scene."""

    room: Room
    light: Light
    table: Solid
    objects: list[Solid]  # the target first, at its home position
    target: TargetMotion
    wearer: Wearer
    exo_pose: Pose
    ego_sensor: Sensor
    exo_sensor: Sensor


def sample_layout(config: SceneConfig, rng: np.random.Generator) -> Layout:
    """Draw a complete layout from `rng`; motion signals are keyed on the seed for streaming."""
    key = (config.seed, int(rng.integers(2**31)))
    table = _sample_table(rng)
    table_radius = float(np.hypot(*table.shape.half_extents[:2]))
    wearer = _sample_wearer(rng, key, table_radius, instance=TARGET_ID + config.num_objects)
    exo_azimuth = wearer.base_azimuth + rng.choice([-1.0, 1.0]) * rng.uniform(1.6, 2.7)
    exo_distance = rng.uniform(3.0, 3.8)
    exo_xy = exo_distance * np.array([np.cos(exo_azimuth), np.sin(exo_azimuth)])
    exo_eye = np.array([*exo_xy, rng.uniform(2.1, 2.7)])
    exo_pose = look_at(exo_eye, np.array([*rng.uniform(-0.3, 0.3, 2), TABLE_HEIGHT]))
    objects = _sample_objects(config, rng, table, wearer.base_azimuth, exo_azimuth)
    target_half_height = objects[0].shape.half_extents[2]
    reach = TARGET_WALK_M / np.sqrt(2.0)  # keeps the slide within TARGET_WALK_M of home
    return Layout(
        room=_sample_room(rng, min_half_extent=max(exo_distance, 3.6) + 0.5),
        light=_sample_light(rng),
        table=table,
        objects=objects,
        target=TargetMotion(
            home=objects[0].position,
            walk=SmoothWalk((*key, 0), 2.0, (-reach, -reach, -1.0), (reach, reach, 1.0)),
            excursion=PeriodicEvent((*key, 1), EVENT_PERIOD_S, (4.8, 5.8), (1.0, 1.5), 1.0),
            hidden=np.array([*(exo_xy * (1.0 - 0.6 / exo_distance)), target_half_height], np.float32),
        ),
        wearer=wearer,
        exo_pose=exo_pose,
        ego_sensor=_sample_sensor(rng, vignetting=0.6, noise_std=config.noise_std),
        exo_sensor=_sample_sensor(rng, vignetting=0.2, noise_std=config.noise_std),
    )


def _muted_two_tone(
    rng: np.random.Generator, kinds: tuple[str, ...], density: tuple[float, float]
) -> Texture:
    """Texture for large surfaces (walls, floor, table, clothes): a random kind in two muted colours.

    `density` is the range of texels per metre. Muted colours keep the background from outshining
    the objects, as in real rooms.
    """
    a, b = (random_colour(rng, saturation=(0.1, 0.55)) for _ in range(2))
    return make_texture(rng.choice(kinds), a, b, rng, rng.uniform(*density))


def _sample_room(rng: np.random.Generator, min_half_extent: float) -> Room:
    walls = [_muted_two_tone(rng, ("stripes", "noise", "plain"), (16, 48)) for _ in range(4)]
    floor = _muted_two_tone(rng, PATTERNS, (32, 64))
    ceiling = make_texture("plain", np.full(3, 0.85), np.full(3, 0.85), rng, texels_per_metre=32)
    half_x, half_y = min_half_extent + rng.uniform(0.6, 1.5, 2)
    return Room(half_x, half_y, rng.uniform(2.8, 3.3), (*walls, floor, ceiling))


def _sample_table(rng: np.random.Generator) -> Solid:
    half = (rng.uniform(0.6, 0.9), rng.uniform(0.45, 0.6), TABLE_HEIGHT / 2)
    texture = _muted_two_tone(rng, ("noise", "stripes"), (60, 120))
    centre = np.array([0.0, 0.0, TABLE_HEIGHT / 2], np.float32)
    return Solid(Box(half), texture, instance=0, position=centre, yaw=rng.uniform(0, np.pi))


def _sample_light(rng: np.random.Generator) -> Light:
    azimuth, elevation = rng.uniform(-np.pi, np.pi), rng.uniform(np.radians(45), np.radians(75))
    direction = [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]
    ambient, diffuse = rng.uniform(0.35, 0.5), rng.uniform(0.5, 0.7)
    return Light(np.array(direction, np.float32), ambient=ambient, diffuse=diffuse)


def _random_shape(rng: np.random.Generator, low: float, high: float, height_scale: float = 1.0) -> Shape:
    """A box, sphere or cylinder with half sizes in [low, high] (heights scaled by height_scale)."""
    kind = rng.choice(["box", "sphere", "cylinder"])
    if kind == "box":
        hx, hy = rng.uniform(low, high, 2)
        return Box((hx, hy, rng.uniform(low, high) * height_scale))
    if kind == "sphere":
        return Sphere(rng.uniform(low, high))
    return Cylinder(rng.uniform(low, high), rng.uniform(low, high) * height_scale)


def _sample_objects(
    config: SceneConfig, rng: np.random.Generator, table: Solid, wearer_azimuth: float, exo_azimuth: float
) -> list[Solid]:
    """The target, its distractors and small objects on the table; bigger ones on the floor."""
    target_colours = (random_colour(rng), random_colour(rng))
    target_pattern = rng.choice(PATTERNS)
    target_shape = _random_shape(rng, 0.07, 0.14)
    objects: list[Solid] = []
    for index in range(config.num_objects):
        on_table = index < MAX_TABLE_OBJECTS
        if index == 0:
            shape, pattern, colours = target_shape, target_pattern, target_colours
        elif index <= config.num_distractors:
            # Same colours as the target; alternately the same shape or the same pattern.
            hues = [_hue(c) + rng.uniform(-0.02, 0.02) for c in target_colours]
            colours = tuple(random_colour(rng, hue=h) for h in hues)
            if index % 2 == 0:
                shape, pattern = target_shape, rng.choice([p for p in PATTERNS if p != target_pattern])
            else:
                shape, pattern = _random_shape(rng, 0.06, 0.14), target_pattern
        elif on_table:
            shape = _random_shape(rng, 0.05, 0.12)
            pattern, colours = rng.choice(PATTERNS), (random_colour(rng), random_colour(rng))
        else:
            shape = _random_shape(rng, 0.15, 0.4, height_scale=3.0 if rng.random() < 0.3 else 1.0)
            pattern, colours = rng.choice(PATTERNS), (random_colour(rng), random_colour(rng))
        texture = make_texture(pattern, *colours, rng, texels_per_metre=rng.uniform(150, 350))
        margin = TARGET_WALK_M if index == 0 else 0.0
        position = _spot_on_table(rng, shape, objects, table, margin) if on_table else None
        if position is None:
            position = _spot_on_floor(rng, shape, [table, *objects], wearer_azimuth, exo_azimuth)
        objects.append(Solid(shape, texture, TARGET_ID + index, position, yaw=rng.uniform(0, np.pi)))
    return objects


def _spot_on_table(
    rng: np.random.Generator, shape: Shape, placed: list[Solid], table: Solid, margin: float
) -> np.ndarray | None:
    """Centre of `shape` standing on the table, `margin` away from its edges, clear of `placed`.

    None when the table is too full: the object then goes on the floor.
    """
    radius = float(np.hypot(*shape.half_extents[:2]))
    free_x, free_y = table.shape.half_extents[:2] - radius - margin
    c, s = np.cos(table.yaw), np.sin(table.yaw)
    for _ in range(200):
        x, y = rng.uniform(-free_x, free_x), rng.uniform(-free_y, free_y)
        xy = np.array([c * x - s * y, s * x + c * y])
        if all(_clearance(xy, radius, other) > 0 for other in placed):
            return np.array([*xy, TABLE_HEIGHT + shape.half_extents[2]], np.float32)
    return None


def _spot_on_floor(
    rng: np.random.Generator, shape: Shape, placed: list[Solid], wearer_azimuth: float, exo_azimuth: float
) -> np.ndarray:
    """Centre of `shape` on the floor around the table, away from the wearer and the exo camera."""
    radius = float(np.hypot(*shape.half_extents[:2]))
    for _ in range(1000):
        distance, azimuth = rng.uniform(1.8, 3.4), rng.uniform(-np.pi, np.pi)
        if _angle_between(azimuth, wearer_azimuth) < 1.1 or _angle_between(azimuth, exo_azimuth) < 0.7:
            continue
        xy = distance * np.array([np.cos(azimuth), np.sin(azimuth)])
        if all(_clearance(xy, radius, other) > 0 for other in placed):
            return np.array([*xy, shape.half_extents[2]], np.float32)
    raise ConfigError(f"no free spot on the floor for object {len(placed)}; expected fewer objects")


def _clearance(xy: np.ndarray, radius: float, other: Solid) -> float:
    """Gap between two circular footprints; the target's grows by how far it slides."""
    other_radius = float(np.hypot(*other.shape.half_extents[:2]))
    if other.instance == TARGET_ID:
        other_radius += TARGET_WALK_M
    return float(np.hypot(*(xy - other.position[:2]))) - radius - other_radius - 0.03


def _angle_between(a: float, b: float) -> float:
    return abs((a - b + np.pi) % (2.0 * np.pi) - np.pi)


def _hue(colour: np.ndarray) -> float:
    return colorsys.rgb_to_hsv(*colour)[0]


def _sample_wearer(
    rng: np.random.Generator, key: tuple[int, ...], table_radius: float, instance: int
) -> Wearer:
    head_height = rng.uniform(1.5, 1.75)
    shirt = _muted_two_tone(rng, PATTERNS, (100, 200))
    skin_tone = np.array([0.85, 0.65, 0.5], np.float32) * rng.uniform(0.5, 1.0)
    skin = make_texture("noise", skin_tone, skin_tone * 0.9, rng, texels_per_metre=200)
    body_half_height = (head_height - 0.1) / 2.0  # shoulders just under the head
    return Wearer(
        base_azimuth=rng.uniform(-np.pi, np.pi),
        head_height=head_height,
        walk=SmoothWalk((*key, 2), 2.5, (-0.5, table_radius + 0.25), (0.5, table_radius + 0.6)),
        gaze=SmoothWalk((*key, 3), 1.5, (-0.3, -0.3, -0.15), (0.3, 0.3, 0.15)),
        roll=SmoothWalk((*key, 4), 2.0, (-0.06,), (0.06,)),
        look_away=PeriodicEvent((*key, 5), EVENT_PERIOD_S, (2.0, 3.0), (1.0, 1.5), 0.6),
        look_away_turn=rng.choice([-1.0, 1.0]) * rng.uniform(2.4, 2.9),
        body=Solid(Cylinder(0.2, body_half_height), shirt, instance, np.array([0, 0, body_half_height])),
        head=Solid(Sphere(0.12), skin, instance, np.zeros(3, np.float32)),
    )


def _sample_sensor(rng: np.random.Generator, vignetting: float, noise_std: float) -> Sensor:
    exposure = rng.uniform(0.95, 1.2)
    gains = tuple(float(g) for g in exposure * rng.uniform(0.9, 1.1, 3))
    return Sensor(gains=gains, vignetting=vignetting, noise_std=noise_std)
