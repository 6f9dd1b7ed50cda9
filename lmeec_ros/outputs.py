"""What the node publishes for the results of one frame pair, and the messages it is made of.

Per target: one ~/correspondence (its box, score, visibility and own 0/255 mask). Per camera that
is some target's target view: one ~/mask label image (pixel = target id, 0 = none), one
~/detections (one Detection2D per visible target) and, if asked, one ~/overlay, each with that
camera's image header; per camera that is some target's source view, one ~/source_mask label image.
Where masks overlap in a label image, the pixel takes the target with the higher score on this
pair (ties: the lower id); each target's full mask stays in its ~/correspondence.
~/detections exists only where vision_msgs is installed.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from rclpy.lifecycle import LifecycleNode
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Header

from lmeec_core.tracker import Correspondence as Result
from lmeec_ros.image_codec import labels_to_image, mask_to_image, rgb_to_image
from lmeec_ros.msg import Correspondence

try:
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
except ImportError:  # not on PyPI; ~/detections is then not offered
    Detection2DArray = None

# Reliable is compatible with both reliable and best-effort subscribers; keep-last bounds the
# buffer, so a slow subscriber loses old results rather than delaying new ones. ~/correspondence
# keeps this many pairs' worth: one message per target per pair.
OUTPUT_DEPTH = 5
OUTPUT_QOS = QoSProfile(depth=OUTPUT_DEPTH, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
MAX_LABEL = int(np.iinfo(np.uint16).max)   # the largest target id a mono16 label image holds
# Overlay colours, by target id (cycled): distinct hues that read on camera images.
OVERLAY_COLOURS = np.array([[255, 0, 255], [0, 255, 255], [255, 255, 0], [255, 128, 0],
                            [0, 255, 0], [64, 128, 255], [255, 0, 0], [255, 255, 255]], np.uint8)
Headers = Callable[[str], Header]   # camera -> the header of its image of the pair


def bbox_to_roi(bbox: tuple[int, int, int, int] | None) -> RegionOfInterest:
    """RegionOfInterest of an inclusive (x_min, y_min, x_max, y_max) box; all zero for None."""
    if bbox is None:
        return RegionOfInterest()
    x0, y0, x1, y1 = bbox
    return RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0 + 1, height=y1 - y0 + 1)


def correspondence_msg(result: Result, target_header: Header, source_header: Header) -> Correspondence:
    return Correspondence(
        header=target_header, source_view=result.source_view, target_view=result.target_view,
        target_id=result.target_id, source_stamp=source_header.stamp, bbox=bbox_to_roi(result.bbox),
        score=float(result.score), visible=bool(result.visible), mask=mask_to_image(result.mask, target_header))


def label_mask(masks: Sequence[tuple[Result, np.ndarray]], shape: tuple[int, int]) -> np.ndarray:
    """uint16 [H, W]: each pixel the id of the target whose mask covers it, 0 where none does.

    `masks` pairs each result with its mask in one camera. Where masks overlap, the target with the
    higher score wins, ties going to the lower id: painted in increasing order of that priority.
    """
    labels = np.zeros(shape, np.uint16)
    for result, mask in sorted(masks, key=lambda pair: (pair[0].score, -pair[0].target_id)):
        labels[mask] = result.target_id
    return labels


def detections_msg(results: Sequence[Result], header: Header) -> "Detection2DArray":
    """One detection per visible target, with its id; an empty array when none is visible."""
    array = Detection2DArray(header=header)
    for result in results:
        if not result.visible or result.bbox is None:
            continue
        roi = bbox_to_roi(result.bbox)
        detection = Detection2D(header=header, id=str(result.target_id))
        detection.bbox.center.position.x = roi.x_offset + roi.width / 2.0
        detection.bbox.center.position.y = roi.y_offset + roi.height / 2.0
        detection.bbox.size_x = float(roi.width)
        detection.bbox.size_y = float(roi.height)
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = f"target_{result.target_id}"
        hypothesis.hypothesis.score = float(result.score)
        detection.results.append(hypothesis)
        array.detections.append(detection)
    return array


def draw_overlay(rgb: np.ndarray, results: Sequence[Result]) -> np.ndarray:
    """The image with each target's mask tinted and box outlined in its colour, for people in rviz."""
    out = rgb.copy()
    for result in results:
        colour = OVERLAY_COLOURS[(result.target_id - 1) % len(OVERLAY_COLOURS)]
        out[result.mask] = (out[result.mask] // 2 + colour // 2).astype(np.uint8)
        if result.bbox is not None:
            x0, y0, x1, y1 = result.bbox
            out[[y0, y1], x0:x1 + 1] = colour
            out[y0:y1 + 1, [x0, x1]] = colour
    return out


def by_camera(results: Sequence[Result], view_of: Callable[[Result], str]) -> dict[str, list[Result]]:
    """`results` grouped by the camera `view_of` names, in id order within each camera."""
    grouped: dict[str, list[Result]] = {}
    for result in sorted(results, key=lambda r: r.target_id):
        grouped.setdefault(view_of(result), []).append(result)
    return grouped


class OutputPublishers:
    """The node's result publishers, alive between configure and cleanup (active only when active)."""

    def __init__(self, node: LifecycleNode, publish_overlay: bool, max_targets: int) -> None:
        self._node = node
        correspondence_qos = QoSProfile(depth=OUTPUT_DEPTH * max_targets, reliability=OUTPUT_QOS.reliability,
                                        durability=OUTPUT_QOS.durability)
        self.correspondence = node.create_lifecycle_publisher(Correspondence, "~/correspondence", correspondence_qos)
        self.mask = node.create_lifecycle_publisher(Image, "~/mask", OUTPUT_QOS)
        self.source_mask = node.create_lifecycle_publisher(Image, "~/source_mask", OUTPUT_QOS)
        self.detections = (node.create_lifecycle_publisher(Detection2DArray, "~/detections", OUTPUT_QOS)
                           if Detection2DArray is not None else None)
        self.overlay = node.create_lifecycle_publisher(Image, "~/overlay", OUTPUT_QOS) if publish_overlay else None

    def publish_correspondence(self, result: Result, headers: Headers) -> None:
        self.correspondence.publish(correspondence_msg(result, headers(result.target_view),
                                                       headers(result.source_view)))

    def publish_pair(self, results: Sequence[Result], headers: Headers, images: dict[str, np.ndarray]) -> None:
        """Every output of one frame pair: `results` holds one result per target followed."""
        for result in sorted(results, key=lambda r: r.target_id):
            self.publish_correspondence(result, headers)
        for view, group in by_camera(results, lambda r: r.target_view).items():
            header = headers(view)
            self.mask.publish(labels_to_image(label_mask([(r, r.mask) for r in group], images[view].shape[:2]),
                                              header))
            if self.detections is not None:
                self.detections.publish(detections_msg(group, header))
            if self.overlay is not None:
                self.overlay.publish(rgb_to_image(draw_overlay(images[view], group), header))
        for view, group in by_camera(results, lambda r: r.source_view).items():
            labels = label_mask([(r, r.source_mask) for r in group], images[view].shape[:2])
            self.source_mask.publish(labels_to_image(labels, headers(view)))

    def destroy(self) -> None:
        for publisher in (self.mask, self.correspondence, self.source_mask, self.detections, self.overlay):
            if publisher is not None:
                self._node.destroy_lifecycle_publisher(publisher)
