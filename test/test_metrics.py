"""lmeec_core.metrics: small hand-checked cases, and the official EgoExo4D values of the fixture."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lmeec_core import metrics
from lmeec_core.errors import InputError
from lmeec_core.metrics import (
    MetricAccumulator,
    balanced_accuracy,
    contour_accuracy,
    existence_confidence,
    iou,
    location_error,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
METRICS_FIXTURE = SHARED / "fixtures" / "metrics"
DIAG_480 = math.sqrt(480**2 + 480**2)


def square(top: int, left: int, size: int, shape: tuple[int, int] = (480, 480)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[top : top + size, left : left + size] = 1
    return mask


# --- fixture-free -------------------------------------------------------------------------------


def test_identical_masks() -> None:
    m = square(100, 120, 50)
    assert iou(m, m) == 2500 / (2500 + 1e-7)  # the official 1e-7 keeps it just below 1
    assert contour_accuracy(m, m) == 1.0
    assert location_error(m, m) == 0.0


def test_disjoint_masks() -> None:
    g, p = square(0, 0, 10), square(200, 300, 10)
    assert iou(g, p) == 0.0
    assert contour_accuracy(g, p) == 0.0
    assert location_error(g, p) == pytest.approx(math.hypot(300, 200) / DIAG_480, abs=1e-15)


def test_empty_masks() -> None:
    empty, blob = np.zeros((480, 480), bool), square(0, 0, 1)
    assert iou(empty, empty) == 1.0
    assert contour_accuracy(empty, empty) == 1.0
    assert location_error(empty, empty) == 0.0
    assert iou(blob, empty) == 0.0 and iou(empty, blob) == 0.0
    # A boundary on one side only: P=1, R=0 (or the converse) -> F = 0.
    assert contour_accuracy(blob, empty) == 0.0 and contour_accuracy(empty, blob) == 0.0
    # Empty mask -> image centre (240, 240); the pixel (0, 0) is half a diagonal away.
    assert location_error(empty, blob) == pytest.approx(0.5, abs=1e-15)


def test_full_image_has_no_boundary() -> None:
    full, half = np.ones((480, 480), bool), np.zeros((480, 480), bool)
    half[:, :240] = True
    assert contour_accuracy(full, full) == 1.0
    assert contour_accuracy(full, half) == 0.0


def test_contour_tolerance_is_six_pixels_at_480() -> None:
    g = square(100, 100, 100)
    assert contour_accuracy(g, square(100, 106, 100)) == 1.0
    assert contour_accuracy(g, square(100, 107, 100)) < 1.0


@pytest.mark.parametrize("shape", [(480, 480), (37, 23), (3, 40), (1, 1)])
@pytest.mark.parametrize("radius", [0, 1, 2, 6, 7])
def test_disk_dilation_matches_brute_force(shape: tuple[int, int], radius: int) -> None:
    mask = np.random.default_rng(radius).random(shape) < 0.002 * (1 + 200 * (shape[0] < 100))
    expected = np.zeros_like(mask)
    for y, x in zip(*np.nonzero(mask)):
        yy, xx = np.ogrid[: shape[0], : shape[1]]
        expected |= (yy - y) ** 2 + (xx - x) ** 2 <= radius**2
    np.testing.assert_array_equal(metrics._dilate_disk(mask, radius), expected)


def test_location_error_uses_floored_bounding_box_centre() -> None:
    g = np.zeros((480, 480), bool)
    g[0, [0, 1, 2, 3, 9]] = True  # centroid x = 3, box centre x = floor(9 / 2) = 4
    p = np.zeros_like(g)
    p[0, 4] = True
    assert location_error(g, p) == 0.0


def test_location_error_size_and_non_square_empty_centre() -> None:
    empty = np.zeros((4, 8), bool)
    centre = empty.copy()
    centre[2, 4] = True
    # The official code puts an empty mask at (x, y) = (padded rows // 2, padded cols // 2):
    # (6, 8) in the 12x16 padded frame, while the pixel (row 2, col 4) is at (8, 6).
    assert location_error(empty, centre) == math.sqrt(8) / math.sqrt(4**2 + 8**2)
    assert location_error(empty, centre, size=(480, 480)) == math.sqrt(8) / DIAG_480


def test_existence_confidence_threshold() -> None:
    mask = np.zeros((480, 480), np.uint8)
    mask.flat[:230] = 1
    assert existence_confidence(mask) == 0  # 0.1 % of 480*480 = 230.4 pixels
    mask.flat[230] = 1
    assert existence_confidence(mask) == 1


def test_balanced_accuracy() -> None:
    assert balanced_accuracy([1, 0, 1, 0], [1, 1, 1, 0]) == 0.75
    # Only classes present in the GT are averaged (as sklearn does).
    assert balanced_accuracy([1, 1, 1], [1, 0, 0]) == pytest.approx(1 / 3, abs=1e-16)
    assert balanced_accuracy([True, True], [False, False]) == 0.0
    assert balanced_accuracy(np.array([0, 0]), np.array([1, 0])) == 0.5


@pytest.mark.parametrize(
    "args",
    [([1, 0], [1]), ([], []), ([0, 2], [0, 1]), ([0.5, 1.0], [0, 1]), ([[0, 1]], [[0, 1]])],
)
def test_balanced_accuracy_rejects_bad_input(args: tuple[list, list]) -> None:
    with pytest.raises(InputError):
        balanced_accuracy(*args)


@pytest.mark.parametrize("fn", [iou, contour_accuracy, location_error])
def test_shape_mismatch_and_non_2d_raise(fn) -> None:
    with pytest.raises(InputError, match="same shape"):
        fn(np.zeros((480, 480)), np.zeros((480, 640)))
    with pytest.raises(InputError, match="2-D"):
        fn(np.zeros((1, 480, 480)), np.zeros((1, 480, 480)))


def test_bad_masks_raise_elsewhere() -> None:
    with pytest.raises(InputError, match="2-D"):
        existence_confidence(np.zeros(480))
    with pytest.raises(InputError, match="same shape"):
        MetricAccumulator().add(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(InputError, match="dtype"):
        iou(np.full((2, 2), "a"), np.full((2, 2), "a"))


def test_accumulator() -> None:
    acc = MetricAccumulator()
    assert math.isnan(acc.summary()["iou"]) and math.isnan(acc.summary()["ba"])
    blob = square(10, 10, 20)
    empty = np.zeros_like(blob)
    frame = acc.add(blob, blob)
    assert (frame.gt_exists, frame.pred_exists, frame.ca, frame.le) == (True, True, 1.0, 0.0)
    frame = acc.add(empty, blob)  # GT empty: only the balanced accuracy sees it
    assert (frame.gt_exists, frame.pred_exists, frame.iou) == (False, True, None)
    frame = acc.add(blob, empty, confidence=0.9)  # a caller's confidence overrides the mask size
    assert frame.pred_exists and frame.iou == 0.0
    s = acc.summary()
    assert s["n_frames"] == 3 and s["n_frames_with_gt"] == 2
    assert s["iou"] == pytest.approx(400 / (400 + 1e-7) / 2, abs=1e-15)
    assert s["ca"] == 0.5
    assert s["le"] == pytest.approx((0 + math.hypot(720 - 499, 720 - 499) / DIAG_480) / 2)
    assert s["ba"] == 0.5  # GT-absent frame predicted present: recall 0; present frames: 1


# --- official values (fixture in ../shared, CI only) ------------------------------------------

needs_fixture = pytest.mark.skipif(
    not (METRICS_FIXTURE / "cases.npz").is_file(), reason="needs ../shared/fixtures (CI only)"
)


@pytest.fixture(scope="module")
def official() -> tuple[np.ndarray, np.ndarray, dict]:
    cases = np.load(METRICS_FIXTURE / "cases.npz")
    expected = json.loads((METRICS_FIXTURE / "expected.json").read_text())
    return cases["gt"], cases["pred"], expected


@needs_fixture
def test_official_per_case_values(official: tuple[np.ndarray, np.ndarray, dict]) -> None:
    gt, pred, expected = official
    assert len(expected["per_case"]) == len(gt) == len(pred)
    for k, case in enumerate(expected["per_case"]):
        name = case["name"]
        assert iou(gt[k], pred[k]) == pytest.approx(case["iou"], rel=0, abs=1e-12), name
        ca = contour_accuracy(gt[k], pred[k])
        assert ca == pytest.approx(case["contour_accuracy"], rel=0, abs=1e-12), name
        le = location_error(gt[k], pred[k])
        assert le == pytest.approx(case["location_error"], rel=0, abs=1e-12), name
        assert existence_confidence(pred[k]) == case["confidence"], name
        frame = MetricAccumulator().add(gt[k], pred[k])
        assert int(frame.gt_exists) == case["gt_exists"], name
        assert int(frame.pred_exists) == case["pred_exists"], name
        assert frame.gt_exists == case["counted_in_iou_ca_le"], name


@needs_fixture
def test_official_aggregate(official: tuple[np.ndarray, np.ndarray, dict]) -> None:
    gt, pred, expected = official
    acc = MetricAccumulator()
    for g, p in zip(gt, pred):
        acc.add(g, p)
    summary, agg = acc.summary(), expected["aggregate"]
    assert summary["n_frames"] == agg["n_pairs"]
    assert summary["n_frames_with_gt"] == agg["n_pairs_with_gt"]
    for ours, theirs in [
        ("iou", "mean_iou"),
        ("ca", "mean_contour_accuracy"),
        ("le", "mean_location_error"),
        ("ba", "existence_balanced_accuracy"),
    ]:
        assert summary[ours] == pytest.approx(agg[theirs], rel=0, abs=1e-12), ours
    printed = expected["printed_by_compute_metrics"]
    assert summary["ba"] == pytest.approx(printed["TOTAL EXISTENCE BALANCED ACC"], rel=0, abs=1e-12)
    assert summary["iou"] == pytest.approx(printed["TOTAL IOU"], rel=0, abs=1e-12)
    assert summary["le"] == pytest.approx(printed["TOTAL LOCATION SCORE"], rel=0, abs=1e-12)
    assert summary["ca"] == pytest.approx(printed["TOTAL SHAPE ACC"], rel=0, abs=1e-12)
