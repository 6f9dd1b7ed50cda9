"""Processed-EgoExo4D takes: synthetic round trip, the official frame-list rule, real-format masks."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import PARITY_FIXTURE, needs_shared
from PIL import Image

from lmeec_core.data.synthetic import SceneConfig, render_scene
from lmeec_core.data.takes import list_takes, natural_key, open_take, write_take
from lmeec_core.errors import InputError

CONFIG = SceneConfig(seed=4, num_frames=5, ego_size=(64, 64), exo_size=(48, 64))
NAMES = ["0", "30", "60", "90", "120"]  # frame i is named i * 30; "120" sorts last only naturally


@pytest.fixture(scope="module")
def frames():
    return list(render_scene(CONFIG))


def test_jpeg_round_trip(tmp_path, frames):
    write_take(tmp_path, "take_a", frames)
    take = open_take(tmp_path / "take_a")
    assert take.ego_camera == "aria01_214-1" and take.exo_cameras == ["cam01"]
    assert take.objects == ["target"] and take.annotated_exo_cameras("target") == ["cam01"]
    assert take.subsample_idx == [int(n) for n in NAMES]
    for frame, name in zip(frames, NAMES):
        for view, camera in (("ego", "aria01_214-1"), ("exo", "cam01")):
            image = take.load_image(camera, name)
            expected = getattr(frame, f"{view}_image")
            assert image.shape == expected.shape and image.dtype == np.uint8
            mse = np.mean((image.astype(float) - expected) ** 2)
            assert 10 * np.log10(255**2 / mse) > 28  # JPEG quality 95 of small, noisy, textured frames
            np.testing.assert_array_equal(take.load_mask("target", camera, name), getattr(frame, f"{view}_mask"))


def test_png_round_trip_is_exact_and_masks_can_be_upscaled(tmp_path, frames):
    write_take(tmp_path, "take_b", frames, image_format="png", mask_scale=2)
    take = open_take(tmp_path / "take_b")
    frame = frames[2]
    np.testing.assert_array_equal(take.load_image("cam01", "60"), frame.exo_image)
    mask = take.load_mask("target", "cam01", "60")
    assert mask.shape == (96, 128)
    np.testing.assert_array_equal(mask[::2, ::2], frame.exo_mask)


def test_frame_lists_follow_the_official_rule(tmp_path, frames):
    folder = write_take(tmp_path, "take_c", frames)
    annotation = json.loads((folder / "annotation.json").read_text())
    del annotation["masks"]["target"]["cam01"]["30"]  # exo annotation missing at 30
    (folder / "aria01_214-1" / "90.jpg").unlink()  # Aria image missing at 90
    (folder / "cam01" / "0.jpg").unlink()  # exo image missing at 0
    (folder / "annotation.json").write_text(json.dumps(annotation))
    take = open_take(folder)
    # ego2exo: exo-annotated frames that have an Aria image; exo2ego: Aria-annotated with an exo image.
    assert take.frames("target", "cam01", "ego2exo") == ["0", "60", "120"]
    assert take.frames("target", "cam01", "exo2ego") == ["30", "60", "90", "120"]
    with pytest.raises(InputError, match="ego2exo"):
        take.frames("target", "cam01", "sideways")


def test_list_takes_and_refusals(tmp_path, frames):
    write_take(tmp_path, "take_10", frames[:1])
    write_take(tmp_path, "take_9", frames[:1])
    (tmp_path / "not_a_take").mkdir()
    assert list_takes(tmp_path) == ["take_9", "take_10"]
    with pytest.raises(InputError, match="annotation.json"):
        open_take(tmp_path / "not_a_take")
    (tmp_path / "not_a_take" / "annotation.json").write_text("{}")
    with pytest.raises(InputError, match='"masks"'):
        open_take(tmp_path / "not_a_take")
    take = open_take(tmp_path / "take_9")
    with pytest.raises(InputError, match="no object 'mug'.*target"):
        take.load_mask("mug", "cam01", "0")
    with pytest.raises(InputError, match="at frame '30'"):
        take.load_mask("target", "cam01", "30")
    with pytest.raises(InputError, match="frame '30'"):
        take.load_image("cam01", "30")
    with pytest.raises(InputError, match="camera folder 'cam02'"):
        take.load_image("cam02", "0")
    with pytest.raises(InputError, match="jpg"):
        write_take(tmp_path, "take_x", frames[:1], image_format="bmp")


def test_natural_sort():
    assert sorted(["120", "30", "0", "cam10", "cam9"], key=natural_key) == ["0", "30", "120", "cam9", "cam10"]


@needs_shared(PARITY_FIXTURE)
def test_reads_the_official_processed_format(tmp_path):
    """The parity fixture's annotation.json comes from the official pipeline: PNG frames, 2x masks."""
    take_dir = tmp_path / "fixture_take"
    shutil.copytree(PARITY_FIXTURE / "frames", take_dir)
    shutil.copy(PARITY_FIXTURE / "annotation.json", take_dir)
    take = open_take(take_dir)
    meta = json.loads((PARITY_FIXTURE / "meta.json").read_text())
    assert take.ego_camera == meta["source_cam"] and take.exo_cameras == [meta["target_cam"]]
    assert take.frames(meta["object_name"], meta["target_cam"], "ego2exo") == meta["frame_names"]
    for camera in (meta["source_cam"], meta["target_cam"]):
        expected = np.asarray(Image.open(PARITY_FIXTURE / "masks" / camera / "90.png")) > 0
        np.testing.assert_array_equal(take.load_mask(meta["object_name"], camera, "90"), expected)
        image = take.load_image(camera, "90")
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def test_several_objects_of_a_room_are_annotated_by_name(tmp_path, frames):
    from lmeec_core.data.synthetic import object_names

    names = object_names(CONFIG, table_only=True)
    assert list(names) == ["target", "lookalike_1", "lookalike_2", "object_3", "object_4"]
    take = open_take(write_take(tmp_path, "room", frames, image_format="png", objects=names))
    assert sorted(take.objects) == sorted(names)
    for name, instance in names.items():
        for camera, view in ((take.ego_camera, "ego"), ("cam01", "exo")):
            np.testing.assert_array_equal(take.load_mask(name, camera, "60"),
                                          getattr(frames[2].of_object(instance), f"{view}_mask"))
