"""Pictures people would rather see than numbers: overlays, side-by-side videos, contact sheets."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .preprocess import BBox

TARGET_COLOUR = (255, 64, 32)  # found mask and box
PROMPT_COLOUR = (32, 200, 255)  # the mask the target was given or tracked with
GT_COLOUR = (64, 255, 64)  # ground-truth outline


def _outline(mask: np.ndarray) -> np.ndarray:
    """One-pixel inner boundary of a mask."""
    inner = mask.copy()
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return mask & ~inner


def overlay(image: np.ndarray, mask: np.ndarray | None, colour: tuple[int, int, int] = TARGET_COLOUR,
            bbox: BBox | None = None, gt: np.ndarray | None = None, label: str | None = None) -> np.ndarray:
    """RGB image with a translucent mask, its box, an optional GT outline and a caption."""
    out = image.astype(np.float32)
    if mask is not None and mask.any():
        out[mask] = 0.5 * out[mask] + 0.5 * np.array(colour, np.float32)
    if gt is not None:
        out[_outline(gt)] = GT_COLOUR
    picture = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    if bbox is not None:
        draw.rectangle(bbox, outline=colour, width=2)
    if label:
        draw.rectangle((0, 0, 7 * len(label) + 6, 14), fill=(0, 0, 0))
        draw.text((3, 2), label, fill=(255, 255, 255))
    return np.asarray(picture)


def side_by_side(left: np.ndarray, right: np.ndarray, height: int = 360) -> np.ndarray:
    """Two views scaled to one height and placed next to each other."""
    def scaled(image: np.ndarray) -> Image.Image:
        h, w = image.shape[:2]
        return Image.fromarray(image).resize((max(1, round(w * height / h)), height), Image.BILINEAR)
    a, b = scaled(left), scaled(right)
    canvas = Image.new("RGB", (a.width + b.width + 4, height), (0, 0, 0))
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width + 4, 0))
    return np.asarray(canvas)


def write_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: float = 10.0) -> Path:
    """Write RGB frames (all the same size) as an MP4 (mp4v) with OpenCV."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    for frame in frames:
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    if writer is not None:
        writer.release()
    return path


def contact_sheet(frames: Sequence[np.ndarray], path: str | Path, columns: int = 3, width: int = 1200) -> Path:
    """Tile frames into one PNG of the given width."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tile_w = width // columns
    tiles = [Image.fromarray(f).resize((tile_w, round(f.shape[0] * tile_w / f.shape[1])), Image.BILINEAR)
             for f in frames]
    tile_h = max(t.height for t in tiles)
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (tile_w * columns, tile_h * rows), (255, 255, 255))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * tile_w, (i // columns) * tile_h))
    sheet.save(path)
    return path
