"""The frame cache serves exactly the frames the renderer makes, to clips and frame pairs alike."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lmeec_core.data.clips import ClipConfig, RoomRecipe, SyntheticClips, held_out_scene_seeds, train_scene_seeds
from lmeec_core.data.frame_cache import FrameCache, write_cache
from lmeec_core.data.pairs import SyntheticFramePairs
from lmeec_core.data.synthetic import SceneConfig, SyntheticScene
from lmeec_core.errors import ConfigError

ROOMS, FRAMES, FPS = 2, 4, 3.0


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("cache"), train_scene_seeds(ROOMS), FRAMES, FPS)


def test_cached_frames_are_the_rendered_frames(cache):
    seed = cache.seeds[1]
    rendered = SyntheticScene(SceneConfig(seed=seed, num_frames=FRAMES, fps=FPS)).frame(2)
    cached = cache.room(seed).frame(2)
    for name in ("ego_image", "exo_image", "ego_instances", "exo_instances", "ego_mask", "exo_mask"):
        assert np.array_equal(getattr(cached, name), getattr(rendered, name)), name
    assert cached.stamp_s == rendered.stamp_s
    with pytest.raises(ConfigError, match="frame 4"):
        cache.room(seed).frame(FRAMES)


def test_clips_and_pairs_read_from_the_cache_as_they_render(cache):
    recipe = RoomRecipe(num_scenes=ROOMS, scene_frames=FRAMES, fps=FPS, objects_per_clip=2)
    clip = ClipConfig(image_size=64, num_frames=2, direction="exo2ego")
    rendered, cached = (SyntheticClips(clip, r, 3)[2] for r in (recipe, RoomRecipe(**{**recipe.__dict__,
                                                                                     "cache": str(cache.root)})))
    assert torch.equal(rendered.source_masks, cached.source_masks)
    assert torch.equal(rendered.target_images, cached.target_images)
    pairs = [SyntheticFramePairs(64, r, 2, sample_seed=1)[1]
             for r in (recipe, RoomRecipe(**{**recipe.__dict__, "cache": str(cache.root)}))]
    assert torch.equal(pairs[0].exo_instances, pairs[1].exo_instances)


def test_a_cache_of_another_recipe_or_of_held_out_rooms_is_refused(cache, tmp_path):
    with pytest.raises(ConfigError, match="written with"):
        write_cache(cache.root, train_scene_seeds(ROOMS), FRAMES + 1, FPS)
    with pytest.raises(ConfigError, match="expected at least"):
        SyntheticClips(ClipConfig(num_frames=2), RoomRecipe(scene_frames=FRAMES + 1, fps=FPS, cache=str(cache.root)), 1)
    held_out = write_cache(tmp_path / "held_out", held_out_scene_seeds(1), 2, FPS)
    with pytest.raises(ConfigError, match="held-out"):
        SyntheticClips(ClipConfig(num_frames=2), RoomRecipe(scene_frames=2, fps=FPS, cache=str(held_out.root)), 1)
    with pytest.raises(ConfigError, match="not a frame cache"):
        FrameCache(tmp_path)
