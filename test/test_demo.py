"""The demo entry point on a tiny recording: the real node process, both targets given and scored, every
file written, figures that parse; and the recording made once, remade for another length or version."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import cv2
from PIL import Image
from rosbags.rosbag2 import Reader, Writer

from lmeec_core.bag_eval import count_messages
from lmeec_core.data.bags import BAG_VERSION, EGO_IMAGE_TOPIC, EGO_INSTANCES_TOPIC, EXO_INSTANCES_TOPIC, TYPESTORE
from lmeec_core.data.synthetic import object_catalogue
from ros_helpers import REPO, RosEnv, require_ros

require_ros()

from lmeec_ros.demo import SCENE, SHEET_FRAMES, SHEET_WIDTH, ensure_scene, sheet_indices  # noqa: E402

FRAMES = 8


def test_demo_replays_through_the_node_and_writes_metrics_video_and_sheet(tmp_path):
    out = tmp_path / "demo"
    domain_id = RosEnv.create(tmp_path).domain_id
    run = subprocess.run([sys.executable, "-m", "lmeec_ros.demo", "--out", str(out), "--frames", str(FRAMES),
                          "--domain-id", str(domain_id)],
                         cwd=REPO, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    assert str(out / "metrics.json") in run.stdout
    assert "target 1 (mask: target) from pair 0:  IoU" in run.stdout and "target 2 (box: object_" in run.stdout

    figures = json.loads((out / "metrics.json").read_text())
    replay, node = figures["replay"], figures["node"]
    assert (replay["pairs"], replay["dropped"]) == (FRAMES, 0)
    assert replay["results"] == FRAMES - replay["pairs_before_first_result"] > 0
    first, second = figures["targets"]
    assert (first["target_id"], first["prompt"], first["object"], first["pair"]) == (1, "mask", "target", 0)
    assert (second["target_id"], second["prompt"]) == (2, "box") and FRAMES // 2 <= second["pair"] < FRAMES
    objects = object_catalogue(SCENE)
    assert objects[second["name"]]["on_table"] and not second["name"].startswith("lookalike")
    assert str(objects[second["name"]]["instance"]) == second["object"]
    assert replay["retargets"][0]["answer"].startswith("target 2 set in ego (box [")
    # Each target scored on its own results; the re-target pair was answered under both.
    assert first["metrics"]["n_frames"] == second["pair"] + 1
    assert second["metrics"]["n_frames"] == FRAMES - second["pair"]
    assert figures["metrics"]["n_frames"] == replay["results"] + 1
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


def test_a_recording_of_the_previous_demo_version_is_remade_with_instance_topics(tmp_path):
    short = replace(SCENE, num_frames=2, ego_size=(64, 64), exo_size=(48, 64))
    current = ensure_scene(tmp_path / "current", short)
    previous = tmp_path / "scene"
    _copy_without(current, previous, {EGO_INSTANCES_TOPIC, EXO_INSTANCES_TOPIC})
    assert count_messages(previous, EGO_INSTANCES_TOPIC) == 0

    ensure_scene(previous, short)
    assert count_messages(previous, EGO_INSTANCES_TOPIC) == count_messages(previous, EXO_INSTANCES_TOPIC) == 2


def _copy_without(bag, out, topics):
    """`bag` written again to `out` without `topics` and without its metadata's object catalogue: what
    the demo wrote before it recorded instance ids."""
    with Reader(bag) as reader, Writer(out, version=BAG_VERSION) as writer:
        kept = [c for c in reader.connections if c.topic not in topics]
        connections = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=TYPESTORE) for c in kept}
        for connection, record_ns, raw in reader.messages(kept):
            writer.write(connections[connection.id], record_ns, raw)


def test_the_contact_sheet_shows_every_target_from_the_pair_it_was_given_on():
    picks = sheet_indices(80, 0, [46])
    assert len(picks) == SHEET_FRAMES and {0, 46, 79} <= picks
    assert len([p for p in picks if p < 46]) >= 3 and len([p for p in picks if p > 46]) >= 3
    assert sheet_indices(8, 0, [4]) == set(range(8)) and sheet_indices(8, 8) == set()
