"""Numerical parity with the official LM-EEC code on the shared fixture (CI has ../shared)."""
from __future__ import annotations

import json
from dataclasses import replace
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import PARITY_FIXTURE, needs_shared
from lmeec_core.cli import main
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
