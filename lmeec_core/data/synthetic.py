"""Seeded synthetic ego/exo scenes with ground-truth masks of one target object in both views.

They stand in for EgoExo4D where no data or weights can be downloaded: training the `nano` demo
model, tests, and bags for the ROS node. Each seed lays out a different room (see
`scene_layout.py`). A person wearing the head camera ("ego": square, 90 degrees, like undistorted
Aria frames) stands at a table and mostly looks at the target; a fixed external camera ("exo": 4:3,
55 degrees, mounted high on another side) watches the same objects and the person. Distractors share
the target's colours. Once per 10 s the wearer looks away (the target leaves the ego view) and the
target is carried under the exo camera, out of its field of view, then both come back. Occlusions
come from the other objects and, in the exo view, from the wearer.

Frames render on demand (`SyntheticScene.frame`) and stream (`render_scene`), so a scene can be
arbitrarily long without holding anything in memory.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from lmeec_core.data.camera import PinholeCamera, Pose, look_at
from lmeec_core.data.raycast import RenderedView, Solid, render
from lmeec_core.data.scene_layout import MAX_TABLE_OBJECTS, TARGET_ID, sample_layout
from lmeec_core.errors import ConfigError

MIN_PROMPT_FRACTION = {"ego": 0.004, "exo": 0.001}  # of the image the target covers on frame 0
MAX_LAYOUT_ATTEMPTS = 50
CARRY_LIFT_M = 0.6  # extra height halfway along the carry between the table and the hidden spot
MAX_OBJECTS = 14  # what always fits on the table and the floor around it (checked on 300 seeds)


@dataclass(frozen=True)
class SceneConfig:
    """What a synthetic scene looks like; everything else is drawn from `seed`.

    Sizes are (height, width). Stamps are index / fps seconds. At the defaults a frame pair
    renders in about 25 ms on one CPU core.
    """

    seed: int = 0
    num_frames: int = 100
    fps: float = 10.0
    ego_size: tuple[int, int] = (256, 256)
    exo_size: tuple[int, int] = (240, 320)
    ego_hfov_deg: float = 90.0
    exo_hfov_deg: float = 55.0
    num_objects: int = 8  # the target included
    num_distractors: int = 2  # objects that copy the target's colours
    noise_std: float = 2.0  # sensor noise, 8-bit grey levels

    def __post_init__(self) -> None:
        problems = []
        if self.num_frames < 1 or self.fps <= 0:
            problems.append(f"num_frames={self.num_frames}, fps={self.fps} (expected >= 1 and > 0)")
        for name in ("ego_size", "exo_size"):
            size = getattr(self, name)
            if len(size) != 2 or min(size) < 16:
                problems.append(f"{name}={size} (expected (height, width), each >= 16)")
        if not 1 <= self.num_objects <= MAX_OBJECTS:
            problems.append(f"num_objects={self.num_objects} (expected 1..{MAX_OBJECTS})")
        if not 0 <= self.num_distractors < self.num_objects:
            problems.append(f"num_distractors={self.num_distractors} (expected 0..num_objects-1)")
        if problems:
            raise ConfigError("invalid SceneConfig: " + "; ".join(problems))


@dataclass(frozen=True)
class SyntheticFrame:
    """One synchronised frame pair with ground truth; images RGB uint8, masks bool."""

    index: int
    stamp_s: float
    ego_image: np.ndarray  # [He, We, 3]
    exo_image: np.ndarray  # [Hx, Wx, 3]
    ego_mask: np.ndarray  # [He, We], the target
    exo_mask: np.ndarray  # [Hx, Wx]
    ego_instances: np.ndarray  # uint8 [He, We]: 0 room/table, TARGET_ID, other objects, wearer last
    exo_instances: np.ndarray  # uint8 [Hx, Wx]

    def of_object(self, instance: int) -> SyntheticFrame:
        """This frame with the masks of object `instance` (see `object_names`) as its GT masks."""
        return replace(self, ego_mask=self.ego_instances == instance, exo_mask=self.exo_instances == instance)


def object_names(config: SceneConfig, table_only: bool = False) -> dict[str, int]:
    """Instance ids of a room's objects by name: the target, its look-alikes, then the others."""
    count = min(config.num_objects, MAX_TABLE_OBJECTS) if table_only else config.num_objects
    names = {}
    for instance in range(TARGET_ID, TARGET_ID + count):
        offset = instance - TARGET_ID
        names["target" if offset == 0 else f"lookalike_{offset}" if offset <= config.num_distractors
              else f"object_{offset}"] = instance
    return names


def object_catalogue(config: SceneConfig) -> dict[str, dict[str, int | bool]]:
    """Every object of a room by name (`object_names`): its instance id and whether it stands on the table."""
    on_table = object_names(config, table_only=True)
    return {name: {"instance": instance, "on_table": name in on_table}
            for name, instance in object_names(config).items()}


class SyntheticScene:
    """A laid-out scene whose frames render on demand, in any order, deterministically."""

    def __init__(self, config: SceneConfig = SceneConfig()) -> None:
        self.config = config
        self.ego_camera = PinholeCamera(*config.ego_size, config.ego_hfov_deg)
        self.exo_camera = PinholeCamera(*config.exo_size, config.exo_hfov_deg)
        for attempt in range(MAX_LAYOUT_ATTEMPTS):
            self._layout = sample_layout(config, np.random.default_rng([config.seed, attempt]))
            if self._target_promptable():
                return
        raise ConfigError(
            f"no layout of seed {config.seed} shows the target on frame 0 in both views after "
            f"{MAX_LAYOUT_ATTEMPTS} attempts; expected larger images than {config}"
        )

    def frame(self, index: int) -> SyntheticFrame:
        """Render frame `index` (time index / fps) of both cameras."""
        t = index / self.config.fps
        ego_view, exo_view = self._render(t)
        noise = np.random.default_rng([self.config.seed, index])
        return SyntheticFrame(
            index=index,
            stamp_s=t,
            ego_image=self._layout.ego_sensor.expose(ego_view.radiance, self.ego_camera, noise),
            exo_image=self._layout.exo_sensor.expose(exo_view.radiance, self.exo_camera, noise),
            ego_mask=ego_view.instances == TARGET_ID,
            exo_mask=exo_view.instances == TARGET_ID,
            ego_instances=ego_view.instances,
            exo_instances=exo_view.instances,
        )

    def _render(self, t: float) -> tuple[RenderedView, RenderedView]:
        """Ego and exo views at time t; the wearer's own body is left out of the ego view."""
        layout = self._layout
        ego_pose = self._ego_pose(t)
        solids = [self._target(t), *layout.objects[1:], layout.table]
        ego = render(self.ego_camera, ego_pose, layout.room, solids, layout.light)
        exo_solids = [*solids, *self._wearer_solids(ego_pose)]
        exo = render(self.exo_camera, layout.exo_pose, layout.room, exo_solids, layout.light)
        return ego, exo

    def _target_promptable(self) -> bool:
        """Whether frame 0 shows enough of the target in both views to give it as a prompt."""
        ego, exo = self._render(0.0)
        return all(
            np.mean(view.instances == TARGET_ID) >= MIN_PROMPT_FRACTION[name]
            for name, view in (("ego", ego), ("exo", exo))
        )

    def _target(self, t: float) -> Solid:
        """The target at time t: sliding around its home, or carried in an arc to the hidden spot."""
        motion = self._layout.target
        dx, dy, yaw = motion.walk(t)
        w = motion.excursion(t)
        lift = np.array([0.0, 0.0, 4.0 * w * (1.0 - w) * CARRY_LIFT_M])  # clears the table's edge
        position = (1.0 - w) * (motion.home + np.array([dx, dy, 0.0])) + w * motion.hidden + lift
        return replace(self._layout.objects[0], position=position.astype(np.float32), yaw=float(yaw))

    def _ego_pose(self, t: float) -> Pose:
        """Head pose: walking along the table, looking near the target unless looking away."""
        wearer = self._layout.wearer
        azimuth_offset, distance = wearer.walk(t)
        azimuth = wearer.base_azimuth + azimuth_offset
        bob = 0.02 * np.sin(2.0 * np.pi * 1.8 * t)
        eye = np.array([distance * np.cos(azimuth), distance * np.sin(azimuth), wearer.head_height + bob])
        gaze = self._target(t).position + wearer.gaze(t) - eye
        # Looking away turns the head about the vertical axis and levels it, as a person would.
        w = wearer.look_away(t)
        yaw = np.arctan2(gaze[1], gaze[0]) + w * wearer.look_away_turn
        pitch = (1.0 - w) * np.arctan2(gaze[2], np.hypot(gaze[0], gaze[1]))
        direction = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
        return look_at(eye, eye + direction, roll=float(wearer.roll(t)[0]))

    def _wearer_solids(self, ego_pose: Pose) -> tuple[Solid, Solid]:
        """Body and head of the wearer, placed under and just behind the ego camera."""
        wearer = self._layout.wearer
        forward = ego_pose.rotation[:, 2] * np.array([1.0, 1.0, 0.0])
        head_centre = ego_pose.position - 0.1 * forward / (np.linalg.norm(forward) + 1e-9)
        body_centre = np.array([head_centre[0], head_centre[1], wearer.body.position[2]])
        return (
            replace(wearer.body, position=body_centre.astype(np.float32)),
            replace(wearer.head, position=head_centre.astype(np.float32)),
        )


def render_scene(config: SceneConfig = SceneConfig()) -> Iterator[SyntheticFrame]:
    """Stream the frames of the scene described by `config`, one at a time."""
    scene = SyntheticScene(config)
    for index in range(config.num_frames):
        yield scene.frame(index)
