"""`lmeec_demo` (`make demo`): the whole product on one short recording, through the real node process.

1. The recording: a synthetic held-out room (never trained on), rendered from a fixed recipe and
   written as a rosbag2 MCAP with both cameras and their GT masks; made once, reused after.
2. The node: `lmeec_node` with the shipped nano checkpoint (lmeec_core/assets/nano.pt, else a
   random-weight model whose masks mean nothing), `use_sim_time`, on a private localhost DDS domain.
3. The replay, in lockstep so every pair is processed and the figures do not depend on the machine;
   the target is marked by a ~/set_target call with the ego GT mask on the first pair where it is
   visible (a person's click), and the node finds it in the exo camera from then on.
4. The node's results are recorded to a bag, scored against the GT topics (metrics.json), and drawn
   (overlay.mp4, contact_sheet.png). The node is stopped with SIGINT so it frees its shared memory.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

import lmeec_core
from lmeec_core.bag_eval import StampWindow, bag_pairs, count_messages, ground_truth
from lmeec_core.data.bags import EGO_IMAGE_TOPIC, read_bag_images, write_scene_bag
from lmeec_core.data.clips import held_out_scene_seeds
from lmeec_core.data.synthetic import SceneConfig, render_scene
from lmeec_core.visualize import PROMPT_COLOUR, TARGET_COLOUR, contact_sheet, overlay, side_by_side, write_mp4
from lmeec_ros.bag_replay import ReplayOptions
from lmeec_ros.bag_score import read_results, score_results
from lmeec_ros.bag_tools import RosSession, replay
from lmeec_ros.local_ros import local_environment, pick_domain_id, start_node, stop_node, used_by_this_process

ASSET = Path(lmeec_core.__file__).resolve().parent / "assets" / "nano.pt"  # the shipped nano checkpoint
SCENE = SceneConfig(seed=held_out_scene_seeds(1)[0], num_frames=80, fps=10.0, ego_size=(256, 256),
                    exo_size=(240, 320))
SOURCE_VIEW, TARGET_VIEW = "ego", "exo"
NODE_NAME = "/lmeec"
NODE_START_TIMEOUT_S = 180.0  # model load on a busy 2-core machine
SHEET_FRAMES, SHEET_COLUMNS = 9, 3
SHEET_WIDTH = 1920  # about 3/4 of the video's size: one-pixel GT outlines stay visible


@dataclass(frozen=True)
class DemoPaths:
    """Everything the demo writes, under one folder."""

    root: Path

    @property
    def scene(self) -> Path:
        return self.root / "scene"  # rosbag2 folder holding scene.mcap

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"  # rosbag2 folder holding outputs.mcap: the node's results

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def video(self) -> Path:
        return self.root / "overlay.mp4"

    @property
    def sheet(self) -> Path:
        return self.root / "contact_sheet.png"

    @property
    def ros(self) -> Path:
        return self.root / "ros"  # DDS profile, node log, ROS logs


def ensure_scene(path: Path, scene: SceneConfig) -> Path:
    """The demo recording at `path`, rendered and written only if absent or of another length.

    It is written in a scratch folder first and moved into place, so an interrupted run never
    leaves a half-written bag that a later run would trust.
    """
    if path.exists() and count_messages(path, EGO_IMAGE_TOPIC) == scene.num_frames:
        return path
    scratch = path.parent / f".{path.name}.partial"
    for stale in (scratch, path):
        shutil.rmtree(stale, ignore_errors=True)
    write_scene_bag(scratch / path.name, render_scene(scene))  # rosbags names the .mcap after its folder
    (scratch / path.name).rename(path)
    scratch.rmdir()
    return path


def default_checkpoint() -> Path | None:
    """The shipped nano checkpoint, when this checkout has it."""
    return ASSET if ASSET.is_file() else None


def _mapped_shm(pid: int) -> set[str]:
    """Fast DDS shared-memory files that process `pid` has mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {line.split()[-1] for line in maps if line.split()[-1].startswith("/dev/shm/fastdds_")}


@contextmanager
def node_process(env: dict[str, str], log_path: Path, checkpoint: Path | None) -> Iterator[dict[str, Any]]:
    """The real `lmeec_node` process for the block; yields a dict filled with how it ended.

    Stopped with SIGINT, as a user would; the shared-memory files it had mapped and that still
    exist afterwards are reported (Fast DDS removes them on a clean exit).
    """
    ros_args = ["-p", "use_sim_time:=true"]
    if checkpoint is not None:
        ros_args += ["-p", f"checkpoint:={checkpoint}"]
    script = Path(sys.executable).parent / "lmeec_node"
    ending: dict[str, Any] = {"checkpoint": str(checkpoint) if checkpoint else None, "log": str(log_path)}
    with log_path.open("w") as log:
        proc = start_node(env, ros_args, log, console_script=script.exists())
        try:
            yield ending
        finally:
            mapped = _mapped_shm(proc.pid) if proc.poll() is None else set()
            ending["exit_code"] = stop_node(proc)
            ending["shm_files_left"] = sorted(p for p in mapped if Path(p).exists())


def replay_through_node(paths: DemoPaths, checkpoint: Path | None, rate: float | None,
                        domain_id: int) -> dict[str, Any]:
    """Run the node, replay the scene into it with the target marked from GT, record its results."""
    paths.ros.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(paths.outputs, ignore_errors=True)
    env = local_environment(paths.ros, domain_id)
    options = ReplayOptions(lockstep=rate is None, rate=rate or 1.0, results_topic=f"{NODE_NAME}/correspondence")
    with used_by_this_process(env), node_process(env, paths.ros / "node.log", checkpoint) as node:
        with RosSession("lmeec_demo", domain_id) as session:
            try:
                stats = replay(session, paths.scene, options, SOURCE_VIEW, NODE_NAME, paths.outputs,
                               wait_s=NODE_START_TIMEOUT_S)
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}; node log {node['log']}:\n{_tail(Path(node['log']))}") from exc
    return {"replay": stats, "node": node}


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text().splitlines()[-lines:])


def overlay_frames(scene: Path, outputs: Path, target_stamp_ns: int | None) -> Iterator[np.ndarray]:
    """One side-by-side picture per pair: the source view with the given or tracked target mask,
    the target view with the found mask, its box and the GT outline."""
    gt = ground_truth(scene)
    found = StampWindow((r.target_view, r.stamp_ns, r) for r in read_results(outputs, f"{NODE_NAME}/correspondence"))
    tracked = StampWindow((SOURCE_VIEW, m.stamp_ns, m.image != 0)
                          for m in read_bag_images(outputs, [f"{NODE_NAME}/source_mask"]))
    for index, pair in enumerate(bag_pairs(scene)):
        source_ns, target_ns = pair.stamp_of(SOURCE_VIEW), pair.stamp_of(TARGET_VIEW)
        result = found.get(TARGET_VIEW, target_ns)
        if result is None:
            state, right = "no target yet", overlay(pair.of(TARGET_VIEW), None, gt=gt.get(TARGET_VIEW, target_ns),
                                                    label=f"{TARGET_VIEW}: waiting")
        else:
            state = "target given (GT mask)" if source_ns == target_stamp_ns else "target tracked"
            seen = "found" if result.visible else "not visible"
            right = overlay(pair.of(TARGET_VIEW), result.mask, TARGET_COLOUR, result.bbox,
                            gt.get(TARGET_VIEW, target_ns), f"{TARGET_VIEW}: {seen}, score {result.score:.2f}")
        left = overlay(pair.of(SOURCE_VIEW), tracked.get(SOURCE_VIEW, source_ns), PROMPT_COLOUR,
                       label=f"{SOURCE_VIEW} #{index}: {state}")
        yield side_by_side(left, right)


def write_pictures(frames: Iterable[np.ndarray], paths: DemoPaths, picks: set[int], fps: float) -> None:
    """overlay.mp4 of every frame and contact_sheet.png of the frames at indices `picks`, in one pass."""
    picked: list[np.ndarray] = []

    def keep_picked() -> Iterator[np.ndarray]:
        for index, frame in enumerate(frames):
            if index in picks:
                picked.append(frame)
            yield frame

    write_mp4(keep_picked(), paths.video, fps)
    if picked:
        contact_sheet(picked, paths.sheet, columns=SHEET_COLUMNS, width=SHEET_WIDTH)


def sheet_indices(pairs: int, first: int, count: int = SHEET_FRAMES) -> set[int]:
    """`count` pair indices spread evenly from the first pair with a result to the last pair."""
    if pairs <= first:
        return set()
    return {int(i) for i in np.linspace(first, pairs - 1, min(count, pairs - first)).round()}


def run_demo(out: Path, frames: int = SCENE.num_frames, checkpoint: Path | None = None, rate: float | None = None,
             domain_id: int | None = None) -> dict[str, Any]:
    """The whole demo; returns what metrics.json holds."""
    started = time.monotonic()
    paths = DemoPaths(out)
    scene = replace(SCENE, num_frames=frames)
    ensure_scene(paths.scene, scene)
    run = replay_through_node(paths, checkpoint, rate, domain_id or pick_domain_id())
    scores = score_results(paths.outputs, paths.scene, f"{NODE_NAME}/correspondence")
    stats = run["replay"]
    write_pictures(overlay_frames(paths.scene, paths.outputs, stats["target"]["stamp_ns"]), paths,
                   sheet_indices(stats["pairs"], stats["pairs_before_first_result"]), scene.fps)
    figures = {"direction": f"{SOURCE_VIEW}->{TARGET_VIEW}", "metrics": scores["metrics"],
               "scene": {"bag": str(paths.scene), **asdict(scene)}, **run,
               "files": {name: str(getattr(paths, name)) for name in ("metrics", "video", "sheet", "outputs")},
               "wall_s": round(time.monotonic() - started, 1)}
    paths.metrics.write_text(json.dumps(figures, indent=2))
    return figures


def headline(figures: dict[str, Any]) -> str:
    """What the demo prints: where things are and the figures people look for first."""
    m, r, node = figures["metrics"], figures["replay"], figures["node"]
    latency = (f"latency median {r['latency_ms_median']:.0f} ms, p95 {r['latency_ms_p95']:.0f} ms"
               if r["latency_ms_median"] is not None else "no latency measured")
    weights = node["checkpoint"] or "NONE: random weights, masks are meaningless (lmeec_core/assets/nano.pt missing)"
    files = figures["files"]
    lines = [
        f"LM-EEC demo, {figures['direction']}, checkpoint {weights}",
        f"  IoU {m['iou']:.3f}   LE {m['le']:.3f}   CA {m['ca']:.3f}   BA {m['ba']:.3f}   "
        f"({m['n_frames']} results scored, {m['n_frames_with_gt']} with the target in view)",
        f"  pairs: {r['pairs']} replayed ({r['mode']}), {r['pairs_before_first_result']} before the target, "
        f"{r['results']} processed, {r['dropped']} dropped; {latency}",
        f"  target: {r['target']['answer']}",
        f"  metrics   {files['metrics']}",
        f"  video     {files['video']}",
        f"  sheet     {files['sheet']}",
        f"  bags      {figures['scene']['bag']} (input with GT), {files['outputs']} (node results)",
        f"  node      exit code {node['exit_code']}, log {node['log']}"
        + (f", shared memory left: {node['shm_files_left']}" if node["shm_files_left"] else ""),
        f"  done in {figures['wall_s']:.0f} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmeec_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    parser.add_argument("--frames", type=int, default=SCENE.num_frames, help="length of the recording in pairs")
    parser.add_argument("--checkpoint", type=Path, help="default: lmeec_core/assets/nano.pt when present")
    parser.add_argument("--rate", type=float,
                        help="replay paced at this multiple of real time instead of in lockstep "
                             "(the node then drops the pairs it has no time for)")
    parser.add_argument("--domain-id", type=int,
                        help="ROS_DOMAIN_ID of the demo's private graph (default: from the process id)")
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or default_checkpoint()
    if checkpoint is not None and not checkpoint.is_file():
        parser.error(f"checkpoint {checkpoint} does not exist")
    figures = run_demo(args.out, args.frames, checkpoint, args.rate, args.domain_id)
    print(headline(figures))
    return 0 if figures["node"]["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
