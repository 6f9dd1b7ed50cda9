"""sensor_msgs/Image <-> numpy without cv_bridge: encodings, row padding, byte order, masks, outputs."""
import numpy as np
import pytest

from ros_helpers import require_ros

require_ros()

from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from lmeec_core.errors import InputError  # noqa: E402
from lmeec_core.tracker import Correspondence as Result  # noqa: E402
from lmeec_ros.image_codec import (compressed_to_rgb, image_to_mask, image_to_rgb,  # noqa: E402
                                   mask_to_image, rgb_to_image)
from lmeec_ros.outputs import bbox_to_roi, draw_overlay  # noqa: E402

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def message(pixels: np.ndarray, encoding: str, padding: int = 0, bigendian: bool = False) -> Image:
    """An Image written row by row, `padding` junk bytes at the end of each row."""
    h, w = pixels.shape[:2]
    raw = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<")).reshape(h, -1).view(np.uint8)
    rows = np.concatenate([raw, np.full((h, padding), 0xAB, np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=encoding, step=rows.shape[1], is_bigendian=int(bigendian))
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize("encoding, pixels", [
    ("rgb8", RGB),
    ("bgr8", RGB[:, :, ::-1]),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)])),
    ("bgra8", np.dstack([RGB[:, :, ::-1], np.full(RGB.shape[:2], 9, np.uint8)])),
])
@pytest.mark.parametrize("padding", [0, 3])
def test_colour_encodings_decode_to_rgb(encoding, pixels, padding):
    out = image_to_rgb(message(np.ascontiguousarray(pixels), encoding, padding))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, RGB)


def test_mono8_is_replicated_to_three_channels():
    gray = RGB[:, :, 0]
    out = image_to_rgb(message(gray[:, :, None], "mono8", padding=1))
    np.testing.assert_array_equal(out, np.dstack([gray] * 3))


@pytest.mark.parametrize("bigendian", [False, True])
def test_16_bit_encodings_honour_byte_order(bigendian):
    wide = RGB.astype(np.uint16) * 257   # 0xABAB for 0xAB, so the high byte is the 8-bit value
    wide[0, 0] = [0x1234, 0x5678, 0x9ABC]
    out = image_to_rgb(message(wide, "rgb16", padding=2, bigendian=bigendian))
    assert out[0, 0].tolist() == [0x12, 0x56, 0x9A]
    np.testing.assert_array_equal(out[1:], RGB[1:])


@pytest.mark.parametrize("mutate, words", [
    (lambda m: setattr(m, "encoding", "32FC1"), "unsupported image encoding '32FC1'"),
    (lambda m: setattr(m, "step", 10), "step 10"),
    (lambda m: setattr(m, "data", bytes(m.data)[:-1]), "needs"),
    (lambda m: setattr(m, "width", 0), "empty"),
])
def test_malformed_images_are_refused_with_the_reason(mutate, words):
    msg = message(RGB, "rgb8")
    mutate(msg)
    with pytest.raises(InputError, match=words):
        image_to_rgb(msg)


def test_masks_are_mono8_nonzero_and_other_encodings_are_refused():
    raw = np.zeros((4, 6), np.uint8)
    raw[1:3, 2:5] = 7
    np.testing.assert_array_equal(image_to_mask(message(raw[:, :, None], "mono8", padding=2)), raw != 0)
    with pytest.raises(InputError, match="mask encoding 'rgb8'"):
        image_to_mask(message(RGB, "rgb8"))


def test_outgoing_images_carry_bytes_the_header_and_no_padding():
    header = Header(frame_id="cam")
    header.stamp.sec = 12
    mask = np.zeros((3, 4), bool)
    mask[1, 2] = True
    msg = mask_to_image(mask, header)
    assert (msg.encoding, msg.width, msg.height, msg.step) == ("mono8", 4, 3, 4)
    assert msg.header.frame_id == "cam" and msg.header.stamp.sec == 12
    assert np.frombuffer(msg.data, np.uint8).reshape(3, 4).tolist() == (mask * 255).tolist()
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(RGB, header)), RGB)


def test_compressed_images_decode_to_rgb():
    cv2 = pytest.importorskip("cv2")
    ok, png = cv2.imencode(".png", np.ascontiguousarray(RGB[:, :, ::-1]))
    assert ok
    msg = CompressedImage(format="png")
    msg.data = png.tobytes()
    np.testing.assert_array_equal(compressed_to_rgb(msg), RGB)
    msg.data = b"not an image"
    with pytest.raises(InputError, match="cannot decode"):
        compressed_to_rgb(msg)


def test_inclusive_boxes_become_regions_of_interest():
    roi = bbox_to_roi((2, 3, 5, 9))
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height) == (2, 3, 4, 7)
    assert (bbox_to_roi(None).width, bbox_to_roi(None).height) == (0, 0)


def test_overlay_tints_each_targets_mask_and_outlines_its_box_in_its_colour():
    rgb = np.zeros((6, 8, 3), np.uint8)
    results = []
    for target_id, cols in ((1, slice(1, 3)), (2, slice(5, 7))):
        mask = np.zeros((6, 8), bool)
        mask[2:4, cols] = True
        box = (cols.start, 2, cols.stop - 1, 3)
        results.append(Result(1, "ego", "exo", mask, box, 0.9, True, mask, target_id=target_id))
    out = draw_overlay(rgb, results)
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[2, 1].tolist() != [0, 0, 0] and out[2, 5].tolist() != [0, 0, 0]
    assert out[2, 1].tolist() != out[2, 5].tolist()   # one colour per target
    assert rgb.sum() == 0   # the input is left alone
