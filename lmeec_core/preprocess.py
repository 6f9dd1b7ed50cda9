"""Checks and conversions between camera arrays and model tensors.

Every check raises `InputError` naming what was wrong and what was expected. Conversions follow the
official LM-EEC loader exactly (Pillow bicubic resize to the square model input, /255 in float64,
ImageNet normalisation; masks resized with antialiased bilinear and thresholded at 0.5), so that
the same pixels give the same numbers as the official code.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BBox = tuple[int, int, int, int]


def check_image(image: object, name: str) -> np.ndarray:
    """An RGB uint8 [H, W, 3] array, or InputError. Gray, RGBA and float images are refused with a hint."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{name} image is a {type(image).__name__}; expected a numpy uint8 array [H, W, 3] (RGB)")
    if image.ndim == 2:
        raise InputError(f"{name} image is single-channel {image.shape}; expected RGB [H, W, 3] "
                         "(repeat a gray image over 3 channels)")
    if image.ndim != 3 or image.shape[2] not in (3,):
        hint = " (drop the alpha channel: image[..., :3])" if image.ndim == 3 and image.shape[2] == 4 else ""
        raise InputError(f"{name} image has shape {image.shape}; expected RGB [H, W, 3]{hint}")
    if image.dtype != np.uint8:
        raise InputError(f"{name} image has dtype {image.dtype}; expected uint8 RGB (0-255)")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise InputError(f"{name} image is {image.shape[1]}x{image.shape[0]} pixels; expected at least 8x8")
    return image


def check_mask(mask: object, shape: tuple[int, int], name: str, allow_empty: bool) -> np.ndarray:
    """A boolean mask of its image's size, or an integer multiple of it, or InputError.

    Multiples are accepted because annotations are often kept at the camera's full resolution while
    frames are stored downscaled (EgoExo4D: 2x for Aria, 4x for exo); such a mask is resized
    straight to the model input, as the official code does.
    """
    if not isinstance(mask, np.ndarray):
        raise InputError(f"{name} is a {type(mask).__name__}; expected a numpy array [H, W]")
    if mask.ndim != 2:
        raise InputError(f"{name} has shape {mask.shape}; expected a single-channel mask [H, W]")
    scale = mask.shape[0] // shape[0]
    if scale < 1 or mask.shape != (scale * shape[0], scale * shape[1]):
        raise InputError(f"{name} is {mask.shape[1]}x{mask.shape[0]}; expected the size of its image, "
                         f"{shape[1]}x{shape[0]} (or an integer multiple of it)")
    if mask.dtype.kind == "f" and not np.isfinite(mask).all():
        raise InputError(f"{name} contains NaN or infinite values; expected 0/1, 0/255 or bool")
    binary = mask > 0
    if not allow_empty and not binary.any():
        raise InputError(f"{name} is empty; expected at least one foreground pixel")
    if binary.all():
        raise InputError(f"{name} covers the whole image; expected the mask of one object")
    return binary


def check_box(box: object, shape: tuple[int, int]) -> np.ndarray:
    """A finite (x_min, y_min, x_max, y_max) box overlapping the image, clipped to it."""
    arr = np.asarray(box, dtype=np.float64).reshape(-1)
    if arr.shape != (4,) or not np.isfinite(arr).all():
        raise InputError(f"box {box!r} is not 4 finite numbers; expected (x_min, y_min, x_max, y_max) in pixels")
    x0, y0, x1, y1 = arr
    h, w = shape
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"box {arr.tolist()} has x_max <= x_min or y_max <= y_min; expected a non-empty box")
    if x1 < 0 or y1 < 0 or x0 > w - 1 or y0 > h - 1:
        raise InputError(f"box {arr.tolist()} lies outside the {w}x{h} image; expected it to overlap the image")
    return np.clip(arr, 0, [w - 1, h - 1, w - 1, h - 1])


def check_points(points: object, labels: object, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """[N, 2] finite (x, y) points inside the image and [N] labels in {0, 1} with a positive one."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0 or not np.isfinite(pts).all():
        raise InputError(f"points of shape {pts.shape} are not N finite (x, y) pairs; expected [N, 2] pixels")
    h, w = shape
    if (pts < 0).any() or (pts[:, 0] > w - 1).any() or (pts[:, 1] > h - 1).any():
        raise InputError(f"a point lies outside the {w}x{h} image; expected 0 <= x < {w}, 0 <= y < {h}")
    lab = np.ones(len(pts), dtype=np.int64) if labels is None else np.asarray(labels).reshape(-1)
    if lab.shape != (len(pts),) or not np.isin(lab, (0, 1)).all():
        raise InputError(f"labels {lab.tolist()} do not match the {len(pts)} points; expected one 0/1 label each")
    if not (lab == 1).any():
        raise InputError("all point labels are 0 (background); expected at least one positive (1) point")
    return pts, lab.astype(np.int64)


def image_to_tensor(image: np.ndarray, size: int, device: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """Normalised [1, 3, S, S] model input, and the resized uint8 image it came from."""
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
    scaled = torch.from_numpy(resized / 255.0).permute(2, 0, 1).float()
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return ((scaled - mean) / std)[None].to(device), resized


def mask_to_tensor(mask: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """Binary [1, 1, S, S] float mask at the model input size (antialiased bilinear, >= 0.5)."""
    tensor = torch.from_numpy(mask.astype(np.float32))[None, None].to(device)
    if tensor.shape[-2:] != (size, size):
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        tensor = (tensor >= 0.5).float()
    return tensor


def logits_to_mask(low_res: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsample of [1, 1, h, w] logits to a camera's [H, W], thresholded at 0."""
    up = F.interpolate(low_res.float(), size=shape, mode="bilinear", align_corners=False)
    return (up[0, 0] > 0).cpu().numpy()


def scale_points(points: np.ndarray, shape: tuple[int, int], size: int) -> np.ndarray:
    """Camera pixel coordinates -> model input pixel coordinates."""
    h, w = shape
    return points * np.array([size / w, size / h])


def bbox_of(mask: np.ndarray) -> BBox | None:
    """Inclusive pixel bounding box (x_min, y_min, x_max, y_max) of a mask; None when empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])
