"""rosbag2 I/O with rosbags: exact pixels both storages, jittered stamps, record order, decoding, the
instance-id topics and the object catalogue."""
from __future__ import annotations

import numpy as np
import pytest

from lmeec_core.data.bags import (
    EGO_IMAGE_TOPIC,
    EGO_INSTANCES_TOPIC,
    EGO_MASK_TOPIC,
    EXO_IMAGE_TOPIC,
    EXO_INSTANCES_TOPIC,
    EXO_MASK_TOPIC,
    TYPESTORE,
    CameraTiming,
    decode_image,
    read_bag_images,
    read_scene_objects,
    write_scene_bag,
)
from lmeec_core.data.synthetic import SceneConfig, object_catalogue, render_scene
from lmeec_core.errors import InputError

CONFIG = SceneConfig(seed=9, num_frames=6, ego_size=(48, 64), exo_size=(40, 56))
TIMING = CameraTiming()
TOPICS = (EGO_IMAGE_TOPIC, EGO_MASK_TOPIC, EGO_INSTANCES_TOPIC, EXO_IMAGE_TOPIC, EXO_MASK_TOPIC, EXO_INSTANCES_TOPIC)


@pytest.fixture(scope="module")
def frames():
    return list(render_scene(CONFIG))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_is_exact(tmp_path, frames, storage):
    bag = write_scene_bag(tmp_path / "scene", frames, storage=storage)
    messages = list(read_bag_images(bag))
    assert len(messages) == len(TOPICS) * len(frames)
    by_topic = {topic: [m for m in messages if m.topic == topic] for topic in TOPICS}
    for topic, field, scale in (
        (EGO_IMAGE_TOPIC, "ego_image", 1),
        (EXO_IMAGE_TOPIC, "exo_image", 1),
        (EGO_MASK_TOPIC, "ego_mask", 255),
        (EXO_MASK_TOPIC, "exo_mask", 255),
        (EGO_INSTANCES_TOPIC, "ego_instances", 1),
        (EXO_INSTANCES_TOPIC, "exo_instances", 1),
    ):
        assert len(by_topic[topic]) == len(frames)
        for message, frame in zip(by_topic[topic], frames):
            np.testing.assert_array_equal(message.image, getattr(frame, field).astype(np.uint8) * scale)


def test_stamps_are_jittered_per_camera_and_masks_share_them(tmp_path, frames):
    bag = write_scene_bag(tmp_path / "scene", frames)
    stamps = {topic: [m.stamp_ns for m in read_bag_images(bag, [topic])] for topic in TOPICS}
    assert stamps[EGO_IMAGE_TOPIC] == stamps[EGO_MASK_TOPIC] == stamps[EGO_INSTANCES_TOPIC]
    assert stamps[EXO_IMAGE_TOPIC] == stamps[EXO_MASK_TOPIC] == stamps[EXO_INSTANCES_TOPIC]
    nominal = np.array([TIMING.start_ns + round(f.stamp_s * 1e9) for f in frames])
    ego = np.array(stamps[EGO_IMAGE_TOPIC]) - nominal
    exo = np.array(stamps[EXO_IMAGE_TOPIC]) - nominal
    jitter_ns = TIMING.jitter_s * 1e9
    assert np.all(np.abs(ego) <= jitter_ns)
    assert np.all(np.abs(exo - TIMING.exo_offset_s * 1e9) <= jitter_ns)
    assert len(set(stamps[EGO_IMAGE_TOPIC]) & set(stamps[EXO_IMAGE_TOPIC])) == 0  # exact pairing fails
    assert len(set(ego.tolist())) == len(frames)  # jittered, not a constant offset
    assert np.all(np.abs(ego - exo) < 0.05e9)  # approximate pairing within 50 ms works


def test_messages_come_in_record_order_after_their_stamps(tmp_path, frames):
    from rosbags.rosbag2 import Reader

    bag = write_scene_bag(tmp_path / "scene", frames, timing=CameraTiming(jitter_s=0.03, exo_offset_s=-0.02))
    with Reader(bag) as reader:
        records = [(t, TYPESTORE.deserialize_cdr(raw, c.msgtype).header.stamp) for c, t, raw in reader.messages()]
    record_ns = [t for t, _ in records]
    assert record_ns == sorted(record_ns)
    lo, hi = (round(d * 1e9) for d in TIMING.delay_s)
    for t, stamp in records:
        assert lo <= t - (stamp.sec * 10**9 + stamp.nanosec) <= hi


def test_instance_images_name_every_object_of_the_catalogue_and_the_target_mask_is_its_first(tmp_path, frames):
    objects = object_catalogue(CONFIG)
    bag = write_scene_bag(tmp_path / "scene", frames, objects=objects)
    assert read_scene_objects(bag) == objects
    assert read_scene_objects(write_scene_bag(tmp_path / "plain", frames)) == {}  # a bag written without one
    assert [name for name, o in objects.items() if o["on_table"]] == ["target", "lookalike_1", "lookalike_2",
                                                                       "object_3", "object_4"]
    masks = read_bag_images(bag, [EGO_MASK_TOPIC])
    for instances, mask in zip(read_bag_images(bag, [EGO_INSTANCES_TOPIC]), masks, strict=True):
        np.testing.assert_array_equal(instances.image == objects["target"]["instance"], mask.image == 255)
    instances = read_bag_images(bag, [EGO_INSTANCES_TOPIC, EXO_INSTANCES_TOPIC])
    seen = {int(i) for m in instances for i in np.unique(m.image)}
    assert {o["instance"] for o in objects.values()} & seen - {objects["target"]["instance"]}  # other objects too


def test_read_refusals(tmp_path, frames):
    bag = write_scene_bag(tmp_path / "scene", frames[:1])
    with pytest.raises(InputError, match="already exists"):
        write_scene_bag(bag, frames[:1])
    with pytest.raises(InputError, match="'/ego/image_rect'.*found"):
        list(read_bag_images(bag, ["/ego/image_rect"]))
    with pytest.raises(InputError, match="does not exist"):
        list(read_bag_images(tmp_path / "missing"))
    with pytest.raises(InputError, match="storage"):
        write_scene_bag(tmp_path / "other", frames[:1], storage="rosbag1")


def _image_message(pixels: np.ndarray, encoding: str, step: int):
    """A sensor_msgs/Image whose rows are padded to `step` bytes with garbage."""
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    padded = np.full((height, step), 77, np.uint8)
    padded[:, : rows.shape[1]] = rows
    Image = TYPESTORE.types["sensor_msgs/msg/Image"]
    Header = TYPESTORE.types["std_msgs/msg/Header"]
    Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
    return Image(Header(Time(0, 0), "cam"), height, width, encoding, 0, step, padded.reshape(-1))


@pytest.mark.parametrize(
    "encoding, to_wire",
    [
        ("rgb8", lambda rgb: rgb),
        ("bgr8", lambda rgb: rgb[..., ::-1]),
        ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)])),
        ("bgra8", lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 9, np.uint8)])),
    ],
)
def test_decode_honours_encoding_and_step(encoding, to_wire):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    wire = to_wire(rgb)
    message = _image_message(wire, encoding, step=wire.shape[1] * wire.shape[2] + 5)
    np.testing.assert_array_equal(decode_image(message), rgb)


def test_decode_mono8_and_refusals():
    mono = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(decode_image(_image_message(mono, "mono8", step=6)), mono)
    with pytest.raises(InputError, match="encoding '16UC1'"):
        decode_image(_image_message(mono, "16UC1", step=6))
    short = _image_message(mono, "mono8", step=6)
    short.step = 3
    with pytest.raises(InputError, match="step >= 4"):
        decode_image(short)
