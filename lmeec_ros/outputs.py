"""What the node publishes for every result, and the messages it is made of.

Target-view outputs carry the target image's header, so a consumer can match them with that image
(or its camera_info) exactly; ~/source_mask is in the source camera's pixels and carries the source
image's header. ~/detections exists only where vision_msgs is installed.
"""
from __future__ import annotations

import numpy as np
from rclpy.lifecycle import LifecycleNode
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Header

from lmeec_core.tracker import Correspondence as Result
from lmeec_ros.image_codec import mask_to_image, rgb_to_image
from lmeec_ros.msg import Correspondence

try:
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
except ImportError:  # not on PyPI; ~/detections is then not offered
    Detection2DArray = None

# Reliable is compatible with both reliable and best-effort subscribers; keep-last bounds the
# buffer, so a slow subscriber loses old results rather than delaying new ones.
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
OVERLAY_COLOUR = np.array([255, 0, 255], np.uint8)


def bbox_to_roi(bbox: tuple[int, int, int, int] | None) -> RegionOfInterest:
    """RegionOfInterest of an inclusive (x_min, y_min, x_max, y_max) box; all zero for None."""
    if bbox is None:
        return RegionOfInterest()
    x0, y0, x1, y1 = bbox
    return RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0 + 1, height=y1 - y0 + 1)


def correspondence_msg(result: Result, target_id: int, target_header: Header, source_header: Header,
                       mask: Image) -> Correspondence:
    return Correspondence(
        header=target_header, source_view=result.source_view, target_view=result.target_view,
        target_id=target_id, source_stamp=source_header.stamp, bbox=bbox_to_roi(result.bbox),
        score=float(result.score), visible=bool(result.visible), mask=mask)


def detections_msg(result: Result, target_id: int, header: Header) -> "Detection2DArray":
    """One detection (the target) when it is visible, none otherwise."""
    array = Detection2DArray(header=header)
    if result.visible and result.bbox is not None:
        roi = bbox_to_roi(result.bbox)
        detection = Detection2D(header=header, id=str(target_id))
        detection.bbox.center.position.x = roi.x_offset + roi.width / 2.0
        detection.bbox.center.position.y = roi.y_offset + roi.height / 2.0
        detection.bbox.size_x = float(roi.width)
        detection.bbox.size_y = float(roi.height)
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = f"target_{target_id}"
        hypothesis.hypothesis.score = float(result.score)
        detection.results.append(hypothesis)
        array.detections.append(detection)
    return array


def draw_overlay(rgb: np.ndarray, mask: np.ndarray, bbox: tuple[int, int, int, int] | None) -> np.ndarray:
    """The image with the mask tinted and the box outlined, for people watching in rviz."""
    out = rgb.copy()
    out[mask] = (out[mask] // 2 + OVERLAY_COLOUR // 2).astype(np.uint8)
    if bbox is not None:
        x0, y0, x1, y1 = bbox
        out[[y0, y1], x0:x1 + 1] = OVERLAY_COLOUR
        out[y0:y1 + 1, [x0, x1]] = OVERLAY_COLOUR
    return out


class OutputPublishers:
    """The node's result publishers, alive between configure and cleanup (active only when active)."""

    def __init__(self, node: LifecycleNode, publish_overlay: bool) -> None:
        self._node = node
        self.mask = node.create_lifecycle_publisher(Image, "~/mask", OUTPUT_QOS)
        self.correspondence = node.create_lifecycle_publisher(Correspondence, "~/correspondence", OUTPUT_QOS)
        self.source_mask = node.create_lifecycle_publisher(Image, "~/source_mask", OUTPUT_QOS)
        self.detections = (node.create_lifecycle_publisher(Detection2DArray, "~/detections", OUTPUT_QOS)
                           if Detection2DArray is not None else None)
        self.overlay = node.create_lifecycle_publisher(Image, "~/overlay", OUTPUT_QOS) if publish_overlay else None

    def publish(self, result: Result, target_id: int, target_header: Header, source_header: Header,
                target_rgb: np.ndarray) -> None:
        mask = mask_to_image(result.mask, target_header)
        self.mask.publish(mask)
        self.correspondence.publish(correspondence_msg(result, target_id, target_header, source_header, mask))
        self.source_mask.publish(mask_to_image(result.source_mask, source_header))
        if self.detections is not None:
            self.detections.publish(detections_msg(result, target_id, target_header))
        if self.overlay is not None:
            self.overlay.publish(rgb_to_image(draw_overlay(target_rgb, result.mask, result.bbox), target_header))

    def destroy(self) -> None:
        for publisher in (self.mask, self.correspondence, self.source_mask, self.detections, self.overlay):
            if publisher is not None:
                self._node.destroy_lifecycle_publisher(publisher)
