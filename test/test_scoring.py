"""The official scorers' rules: sizes, GT resizes, and totals on a take built so that the rules differ.

The take (Ego->Exo, target camera 360x480, its annotations at 720x960) has four frames:

| frame | source | target GT (camera px)      | prediction (camera px)           |
|-------|--------|----------------------------|----------------------------------|
| 0     | object | rows 60-179, cols 120-299  | the GT moved 3 px right          |
| 30    | object | empty (object absent)      | empty                            |
| 60    | object | rows 150-239, cols 240-359 | 3x3 px at the corner (tiny)      |
| 90    | empty  | rows 30-89, cols 30-89     | none: the official protocol skips |

Every expected total below is computed by hand from the rules in lmeec-official.md section 8.3
(compute_metrics.py) and from evaluate_egoexo.py, not with lmeec_core's metrics.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from lmeec_core.data.takes import decode_mask, encode_mask
from lmeec_core.errors import InputError
from lmeec_core.evaluate import evaluate
from lmeec_core.scoring import Scale, challenge_shape, resize_bilinear, resize_nearest

CAMERA = (360, 480)
DIAGONAL_480 = math.sqrt(480 ** 2 + 480 ** 2)  # both official scorers' fixed LE divisor
GT = {"0": (60, 180, 120, 300), "30": None, "60": (150, 240, 240, 360), "90": (30, 90, 30, 90)}
PREDICTED = {"0": (60, 180, 123, 303), "30": None, "60": (0, 3, 0, 3)}


def rect(shape, box, scale=(1.0, 1.0)):
    """A mask of `shape` with the rows/cols box (camera pixels) scaled by `scale`."""
    mask = np.zeros(shape, bool)
    if box is not None:
        r0, r1, c0, c1 = box
        mask[round(r0 * scale[0]):round(r1 * scale[0]), round(c0 * scale[1]):round(c1 * scale[1])] = True
    return mask


class Drawn:
    """A prediction given in camera pixels, drawn exactly at any size (so that no resampling rule enters)."""

    def __init__(self, box):
        self.box = box

    def at(self, shape):
        return rect(shape, self.box, (shape[0] / CAMERA[0], shape[1] / CAMERA[1]))


class Scripted:
    """The official protocol's answers, frame by frame: nothing where the source mask is empty."""

    def __init__(self, seq):
        self.frames = iter(seq.frames)

    def predict(self, source_image, target_image, source_mask, first):
        frame = next(self.frames)
        return Drawn(PREDICTED[frame]) if source_mask.any() else None


@pytest.fixture(scope="module")
def take_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rules")
    take = root / "take"
    masks = {"aria01_214-1": {}, "cam01": {}}
    for cam, size in (("aria01_214-1", (64, 64)), ("cam01", CAMERA)):
        (take / cam).mkdir(parents=True)
        for frame in GT:
            Image.fromarray(np.zeros((*size, 3), np.uint8)).save(take / cam / f"{frame}.png")
    for frame, box in GT.items():
        masks["cam01"][frame] = encode_mask(rect((720, 960), box, (2, 2)))
        masks["aria01_214-1"][frame] = encode_mask(rect((64, 64), None if frame == "90" else (10, 20, 10, 20)))
    (take / "annotation.json").write_text(json.dumps({"masks": {"obj": masks}, "subsample_idx": [0, 30, 60, 90]}))
    return root


def run(root, tmp_path, score_size, **options):
    summary = evaluate(root, Scripted, tmp_path, protocol="official", plots=False, score_size=score_size, **options)
    predictions = json.loads((tmp_path / "predictions.json").read_text())["ego-exo"]["results"]["take"]
    return summary["total"], predictions["masks"]["obj"]["aria01_214-1_cam01"]


def test_lmeec_square_480_totals_are_compute_metrics(take_root, tmp_path):
    """Predicted frames only (90 is skipped); the empty GT of 30 only enters BA; masks 480x480
    (rows x4/3); LE over sqrt(480^2+480^2); confidence = area > 0.1 % of 480^2 (merge_results)."""
    total, written = run(take_root, tmp_path, 480)
    assert sorted(written) == ["0", "30", "60"]
    assert [written[f]["confidence"] for f in ("0", "30", "60")] == [1, 0, 0]
    assert decode_mask(written["0"]["pred_mask"]).shape == (480, 480)
    iou0 = (160 * 177) / (160 * 183 + 1e-7)
    # centres (x, y): frame 0 GT (209, 159) vs prediction (212, 159); frame 60 GT (299, 259) vs (1, 1)
    le = (3 + math.hypot(298, 258)) / DIAGONAL_480
    assert total["iou"] == pytest.approx((iou0 + 0.0) / 2, abs=1e-12)
    assert total["ca"] == pytest.approx((1.0 + 0.0) / 2, abs=1e-12)  # a 3 px shift is within the 6 px tolerance
    assert total["le"] == pytest.approx(le / 2, abs=1e-12)
    assert total["ba"] == pytest.approx((1 / 2 + 1 / 1) / 2, abs=1e-12)  # exists [1, 0, 1], predicted [1, 0, 0]
    assert (total["n_frames"], total["n_frames_with_gt"]) == (3, 2)
    gt = json.loads((tmp_path / "groundtruth.json").read_text())["ego-exo"]["results"]["take"]["masks"]["obj"]
    np.testing.assert_array_equal(decode_mask(gt["aria01_214-1_cam01"]["0"]["pred_mask"]),
                                  rect((480, 480), GT["0"], (4 / 3, 1)))


def test_challenge_totals_are_the_challenge_scorers(take_root, tmp_path):
    """Every source-annotated frame is written (90 empty, confidence 0) and, being annotated in the
    target, scored as showing the object; the empty GT of 30 scores IoU 1, CA 1, LE 0 against the empty
    prediction; masks 360x480 (aspect kept, long side 480)."""
    total, written = run(take_root, tmp_path, "challenge")
    assert sorted(written) == ["0", "30", "60", "90"]
    assert [written[f]["confidence"] for f in ("0", "30", "60", "90")] == [1, 0, 0, 0]
    assert all(decode_mask(e["pred_mask"]).shape == (360, 480) for e in written.values())
    iou0 = (120 * 177) / (120 * 183 + 1e-7)
    # frame 90: the empty prediction sits at the padded frame's centre (600, 540), the GT at (419, 419)
    le = (3 + 0 + math.hypot(298, 193) + math.hypot(181, 121)) / DIAGONAL_480
    assert total["iou"] == pytest.approx((iou0 + 1 + 0 + 0) / 4, abs=1e-12)
    assert total["ca"] == pytest.approx((1 + 1 + 0 + 0) / 4, abs=1e-12)
    assert total["le"] == pytest.approx(le / 4, abs=1e-12)
    assert total["ba"] == pytest.approx(1 / 4, abs=1e-12)  # exists on all four, predicted on one
    gt = json.loads((tmp_path / "groundtruth.json").read_text())["annotations"]["take"]
    assert gt["annotated_frames"]["obj"]["cam01"] == [0, 30, 60, 90]


def test_camera_scale_normalises_the_location_error_as_the_scorers_at_their_scale(take_root, tmp_path):
    """360x480 is the challenge's own scale: LE divides by sqrt(480^2+480^2), not by the 600 px diagonal."""
    total, written = run(take_root, tmp_path, None)
    assert sorted(written) == ["0", "30", "60"]
    assert total["le"] == pytest.approx((3 + math.hypot(298, 193)) / DIAGONAL_480 / 2, abs=1e-12)
    assert total["ba"] == pytest.approx(0.75, abs=1e-12)


def test_challenge_shape_is_reshape_img_nopad():
    assert challenge_shape((2160, 3840)) == (270, 480)
    assert challenge_shape((1408, 1408)) == (480, 480)
    assert challenge_shape((360, 480)) == (360, 480)
    assert challenge_shape((9, 9)) == (479, 479)  # int(9 * (1 / 9 * 480)) truncates 479.99999999999994


def test_nearest_is_opencvs():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for rows, cols, h, w in [(1408, 1408, 480, 480), (2160, 3840, 270, 480), (720, 960, 480, 480), (7, 3, 480, 205),
                             *rng.integers(1, 1500, (40, 4)).tolist()]:
        mask = rng.random((rows, cols)) > 0.5
        expected = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        np.testing.assert_array_equal(resize_nearest(mask, (h, w)), expected)


def test_bilinear_keeps_pixel_aligned_edges_and_rounds_half_to_background():
    mask = rect((720, 960), (60, 180, 120, 300), (2, 2))
    np.testing.assert_array_equal(resize_bilinear(mask, (480, 480)), rect((480, 480), (60, 180, 120, 300), (4 / 3, 1)))
    # Two columns stretched to three: the middle one interpolates to exactly 0.5, which torchvision's
    # round-half-to-even makes background.
    np.testing.assert_array_equal(resize_bilinear(np.array([[True, False]] * 2), (2, 3)), [[True, False, False]] * 2)


def test_bad_scales_are_refused():
    with pytest.raises(InputError, match="score size 'huge'; expected a positive side"):
        Scale.parse("huge")
    with pytest.raises(InputError, match="the challenge scorer resizes GT itself"):
        Scale.parse("challenge", "bilinear")
    with pytest.raises(InputError, match="gt resize 'cubic'"):
        Scale.parse(480, "cubic")
    assert Scale.parse(480) == Scale("square", 480, "bilinear")
