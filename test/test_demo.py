"""The demo entry point on a tiny recording: the real node process, every file written, figures that parse."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import cv2
from PIL import Image

from lmeec_core.bag_eval import count_messages
from lmeec_core.data.bags import EGO_IMAGE_TOPIC
from ros_helpers import REPO, RosEnv, require_ros

require_ros()

from lmeec_ros.demo import SCENE, SHEET_WIDTH, ensure_scene  # noqa: E402

FRAMES = 8


def test_demo_replays_through_the_node_and_writes_metrics_video_and_sheet(tmp_path):
    out = tmp_path / "demo"
    domain_id = RosEnv.create(tmp_path).domain_id
    run = subprocess.run([sys.executable, "-m", "lmeec_ros.demo", "--out", str(out), "--frames", str(FRAMES),
                          "--domain-id", str(domain_id)],
                         cwd=REPO, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "IoU" in run.stdout and str(out / "metrics.json") in run.stdout

    figures = json.loads((out / "metrics.json").read_text())
    replay, node = figures["replay"], figures["node"]
    assert (replay["pairs"], replay["dropped"]) == (FRAMES, 0)
    assert replay["results"] == FRAMES - replay["pairs_before_first_result"] > 0
    assert figures["metrics"]["n_frames"] == replay["results"]
    assert set(figures["metrics"]) >= {"iou", "ca", "le", "ba"}
    assert node["exit_code"] == 0 and node["shm_files_left"] == []

    assert (out / "scene" / "scene.mcap").is_file() and (out / "outputs" / "outputs.mcap").is_file()
    video = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    video.release()
    assert Image.open(out / "contact_sheet.png").width == SHEET_WIDTH


def test_the_recording_is_made_once_and_remade_only_for_another_length(tmp_path):
    path = tmp_path / "scene"
    short = replace(SCENE, num_frames=2, ego_size=(64, 64), exo_size=(48, 64))
    ensure_scene(path, short)
    made = (path / "scene.mcap").stat().st_mtime_ns
    ensure_scene(path, short)
    assert (path / "scene.mcap").stat().st_mtime_ns == made

    ensure_scene(path, replace(short, num_frames=3))
    assert count_messages(path, EGO_IMAGE_TOPIC) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]  # no scratch folder left behind
