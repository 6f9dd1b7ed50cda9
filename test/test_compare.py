"""`lmeec compare`: paired bootstrap of two evaluations on the same sequences."""
from __future__ import annotations

import json

import pytest

from lmeec_core.cli import main
from lmeec_core.compare import compare
from lmeec_core.data.synthetic import SceneConfig, render_scene
from lmeec_core.data.takes import write_take
from lmeec_core.errors import InputError


def summary(rows, protocol="official"):
    """An `lmeec evaluate` summary whose totals are the frame-weighted means of `rows`."""
    sequences = [{"sequence": f"take{i}/a/b", "iou": iou, "ca": iou, "le": 1 - iou, "ba": 0.5, "n_frames": n,
                  "n_frames_with_gt": n} for i, (iou, n) in enumerate(rows)]
    frames = sum(n for _, n in rows)
    iou = sum(v * n for v, n in rows) / frames
    return {"direction": "ego2exo", "protocol": protocol, "sequences": sequences,
            "total": {"iou": iou, "ca": iou, "le": 1 - iou, "ba": 0.5}}


def test_delta_is_the_difference_of_the_frame_weighted_totals():
    base = summary([(0.2, 10), (0.5, 30), (0.0, 0)])
    other = summary([(0.4, 10), (0.5, 30), (0.0, 0)])
    result = compare(base, other, resamples=2000)["metrics"]
    assert result["iou"]["delta"] == pytest.approx(0.2 * 10 / 40)
    assert (result["iou"]["wins"], result["iou"]["losses"]) == (1, 0)
    assert result["le"]["delta"] == pytest.approx(-0.05) and result["le"]["wins"] == 1  # lower LE is the win


def test_a_consistent_gain_is_better_and_a_mixed_one_is_not():
    scenes = [(0.1 * k, 20) for k in range(1, 9)]
    consistent = compare(summary(scenes), summary([(v + 0.03, n) for v, n in scenes]))["metrics"]
    assert consistent["iou"]["better"] and not consistent["iou"]["worse"]
    assert consistent["le"]["better"]  # LE fell everywhere
    mixed = compare(summary(scenes), summary([(v + (0.3 if k % 2 else -0.28), n)
                                             for k, (v, n) in enumerate(scenes)]))["metrics"]["iou"]
    assert mixed["ci"][0] < 0 < mixed["ci"][1] and not mixed["better"] and not mixed["worse"]
    reverse = compare(summary([(v + 0.03, n) for v, n in scenes]), summary(scenes))["metrics"]["iou"]
    assert reverse["worse"] and not reverse["better"]


def test_unpaired_or_mismatched_evaluations_are_refused():
    base = summary([(0.2, 10), (0.5, 30)])
    with pytest.raises(InputError, match="different sequences"):
        compare(base, summary([(0.2, 10)]))
    with pytest.raises(InputError, match="protocol"):
        compare(base, summary([(0.2, 10), (0.5, 30)], protocol="robot"))


def test_cli_compares_two_evaluate_outputs(tmp_path, capsys):
    takes = tmp_path / "takes"
    for seed in (31, 32):
        write_take(takes, f"take{seed}", render_scene(SceneConfig(seed=seed, num_frames=5, ego_size=(64, 64),
                                                                  exo_size=(72, 96))), image_format="png")
    for name in ("a", "b"):
        assert main(["evaluate", str(takes), "--out", str(tmp_path / name), "--baseline", "copy-box",
                     "--no-plots"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b" / "metrics.json"), "--resamples", "500"]) == 0
    iou = json.loads(capsys.readouterr().out)["metrics"]["iou"]
    assert iou["delta"] == 0 and iou["ci"] == [0, 0] and not iou["better"] and not iou["worse"]
    assert main(["compare", str(tmp_path / "a"), str(takes)]) != 0
    assert "no metrics.json; expected an `lmeec evaluate --out` folder" in capsys.readouterr().err
