"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge (absent from PyPI-only ROS).

Decoding honours `step` (row padding) and, for 16-bit encodings, `is_bigendian`. Encoding always
assigns `bytes` to `msg.data`: rclpy copies an ndarray or memoryview element by element, which costs
hundreds of milliseconds per 1080p frame.
"""
from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np
from PIL.JpegImagePlugin import JpegImageFile
from PIL.PngImagePlugin import PngImageFile
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from lmeec_core.errors import InputError


class _Layout(NamedTuple):
    channels: int
    bytes_per_channel: int
    rgb: tuple[int, int, int]   # channel indices that give R, G, B (gray is read three times)


_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(3, 1, (0, 1, 2)),
    "bgr8": _Layout(3, 1, (2, 1, 0)),
    "rgba8": _Layout(4, 1, (0, 1, 2)),
    "bgra8": _Layout(4, 1, (2, 1, 0)),
    "mono8": _Layout(1, 1, (0, 0, 0)),
    "8UC1": _Layout(1, 1, (0, 0, 0)),
    "rgb16": _Layout(3, 2, (0, 1, 2)),
    "bgr16": _Layout(3, 2, (2, 1, 0)),
    "rgba16": _Layout(4, 2, (0, 1, 2)),
    "bgra16": _Layout(4, 2, (2, 1, 0)),
    "mono16": _Layout(1, 2, (0, 0, 0)),
    "16UC1": _Layout(1, 2, (0, 0, 0)),
}
SUPPORTED_ENCODINGS = tuple(_LAYOUTS)
MASK_ENCODINGS = ("mono8", "8UC1")
_HEADER_READERS = (PngImageFile, JpegImageFile)   # the formats of compressed images (image_transport)


def _pixels(msg: Image) -> tuple[np.ndarray, _Layout]:
    """The image as [H, W, C] uint8/uint16 (a view of msg.data when possible), and its layout."""
    layout = _LAYOUTS.get(msg.encoding)
    if layout is None:
        raise InputError(f"unsupported image encoding {msg.encoding!r}; expected one of "
                         f"{', '.join(SUPPORTED_ENCODINGS)}")
    h, w = msg.height, msg.width
    row_bytes = w * layout.channels * layout.bytes_per_channel
    if h == 0 or w == 0:
        raise InputError(f"empty {msg.encoding} image ({w}x{h})")
    if msg.step < row_bytes:
        raise InputError(f"{msg.encoding} image {w}x{h} has step {msg.step}, "
                         f"expected at least {row_bytes} bytes per row")
    data = np.frombuffer(msg.data, np.uint8)
    if data.size < msg.step * h:
        raise InputError(f"{msg.encoding} image {w}x{h} with step {msg.step} needs "
                         f"{msg.step * h} bytes, got {data.size}")
    rows = data[: msg.step * h].reshape(h, msg.step)[:, :row_bytes]
    if layout.bytes_per_channel == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        rows = np.ascontiguousarray(rows).view(dtype)
    return rows.reshape(h, w, layout.channels), layout


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    return pixels if pixels.dtype == np.uint8 else (pixels >> 8).astype(np.uint8)


def image_to_rgb(msg: Image) -> np.ndarray:
    """uint8 [H, W, 3] RGB from any supported encoding (gray is replicated, alpha dropped)."""
    pixels, layout = _pixels(msg)
    return np.ascontiguousarray(_to_uint8(pixels[:, :, list(layout.rgb)]))


def image_to_mask(msg: Image) -> np.ndarray:
    """bool [H, W] (nonzero = object) from a mono8 mask image."""
    if msg.encoding not in MASK_ENCODINGS:
        raise InputError(f"mask encoding {msg.encoding!r} is not supported; expected mono8 "
                         "(nonzero = object)")
    pixels, _ = _pixels(msg)
    return pixels[:, :, 0] != 0


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """uint8 [H, W, 3] RGB from a JPEG/PNG CompressedImage (needs OpenCV)."""
    cv2 = import_cv2()
    image = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"cannot decode compressed image (format {msg.format!r}, "
                         f"{len(msg.data)} bytes); expected JPEG or PNG")
    return np.ascontiguousarray(image[:, :, ::-1])


def image_size(msg: Image | CompressedImage) -> tuple[int, int] | None:
    """(width, height) without decoding: a raw image's header fields, or what a JPEG/PNG's own
    header announces; None when a compressed image has no JPEG/PNG header (decoding will say why).

    The header is read by Pillow's JPEG and PNG readers themselves, which stop there: `PIL.Image.open`
    would also apply Pillow's decompression-bomb guard and raise on an image announcing more than
    about 179 M pixels, where the caller wants the size to refuse the image with.
    """
    if isinstance(msg, Image):
        return msg.width, msg.height
    for reader in _HEADER_READERS:
        try:
            return reader(io.BytesIO(msg.data)).size
        except (OSError, SyntaxError, ValueError):   # not this format (Pillow raises SyntaxError)
            continue
    return None


def import_cv2():
    """OpenCV, or an InputError that says how to get it (only compressed input needs it)."""
    try:
        import cv2
    except ImportError as exc:
        raise InputError("compressed images need OpenCV: pip install opencv-python-headless "
                         "(or apt install python3-opencv)") from exc
    return cv2


def mask_to_image(mask: np.ndarray, header: Header) -> Image:
    """mono8 Image, 255 where `mask` is true, 0 elsewhere."""
    pixels = np.where(mask, np.uint8(255), np.uint8(0))
    return pixels_to_image(pixels, header, "mono8")


def rgb_to_image(rgb: np.ndarray, header: Header) -> Image:
    """rgb8 Image from uint8 [H, W, 3]."""
    return pixels_to_image(rgb, header, "rgb8")


def pixels_to_image(pixels: np.ndarray, header: Header, encoding: str) -> Image:
    """Image of `encoding` (rgb8, bgr8, rgba8, bgra8 or mono8) from uint8 [H, W(, C)], unpadded."""
    layout = _LAYOUTS[encoding]
    if pixels.dtype != np.uint8 or layout.bytes_per_channel != 1:
        raise InputError(f"cannot write {pixels.dtype} pixels as {encoding}")
    h, w = pixels.shape[:2]
    msg = Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                step=w * layout.channels)
    msg.data = np.ascontiguousarray(pixels).tobytes()
    return msg
