"""The tracker's prompt (mask, box, or points with labels) from a SetTarget request.

Only the ROS side is checked here (the mask's encoding); the tracker checks the prompt against the
image (exactly one prompt, sizes, box inside the image, labels) and says what is wrong.
"""
from __future__ import annotations

import numpy as np

from lmeec_ros.image_codec import image_to_mask
from lmeec_ros.srv import SetTarget


def prompt_from_request(request: SetTarget.Request) -> dict[str, object]:
    """Keyword arguments for CorrespondenceTracker.set_target; empty fields are not given."""
    prompt: dict[str, object] = {}
    if request.mask.width or request.mask.height or len(request.mask.data):
        prompt["mask"] = image_to_mask(request.mask)
    if len(request.box):
        prompt["box"] = tuple(float(v) for v in request.box)
    if request.points:
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
