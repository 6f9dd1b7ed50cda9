"""Processed-EgoExo4D takes: read real ones, write synthetic ones in the same layout.

Layout (as produced by EgoExo4D's correspondence `process_data.py`, read by LM-EEC)::

    <root>/<take>/annotation.json   {"masks": {object: {camera: {frame: {"size": [H, W],
                                                                           "counts": RLE}}}},
                                     "subsample_idx": [frame, ...]}
    <root>/<take>/<camera>/<frame>.jpg

The ego camera is the one whose name contains "aria" (e.g. `aria01_214-1`), the others are exo
cameras (e.g. `cam01`). Frame names are 30-fps frame indices. Masks are COCO compressed RLE at the
annotation resolution, which may differ from the image resolution (EgoExo4D: 2x for Aria, 4x for
exo). A take's annotation.json is parsed once; images and masks load one frame at a time so that a
take streams without preloading.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from lmeec_core.data.scene_layout import TARGET_ID
from lmeec_core.data.synthetic import SyntheticFrame
from lmeec_core.errors import InputError

ANNOTATION_FILE = "annotation.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
Direction = Literal["ego2exo", "exo2ego"]


def natural_key(name: str) -> tuple:
    """Sort key that orders '30' before '120' (digit runs compare as numbers)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def encode_mask(mask: np.ndarray) -> dict:
    """COCO compressed RLE {"size": [H, W], "counts": str} of a boolean mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_mask(rle: dict) -> np.ndarray:
    """Boolean mask [H, W] of a COCO compressed RLE as stored in annotation.json."""
    counts = rle["counts"]
    counts = counts.encode("ascii") if isinstance(counts, str) else counts
    return mask_utils.decode({"size": list(rle["size"]), "counts": counts}).astype(bool)


@dataclass
class Take:
    """One processed take: its cameras, objects, frames, images and masks."""

    path: Path
    masks: dict  # annotation.json["masks"]
    subsample_idx: list[int]
    _frame_names: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def cameras(self) -> list[str]:
        """Camera folders of the take, naturally sorted."""
        return sorted((p.name for p in self.path.iterdir() if p.is_dir()), key=natural_key)

    @property
    def ego_camera(self) -> str:
        """The Aria camera; raises InputError when the take has none."""
        aria = [c for c in self.cameras if "aria" in c.lower()]
        if not aria:
            raise InputError(
                f"take {self.path} has no camera folder whose name contains 'aria'; found {self.cameras}"
            )
        return aria[-1]  # the official tool keeps the last one listed; real takes have one

    @property
    def exo_cameras(self) -> list[str]:
        return [c for c in self.cameras if "aria" not in c.lower()]

    @property
    def objects(self) -> list[str]:
        return sorted(self.masks, key=natural_key)

    def annotated_exo_cameras(self, obj: str) -> list[str]:
        """Exo cameras with image folders and annotations of `obj`: the pairs LM-EEC evaluates."""
        return [c for c in self.exo_cameras if c in self._object(obj)]

    def frame_names(self, camera: str) -> list[str]:
        """Names (file stems) of the camera's images, naturally sorted; listed once per camera."""
        if camera not in self._frame_names:
            folder = self._camera_dir(camera)
            names = (p.stem for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            self._frame_names[camera] = sorted(names, key=natural_key)
        return self._frame_names[camera]

    def annotated_frames(self, obj: str, camera: str) -> list[str]:
        """Frames with an annotation (possibly empty) of `obj` in `camera`, naturally sorted."""
        return sorted(self._object(obj).get(camera, {}), key=natural_key)

    def frames(self, obj: str, exo_camera: str, direction: Direction) -> list[str]:
        """Frames LM-EEC evaluates for `obj` between the Aria camera and `exo_camera`.

        The target view's annotated frames that also have a source image (official rule):
        ego2exo = exo-annotated frames with an Aria image; exo2ego = Aria-annotated frames with
        an image of `exo_camera`. Empty when the target camera has no annotation of `obj`.
        """
        if direction == "ego2exo":
            target, source = exo_camera, self.ego_camera
        elif direction == "exo2ego":
            target, source = self.ego_camera, exo_camera
        else:
            raise InputError(f"direction {direction!r} is not supported; expected 'ego2exo' or 'exo2ego'")
        available = set(self.frame_names(source))
        return [f for f in self.annotated_frames(obj, target) if f in available]

    def image_path(self, camera: str, frame: str) -> Path:
        folder = self._camera_dir(camera)
        for suffix in IMAGE_SUFFIXES:
            path = folder / f"{frame}{suffix}"
            if path.is_file():
                return path
        raise InputError(f"no image of frame {frame!r} in {folder}; expected {frame}.jpg or {frame}.png")

    def load_image(self, camera: str, frame: str) -> np.ndarray:
        """RGB uint8 [H, W, 3] image of `camera` at `frame`."""
        path = self.image_path(camera, frame)
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
        except OSError as error:
            raise InputError(f"cannot read image {path}: {error}; expected a JPEG or PNG file") from error

    def has_mask(self, obj: str, camera: str, frame: str) -> bool:
        return frame in self._object(obj).get(camera, {})

    def annotation_shape(self, obj: str, camera: str) -> tuple[int, int]:
        """(H, W) of the annotations of `obj` in `camera` (EgoExo4D: the camera's full resolution)."""
        annotations = self._object(obj).get(camera, {})
        if not annotations:
            raise InputError(f"take {self.name} has no annotation of {obj!r} in camera {camera!r}; "
                             f"expected one of {sorted(self._object(obj))}")
        height, width = next(iter(annotations.values()))["size"]
        return int(height), int(width)

    def load_mask(self, obj: str, camera: str, frame: str) -> np.ndarray:
        """Boolean mask [H, W] of `obj` in `camera` at `frame`, at the annotation resolution."""
        annotations = self._object(obj).get(camera, {})
        if frame not in annotations:
            raise InputError(
                f"take {self.name} has no annotation of {obj!r} in camera {camera!r} at frame {frame!r}; "
                f"expected one of {self.annotated_frames(obj, camera)[:10]}..."
            )
        return decode_mask(annotations[frame])

    def _object(self, obj: str) -> dict:
        if obj not in self.masks:
            raise InputError(f"take {self.name} has no object {obj!r}; expected one of {self.objects}")
        return self.masks[obj]

    def _camera_dir(self, camera: str) -> Path:
        folder = self.path / camera
        if not folder.is_dir():
            raise InputError(
                f"take {self.name} has no camera folder {camera!r}; expected one of {self.cameras}"
            )
        return folder


def open_take(path: str | Path) -> Take:
    """Open a take folder, parsing its annotation.json once."""
    path = Path(path)
    annotation_path = path / ANNOTATION_FILE
    if not annotation_path.is_file():
        raise InputError(f"{path} is not a processed take: expected the file {annotation_path}")
    try:
        annotation = json.loads(annotation_path.read_text())
        masks = annotation["masks"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(
            f"{annotation_path} is not a processed annotation ({error!r}); expected a JSON object with "
            '"masks": {object: {camera: {frame: {"size": [H, W], "counts": str}}}}'
        ) from error
    return Take(path, masks, [int(i) for i in annotation.get("subsample_idx", [])])


def list_takes(root: str | Path) -> list[str]:
    """Names of the take folders (those holding an annotation.json) under `root`, naturally sorted."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"take root {root} is not a directory; expected a folder of take folders")
    return sorted((p.name for p in root.iterdir() if (p / ANNOTATION_FILE).is_file()), key=natural_key)


def write_take(
    root: str | Path,
    take: str,
    frames: Iterable[SyntheticFrame],
    *,
    object_name: str = "target",
    objects: Mapping[str, int] | None = None,
    ego_camera: str = "aria01_214-1",
    exo_camera: str = "cam01",
    image_format: Literal["jpg", "png"] = "jpg",
    jpeg_quality: int = 95,
    frame_step: int = 30,
    mask_scale: int = 1,
) -> Path:
    """Write synthetic frames as a processed take and return its folder.

    Frame i is named i * frame_step (EgoExo4D names frames by their 30-fps index and keeps one per
    second). Every frame gets an annotation in both cameras, empty when the target is not visible,
    since the official tool looks up the source annotation on every target-annotated frame.
    `mask_scale` > 1 stores masks at that multiple of the image size, as EgoExo4D does.
    `objects` (name -> instance id, see `object_names`) annotates those objects; by default the
    target alone, as `object_name`.
    """
    if image_format not in ("jpg", "png"):
        raise InputError(f"image_format {image_format!r} is not supported; expected 'jpg' or 'png'")
    if mask_scale < 1:
        raise InputError(f"mask_scale={mask_scale}; expected an integer >= 1")
    folder = Path(root) / take
    for camera in (ego_camera, exo_camera):
        (folder / camera).mkdir(parents=True, exist_ok=True)
    options = {"quality": jpeg_quality} if image_format == "jpg" else {}
    objects = objects or {object_name: TARGET_ID}
    masks: dict[str, dict[str, dict]] = {obj: {ego_camera: {}, exo_camera: {}} for obj in objects}
    names = []
    for frame in frames:
        name = str(frame.index * frame_step)
        names.append(int(name))
        for camera, image in ((ego_camera, frame.ego_image), (exo_camera, frame.exo_image)):
            Image.fromarray(image).save(folder / camera / f"{name}.{image_format}", **options)
        for obj, instance in objects.items():
            shown = frame.of_object(instance)
            for camera, mask in ((ego_camera, shown.ego_mask), (exo_camera, shown.exo_mask)):
                masks[obj][camera][name] = encode_mask(mask.repeat(mask_scale, axis=0).repeat(mask_scale, axis=1))
    annotation = {"masks": masks, "subsample_idx": names}
    (folder / ANNOTATION_FILE).write_text(json.dumps(annotation))
    return folder
