"""The tracker's prompt (mask, box, or points with labels) from a SetTarget request.

Checked here: what the ROS side must refuse before any work is spent on a request (the mask's
encoding, and sizes that would make a prompt cost far more than one inference: SAM 2's prompt
encoder and decoder attend over every point, so 10,000 points took seconds). The tracker then
checks the prompt against the image (exactly one prompt, sizes, box inside the image, labels) and
says what is wrong.
"""
from __future__ import annotations

import numpy as np

from lmeec_core.errors import InputError
from lmeec_ros.image_codec import image_to_mask
from lmeec_ros.srv import SetTarget

MAX_POINTS = 64   # a person clicks a few points; 64 cost about what one point does


def prompt_from_request(request: SetTarget.Request, max_mask_pixels: int) -> dict[str, object]:
    """Keyword arguments for CorrespondenceTracker.set_target; empty fields are not given.

    Raises InputError for a mask above `max_mask_pixels` or more than MAX_POINTS points, before
    decoding anything.
    """
    prompt: dict[str, object] = {}
    if request.mask.width or request.mask.height or len(request.mask.data):
        pixels = request.mask.width * request.mask.height
        if pixels > max_mask_pixels:
            raise InputError(f"mask of {request.mask.width}x{request.mask.height} ({pixels} px) exceeds "
                             f"max_image_pixels={max_mask_pixels}; expected a mask of the camera's image size")
        prompt["mask"] = image_to_mask(request.mask)
    if len(request.box):
        prompt["box"] = tuple(float(v) for v in request.box)
    if request.points:
        if len(request.points) > MAX_POINTS or len(request.labels) > MAX_POINTS:
            raise InputError(f"{len(request.points)} points and {len(request.labels)} labels given; expected "
                             f"at most {MAX_POINTS} of each (a few clicks, or a mask for larger regions)")
        prompt["points"] = np.array([[p.x, p.y] for p in request.points], np.float64)
        prompt["labels"] = (np.array(request.labels, np.int64) if len(request.labels)
                            else np.ones(len(request.points), np.int64))
    return prompt


def describe_prompt(prompt: dict[str, object]) -> str:
    """A few words on the prompt, for the service answer and the log."""
    if "mask" in prompt:
        return f"mask of {int(np.count_nonzero(prompt['mask']))} px"
    if "box" in prompt:
        return "box [" + ", ".join(f"{v:g}" for v in prompt["box"]) + "]"
    return f"{len(prompt['points'])} points"
