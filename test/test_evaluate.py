"""`lmeec evaluate` on synthetic takes: formats, protocols, baselines and the metric wiring."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmeec_core.cli import main
from lmeec_core.data.synthetic import SceneConfig, SyntheticScene, render_scene
from lmeec_core.data.takes import decode_mask, write_take
from lmeec_core.errors import InputError
from lmeec_core.evaluate import CopySourceBox, Prediction, TrackerPredictor, evaluate, prompt_from_mask, sequences
from lmeec_core.model import load_checkpoint
from lmeec_core.tracker import CorrespondenceTracker

SHIPPED = Path(__file__).resolve().parents[1] / "lmeec_core" / "assets" / "nano.pt"


@pytest.fixture(scope="module")
def takes(tmp_path_factory):
    root = tmp_path_factory.mktemp("takes")
    for seed in (21, 22):
        write_take(root, f"take{seed}", render_scene(SceneConfig(seed=seed, num_frames=6, ego_size=(64, 64),
                                                                 exo_size=(72, 96))), image_format="png", mask_scale=2)
    return root


class Oracle:
    """Returns the target GT mask: the evaluation must then report IoU 1 on every frame."""

    def __init__(self, seq):
        self.seq, self.frames = seq, iter(f for f in seq.frames if seq.take.load_mask(seq.obj, seq.source, f).any())

    def predict(self, source_image, target_image, source_mask, first):
        gt = self.seq.take.load_mask(self.seq.obj, self.seq.target, next(self.frames))
        return Prediction(gt[::2, ::2])


def test_an_oracle_scores_perfectly_and_outputs_follow_the_challenge_format(takes, tmp_path):
    summary = evaluate(takes, Oracle, tmp_path, direction="ego2exo", protocol="official", gt_resize="nearest")
    total = summary["total"]
    assert total["n_frames"] > 0 and total["iou"] == pytest.approx(1.0, abs=1e-6) and total["le"] == 0.0
    predictions = json.loads((tmp_path / "predictions.json").read_text())["ego-exo"]["results"]
    assert set(predictions) == {"take21", "take22"}
    frame_entries = predictions["take21"]["masks"]["target"]["aria01_214-1_cam01"]
    entry = next(iter(frame_entries.values()))
    assert entry["confidence"] == int(decode_mask(entry["pred_mask"]).sum() > 0.001 * 72 * 96)
    assert decode_mask(entry["pred_mask"]).shape == (72, 96)
    assert json.loads((tmp_path / "metrics.json").read_text())["sequences"][0]["sequence"].startswith("take21/")
    assert len(list(tmp_path.glob("iou_*.png"))) == 2
    assert (tmp_path / "per_sequence.csv").read_text().startswith("sequence,iou,ca,le,ba")


def test_score_size_scores_and_stores_square_masks_like_the_lmeec_scripts(takes, tmp_path):
    summary = evaluate(takes, Oracle, tmp_path, protocol="official", plots=False, score_size=50, gt_resize="nearest")
    assert summary["score_size"] == 50 and summary["total"]["iou"] == pytest.approx(1.0, abs=1e-6)
    frames = json.loads((tmp_path / "predictions.json").read_text())["ego-exo"]["results"]["take21"]["masks"]
    entry = next(iter(frames["target"]["aria01_214-1_cam01"].values()))
    assert decode_mask(entry["pred_mask"]).shape == (50, 50)
    with pytest.raises(InputError, match="score size 0"):
        evaluate(takes, Oracle, tmp_path, score_size=0)


def test_sequences_follow_the_direction(takes):
    ego2exo = next(sequences(takes, "ego2exo"))
    exo2ego = next(sequences(takes, "exo2ego"))
    assert (ego2exo.source, ego2exo.target) == ("aria01_214-1", "cam01")
    assert (exo2ego.source, exo2ego.target) == ("cam01", "aria01_214-1")


def test_copy_box_baseline_maps_the_box_in_normalised_coordinates():
    source = np.zeros((10, 20), bool)
    source[2:4, 5:10] = True
    prediction = CopySourceBox().predict(None, np.zeros((20, 40, 3), np.uint8), source, first=True)
    expected = np.zeros((20, 40), bool)
    expected[4:8, 10:20] = True
    assert prediction.logits is None and np.array_equal(prediction.mask, expected)


def test_cli_runs_the_model_in_both_protocols(takes, tmp_path, capsys):
    for protocol in ("official", "robot"):
        out = tmp_path / protocol
        assert main(["evaluate", str(takes), "--out", str(out), "--protocol", protocol, "--no-plots",
                     "--direction", "exo2ego"]) == 0
        assert set(json.loads(capsys.readouterr().out)) >= {"iou", "ca", "le", "ba", "n_frames"}
        written = json.loads((out / "predictions.json").read_text())
        assert written["exo-ego"] == written["ego-exo"]  # the challenge's key, and the one compute_metrics reads


def test_bad_protocol_is_refused(takes, tmp_path):
    with pytest.raises(InputError, match="protocol"):
        evaluate(takes, Oracle, tmp_path, protocol="oracle")
    with pytest.raises(InputError, match="prompt 'box' with the official protocol"):
        evaluate(takes, Oracle, tmp_path, protocol="official", prompt="box")


def test_prompts_from_a_mask_are_its_box_and_a_click_inside_it_near_its_centre():
    ring = np.zeros((40, 40), bool)
    ring[10:30, 10:30] = True
    ring[14:26, 14:26] = False   # centroid (19.5, 19.5) is in the hole
    assert prompt_from_mask(ring, "mask")["mask"] is ring
    assert prompt_from_mask(ring, "box") == {"box": (10, 10, 29, 29)}
    click = prompt_from_mask(ring, "click")
    (x, y), = click["points"]
    assert click["labels"] == [1] and ring[y, x] and np.hypot(x - 19.5, y - 19.5) < 6.6  # the hole is 6 px wide


def test_a_box_that_selects_nothing_finds_nothing_and_is_given_again_on_the_next_frame(nano_model):
    frames = [SyntheticScene(SceneConfig(seed=21, num_frames=2, ego_size=(64, 64), exo_size=(72, 96))).frame(i)
              for i in range(2)]
    predictor = TrackerPredictor(CorrespondenceTracker(nano_model), "ego", "robot", prompt="box")
    for i, frame in enumerate(frames):   # random weights: the box segments to nothing
        prediction = predictor.predict(frame.ego_image, frame.exo_image, frame.ego_mask, first=i == 0)
        assert prediction.mask.shape == frame.exo_mask.shape and not prediction.mask.any()
        assert not predictor.tracker.has_target
    shipped = TrackerPredictor(CorrespondenceTracker(load_checkpoint(SHIPPED)[0]), "ego", "robot", prompt="box")
    prediction = shipped.predict(frames[1].ego_image, frames[1].exo_image, frames[1].ego_mask, first=False)
    assert shipped.tracker.has_target and prediction.mask.any()   # a trained model takes it on its first try
    assert prediction.logits is not None


def test_cli_records_the_robot_protocol_prompt(takes, tmp_path, capsys):
    out = tmp_path / "box"
    assert main(["evaluate", str(takes), "--out", str(out), "--protocol", "robot", "--prompt", "box", "--no-plots",
                 "--checkpoint", str(SHIPPED)]) == 0
    capsys.readouterr()
    summary = json.loads((out / "metrics.json").read_text())
    assert (summary["protocol"], summary["prompt"]) == ("robot", "box") and summary["total"]["n_frames"] > 0


def test_cli_gives_the_chosen_prompt_to_the_tracker(takes, tmp_path, capsys):
    """Random weights segment a box to nothing, so no target is ever set and every frame gets an (empty)
    answer; a mask prompt sets the target, whose source-view tracking then loses it and (`--source-lost
    skip`) skips frames: the frames answered tell which prompt reached the tracker."""
    def answered(prompt: str) -> int:
        out = tmp_path / prompt
        assert main(["evaluate", str(takes), "--out", str(out), "--protocol", "robot", "--prompt", prompt,
                     "--source-lost", "skip", "--no-plots"]) == 0
        return json.loads((out / "metrics.json").read_text())["total"]["n_frames"]

    frames_with_source = sum(len(seq.frames) for seq in sequences(takes, "ego2exo"))
    assert answered("box") == frames_with_source
    assert answered("mask") < frames_with_source
    capsys.readouterr()
    assert main(["evaluate", str(takes), "--out", str(tmp_path / "b"), "--baseline", "copy-box",
                 "--prompt", "box"]) == 2
    assert "the baseline takes the GT mask" in capsys.readouterr().err


def test_evaluate_bag_command_scores_a_synthetic_bag(tmp_path, capsys):
    from lmeec_core.data.bags import write_scene_bag

    bag = write_scene_bag(tmp_path / "scene.mcap", render_scene(SceneConfig(seed=5, num_frames=5, ego_size=(64, 64),
                                                                              exo_size=(72, 96))))
    out = tmp_path / "figures.json"
    assert main(["evaluate-bag", str(bag), "--protocol", "benchmark", "--out", str(out)]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures == json.loads(out.read_text())
    assert figures["target_view"] == "exo" and figures["pairs"] == 5
    assert figures["metrics"]["n_frames"] >= 1
