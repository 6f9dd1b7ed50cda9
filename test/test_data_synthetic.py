"""Synthetic ego/exo scenes: determinism, ground truth, the target leaving and re-entering each view."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from lmeec_core.data.scene_layout import TARGET_ID
from lmeec_core.data.synthetic import MAX_OBJECTS, SceneConfig, SyntheticFrame, SyntheticScene, render_scene
from lmeec_core.errors import ConfigError

SMALL = {"ego_size": (96, 96), "exo_size": (72, 96)}


def _frames_equal(a: SyntheticFrame, b: SyntheticFrame) -> bool:
    return all(
        np.array_equal(getattr(a, name), getattr(b, name))
        for name in ("ego_image", "exo_image", "ego_mask", "exo_mask", "ego_instances", "exo_instances")
    )


def test_same_seed_gives_identical_frames():
    first = SyntheticScene(SceneConfig(seed=5, **SMALL))
    second = SyntheticScene(SceneConfig(seed=5, **SMALL))
    for index in (0, 7, 33):
        assert _frames_equal(first.frame(index), second.frame(index))


def test_different_seeds_give_different_scenes():
    a = SyntheticScene(SceneConfig(seed=5, **SMALL)).frame(0)
    b = SyntheticScene(SceneConfig(seed=6, **SMALL)).frame(0)
    for view in ("ego", "exo"):
        diff = np.abs(getattr(a, f"{view}_image").astype(int) - getattr(b, f"{view}_image").astype(int))
        assert diff.mean() > 20, view  # a different room, not just different noise


def test_stream_matches_random_access_and_is_lazy():
    config = SceneConfig(seed=2, num_frames=4, **SMALL)
    stream = render_scene(config)
    assert inspect.isgenerator(stream)
    frames = list(stream)
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert _frames_equal(frames[3], SyntheticScene(config).frame(3))


def test_frame_shapes_dtypes_and_masks():
    config = SceneConfig(seed=1, num_frames=3, fps=15.0, ego_size=(80, 64), exo_size=(60, 100))
    for frame in render_scene(config):
        assert frame.stamp_s == pytest.approx(frame.index / 15.0)
        assert frame.ego_image.shape == (80, 64, 3) and frame.ego_image.dtype == np.uint8
        assert frame.exo_image.shape == (60, 100, 3) and frame.exo_image.dtype == np.uint8
        for view in ("ego", "exo"):
            mask, instances = getattr(frame, f"{view}_mask"), getattr(frame, f"{view}_instances")
            assert mask.dtype == bool and instances.dtype == np.uint8
            assert mask.shape == instances.shape == getattr(frame, f"{view}_image").shape[:2]
            np.testing.assert_array_equal(mask, instances == TARGET_ID)


@pytest.mark.parametrize("seed", [0, 11, 12345])
def test_target_is_promptable_on_frame_zero(seed):
    frame = SyntheticScene(SceneConfig(seed=seed, **SMALL)).frame(0)
    assert frame.ego_mask.sum() > 0 and frame.exo_mask.sum() > 0
    assert len(np.unique(frame.exo_instances)) >= 4  # room, target and other objects in view


def test_target_leaves_and_reenters_each_view():
    visible = {"ego": [], "exo": []}
    for frame in render_scene(SceneConfig(seed=7, **SMALL)):  # default length: 100 frames, 10 s
        visible["ego"].append(frame.ego_mask.any())
        visible["exo"].append(frame.exo_mask.any())
    for view, flags in visible.items():
        pattern = "".join("#" if v else "." for v in flags)
        assert pattern.startswith("#") and "#." in pattern and ".#" in pattern.lstrip("."), (view, pattern)


@pytest.mark.parametrize("seed", range(4))
def test_the_most_objects_fit(seed):
    frame = SyntheticScene(SceneConfig(seed=seed, num_objects=MAX_OBJECTS, num_distractors=4, **SMALL)).frame(0)
    assert frame.exo_instances.max() <= MAX_OBJECTS + 1  # objects, then the wearer


@pytest.mark.parametrize(
    "changes",
    [
        {"num_frames": 0},
        {"ego_size": (8, 8)},
        {"num_objects": 0},
        {"num_objects": MAX_OBJECTS + 1},
        {"num_objects": 3, "num_distractors": 3},
    ],
)
def test_invalid_config_is_refused(changes):
    with pytest.raises(ConfigError, match="expected"):
        SceneConfig(**changes)
