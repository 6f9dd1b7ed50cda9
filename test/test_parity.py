"""Numerical parity with the official LM-EEC code on the shared fixture (CI has ../shared)."""
from __future__ import annotations

import json
from dataclasses import replace
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bank_rules import official_banks
from conftest import PARITY_FIXTURE, needs_shared
from lmeec_core.cli import main
from lmeec_core.data.takes import decode_mask, encode_mask
from lmeec_core.errors import InputError
from lmeec_core.parity import Fixture, run_parity
from lmeec_core.tracker import OFFICIAL, CorrespondenceTracker
from lmeec_core.model import load_checkpoint, load_config_file

pytestmark = needs_shared(PARITY_FIXTURE)


@pytest.fixture(scope="module")
def parity_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("parity") / "pred.npz"
    return run_parity(PARITY_FIXTURE, out), out


def test_every_reference_array_is_within_the_fixture_tolerances(parity_report):
    report, _ = parity_report
    failing = {k: v for k, v in report["checks"].items() if not v["ok"]}
    assert report["ok"] and not failing, failing
    checks = report["checks"]
    assert checks["low_res_logits"]["max_abs_diff"] <= 1e-4 and checks["low_res_logits"]["gated_exact"]
    assert checks["object_score_logit"]["max_abs_diff"] <= 1e-3
    assert checks["mask_image_size"]["agreement"] >= 0.999
    for key in ("F_view", "F_mem", "fused", "tgt_maskmem_features", "bank_tgt_after_first_compression"):
        assert checks[key]["max_abs_diff"] <= 1e-4, key


def test_written_arrays_have_the_reference_names_and_shapes(parity_report):
    _, out = parity_report
    ours, ref = np.load(out), np.load(PARITY_FIXTURE / "outputs.npz")
    assert {k: ref[k].shape for k in ref.files} == {k: ours[k].shape for k in ref.files}


def test_inputs_only_fixture_still_writes_per_frame_arrays(tmp_path):
    inputs = tmp_path / "fixture"
    inputs.mkdir()
    for name in ("model.yaml", "checkpoint.pt", "annotation.json"):
        shutil.copy(PARITY_FIXTURE / name, inputs / name)
    shutil.copytree(PARITY_FIXTURE / "frames", inputs / "frames")
    report = run_parity(inputs, tmp_path / "pred.npz")
    assert "ok" not in report and report["processed"] == 9
    ours, ref = np.load(tmp_path / "pred.npz"), np.load(PARITY_FIXTURE / "outputs.npz")
    np.testing.assert_allclose(ours["low_res_logits"], ref["low_res_logits"], atol=1e-4)
    assert ours["F_view"].shape[0] == len(ours["debug_frame_index"])


def test_exo2ego_direction_swaps_the_roles():
    fixture = Fixture.read(PARITY_FIXTURE, direction="exo2ego")
    assert (fixture.source_cam, fixture.target_cam) == ("cam01", "aria01_214-1")
    with pytest.raises(InputError, match="direction"):
        Fixture.read(PARITY_FIXTURE, direction="sideways")


def test_cli_prints_the_report_and_exits_zero(tmp_path, capsys):
    assert main(["parity", str(PARITY_FIXTURE), "--out", str(tmp_path / "p.npz")]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_streaming_tracker_reproduces_the_reference_at_camera_resolution():
    """Frame by frame through the public step() API, results at the exo camera's own size."""
    fixture = Fixture.read(PARITY_FIXTURE)
    ref = np.load(PARITY_FIXTURE / "outputs.npz")
    model, _ = load_checkpoint(PARITY_FIXTURE / "checkpoint.pt", config=load_config_file(PARITY_FIXTURE / "model.yaml"))
    config = replace(OFFICIAL, pointer_frames=len(fixture.frames))
    tracker = CorrespondenceTracker(model, config)
    results = []
    for frame in fixture.frames:
        ego, exo = fixture.image(fixture.source_cam, frame), fixture.image(fixture.target_cam, frame)
        mask = fixture.source_mask(frame)
        if tracker.has_target:
            results.append(tracker.step(ego, exo, source_mask=mask if mask.any() else np.zeros(ego.shape[:2], bool)))
        else:
            results.append(tracker.set_target("ego", ego, exo, mask=mask))
    processed = [r for r in results if not r.skipped]
    assert [r.frame_index for r in processed] == list(ref["processed_frame_index"])
    for r, logit, low in zip(processed, ref["object_score_logit"], ref["low_res_logits"]):
        assert r.score == pytest.approx(float(torch.sigmoid(torch.tensor(logit))), abs=1e-5)
        assert r.visible == (logit > 0)
        up = F.interpolate(torch.from_numpy(low)[None, None], size=r.mask.shape, mode="bilinear", align_corners=False)
        expected = (up[0, 0] > 0).numpy()
        near_zero = np.abs(up[0, 0].numpy()) < 1e-3
        assert r.mask.shape == exo.shape[:2]
        assert ((r.mask == expected) | near_zero).all()


def gap_fixture(root, blank: str, fill: dict[str, str]):
    """A copy of the shared fixture (inputs only) whose source masks differ: frame `blank` is emptied in
    both cameras, and camera `cam`'s frame 240 gets the mask of frame `fill[cam]`."""
    root.mkdir()
    for name in ("model.yaml", "checkpoint.pt", "frames"):
        (root / name).symlink_to(PARITY_FIXTURE / name)
    annotation = json.loads((PARITY_FIXTURE / "annotation.json").read_text())
    for cam, frames in annotation["masks"]["object_a"].items():
        frames[blank] = encode_mask(np.zeros(frames[blank]["size"], bool))
        if cam in fill:
            frames["240"] = frames[fill[cam]]
    (root / "annotation.json").write_text(json.dumps(annotation))
    return root


@pytest.mark.parametrize("direction", ["ego2exo", "exo2ego"])
def test_a_skip_among_the_first_seven_frames_gives_the_official_bank_sequence(tmp_path, direction, capsys):
    """Spec 3.2: frame 90 (t=3) skipped, so the last window (t=7) holds five entries; from t=8 on each
    step appends t-1 and compresses once: the banks stay at five (the issue: ours grew back to six)."""
    fixture = gap_fixture(tmp_path / "fixture", blank="90", fill={"aria01_214-1": "210"})
    assert main(["parity", str(fixture), "--direction", direction, "--out", str(tmp_path / "p.npz")]) == 0
    capsys.readouterr()
    ours = np.load(tmp_path / "p.npz")
    frames = Fixture.read(fixture, direction).frames
    processed = [bool(Fixture.read(fixture, direction).source_mask(f).any()) for f in frames]
    assert processed == [t != 3 for t in range(10)]
    steps = official_banks(processed, {t: float(t) for t in range(10)})
    kp = min(len(frames), 16)  # pointers from the frames t-1 .. t-(Kp-1) that were processed (spec 2.4)
    pointers = [4 * sum(1 for j in range(max(0, s.frame - kp + 1), s.frame) if processed[j]) for s in steps]
    assert list(ours["processed_frame_index"]) == [s.frame for s in steps]
    assert list(ours["bank_len"]) == [len(s.bank) for s in steps] == [0, 1, 2, 3, 4, 5, 5, 5, 5]
    assert list(ours["num_ptr_tokens"]) == pointers
    assert list(ours["compress_frame_index"]) == [s.frame for s in steps if s.kstar is not None] == [8, 9]
    # The bank handed to the first compression: t=7's window {1, 2, 4, 5, 6} plus frame 7, exactly
    # those frames' source memories, oldest first.
    first = [s.frame for s in steps].index(8)
    handed = steps[first - 1].bank + [7]
    rows = [list(ours["processed_frame_index"]).index(f) for f in handed]
    memories = ours["src_maskmem_features"][rows]
    np.testing.assert_array_equal(ours["bank_src_before_first_compression"],
                                  memories.reshape(len(rows), memories.shape[1], -1).transpose(0, 2, 1))


def test_evaluate_official_square_writes_what_the_official_tool_wrote(tmp_path, capsys):
    """`lmeec evaluate --protocol official --score-size 256` on the fixture's take: the frames and masks of
    predictions.json are the RLE files the official tool wrote (tool_output/, 256x256: its model input)."""
    take = tmp_path / "takes" / "take"
    take.mkdir(parents=True)
    for cam in ("aria01_214-1", "cam01"):
        (take / cam).symlink_to(PARITY_FIXTURE / "frames" / cam)
    shutil.copy(PARITY_FIXTURE / "annotation.json", take / "annotation.json")
    out = tmp_path / "out"
    assert main(["evaluate", str(take.parent), "--out", str(out), "--checkpoint", str(PARITY_FIXTURE / "checkpoint.pt"),
                 "--config", str(PARITY_FIXTURE / "model.yaml"), "--protocol", "official", "--compression", "drop",
                 "--bank-policy", "official", "--score-size", "256", "--no-plots", "--threads", "2"]) == 0
    capsys.readouterr()
    written = json.loads((out / "predictions.json").read_text())["ego-exo"]["results"]["take"]["masks"]["object_a"]
    written = written["aria01_214-1_cam01"]
    tool = {p.stem: json.loads(p.read_text()) for p in (PARITY_FIXTURE / "tool_output").glob("*.json")}
    assert set(written) == set(tool)  # frame 240 (empty source mask) has no file in either
    for frame, rle in tool.items():
        np.testing.assert_array_equal(decode_mask(written[frame]["pred_mask"]), decode_mask(rle), err_msg=frame)
        assert written[frame]["confidence"] == int(decode_mask(rle).sum() > 0.001 * 256 * 256)  # merge_results
