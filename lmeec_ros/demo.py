"""`lmeec_demo` (`make demo`): the whole product on one short recording, through the real node process.

1. The recording: a synthetic held-out room (never trained on), rendered from a fixed recipe and
   written as a rosbag2 MCAP with both cameras, the target's GT masks, every object's instance ids
   and the room's object catalogue; made once, reused after.
2. The node: `lmeec_node` with the shipped nano checkpoint (lmeec_core/assets/nano.pt, else a
   random-weight model whose masks mean nothing), `use_sim_time`, on a private localhost DDS domain.
3. The replay, in lockstep so every pair is processed and the figures do not depend on the machine.
   Target 1: a ~/set_target call with the ego GT mask of the room's target on the first pair where it
   is visible (a person's click). Target 2, from the middle of the recording: a second call marks
   another object with its ego GT box (a person's drag): a table object that is neither the target
   nor one of its look-alikes, so that the change can be seen. The node follows each in exo.
4. The node's results are recorded to a bag, each scored against the GT of its own target's object
   (metrics.json, per target and in total), and drawn (overlay.mp4, contact_sheet.png). The node is
   stopped with SIGINT so it frees its shared memory.
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
from lmeec_core.bag_eval import ObjectTruth, StampWindow, bag_pairs, count_messages
from lmeec_core.data.bags import CAMERA_TOPICS, read_bag_images, read_scene_objects, write_scene_bag
from lmeec_core.data.clips import held_out_scene_seeds
from lmeec_core.data.synthetic import MIN_PROMPT_FRACTION, SceneConfig, object_catalogue, render_scene
from lmeec_core.errors import InputError
from lmeec_core.target_schedule import TARGET, TargetChange
from lmeec_core.visualize import PROMPT_COLOUR, TARGET_COLOUR, contact_sheet, overlay, side_by_side, write_mp4
from lmeec_ros.bag_replay import ReplayOptions
from lmeec_ros.bag_score import RecordedResult, read_results, score_results
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
RETARGET_PROMPT = "box"
MOSTLY_SEEN = 0.5  # the second target must be in the exo view on more than this share of its pairs


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
    """The demo recording at `path`, rendered and written unless it is there already, of this length and
    with what this version needs (instance topics, object catalogue); a previous version's is remade.

    It is written in a scratch folder first and moved into place, so an interrupted run never
    leaves a half-written bag that a later run would trust.
    """
    objects = object_catalogue(scene)
    if path.exists() and _holds(path, scene.num_frames, objects):
        return path
    scratch = path.parent / f".{path.name}.partial"
    for stale in (scratch, path):
        shutil.rmtree(stale, ignore_errors=True)
    # rosbags names the .mcap after its folder
    write_scene_bag(scratch / path.name, render_scene(scene), objects=objects)
    (scratch / path.name).rename(path)
    scratch.rmdir()
    return path


def _holds(bag: Path, frames: int, objects: dict[str, Any]) -> bool:
    """Whether `bag` has `frames` messages on every camera topic and the object catalogue `objects`."""
    topics = [topic for view_topics in CAMERA_TOPICS.values() for topic in view_topics]
    return (all(count_messages(bag, topic) == frames for topic in topics)
            and read_scene_objects(bag) == json.loads(json.dumps(objects)))


def choose_retarget(bag: Path, from_pair: int) -> TargetChange:
    """The demo's second target, drawn from the recording: a table object that is neither the room's
    target nor a look-alike (so a viewer sees a different object), marked with its box in the source
    view on the first pair from `from_pair` on where it covers enough of that view to be drawn around,
    and in the target view on most pairs from there. Of those, the soonest, then the one most often
    in the target view, then the largest; the same recording always gives the same choice."""
    objects = read_scene_objects(bag)
    candidates = [o["instance"] for name, o in objects.items()
                  if o["on_table"] and name != TARGET and not name.startswith("lookalike")]
    if not candidates:
        raise InputError(f"recording {bag} names no table object besides the target and its look-alikes "
                         f"(objects: {sorted(objects)}); expected a synthetic room with more table objects")
    truth = ObjectTruth(bag)
    cover: dict[int, list[tuple[float, bool]]] = {c: [] for c in candidates}  # per pair: source share, in target
    for pair in bag_pairs(bag):
        for c in candidates:
            source = truth.get(SOURCE_VIEW, pair.stamp_of(SOURCE_VIEW), c)
            target = truth.get(TARGET_VIEW, pair.stamp_of(TARGET_VIEW), c)
            cover[c].append((float(source.mean()) if source is not None else 0.0,
                             target is not None and bool(target.any())))
    ranked = []
    for c, per_pair in cover.items():
        start = next((i for i in range(from_pair, len(per_pair))
                      if per_pair[i][0] >= MIN_PROMPT_FRACTION[SOURCE_VIEW]), None)
        if start is not None and (seen := np.mean([s for _, s in per_pair[start:]])) > MOSTLY_SEEN:
            ranked.append((start, -seen, -per_pair[start][0], c))
    if not ranked:
        raise InputError(f"no table object of {bag} other than the target and its look-alikes is in {SOURCE_VIEW} "
                         f"from pair {from_pair} on and then mostly in {TARGET_VIEW}; expected a longer recording")
    start, _, _, instance = min(ranked)
    return TargetChange(SOURCE_VIEW, RETARGET_PROMPT, instance, start)


def default_checkpoint() -> Path | None:
    """The shipped nano checkpoint, when this checkout has it."""
    return ASSET if ASSET.is_file() else None


SHM_PREFIX = "/dev/shm/fastdds_"


def _mapped_shm(pid: int) -> set[str]:
    """Fast DDS shared-memory files that process `pid` has mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {line.split()[-1] for line in maps if line.split()[-1].startswith(SHM_PREFIX)}


def _existing_shm() -> set[str]:
    return {str(p) for p in Path(SHM_PREFIX).parent.glob(Path(SHM_PREFIX).name + "*")}


@contextmanager
def node_process(env: dict[str, str], log_path: Path, checkpoint: Path | None) -> Iterator[dict[str, Any]]:
    """The real `lmeec_node` process for the block; yields a dict filled with how it ended.

    Stopped with SIGINT, as a user would; the shared-memory files it made and mapped that still
    exist afterwards are reported (Fast DDS removes them on a clean exit). Files that were there
    before it started are not its own: another process on the machine may hold them, or have left
    them behind.
    """
    ros_args = ["-p", "use_sim_time:=true"]
    if checkpoint is not None:
        ros_args += ["-p", f"checkpoint:={checkpoint}"]
    script = Path(sys.executable).parent / "lmeec_node"
    ending: dict[str, Any] = {"checkpoint": str(checkpoint) if checkpoint else None, "log": str(log_path)}
    with log_path.open("w") as log:
        before = _existing_shm()
        proc = start_node(env, ros_args, log, console_script=script.exists())
        try:
            yield ending
        finally:
            mapped = _mapped_shm(proc.pid) - before if proc.poll() is None else set()
            ending["exit_code"] = stop_node(proc)
            ending["shm_files_left"] = sorted(p for p in mapped if Path(p).exists())


def replay_through_node(paths: DemoPaths, checkpoint: Path | None, rate: float | None, domain_id: int,
                        retarget: TargetChange) -> dict[str, Any]:
    """Run the node, replay the scene into it with both targets marked from GT, record its results."""
    paths.ros.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(paths.outputs, ignore_errors=True)
    env = local_environment(paths.ros, domain_id)
    options = ReplayOptions(lockstep=rate is None, rate=rate or 1.0, results_topic=f"{NODE_NAME}/correspondence")
    with used_by_this_process(env), node_process(env, paths.ros / "node.log", checkpoint) as node:
        with RosSession("lmeec_demo", domain_id) as session:
            try:
                stats = replay(session, paths.scene, options, SOURCE_VIEW, NODE_NAME, paths.outputs,
                               wait_s=NODE_START_TIMEOUT_S, retargets=[retarget])
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}; node log {node['log']}:\n{_tail(Path(node['log']))}") from exc
    return {"replay": stats, "node": node}


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text().splitlines()[-lines:])


@dataclass(frozen=True)
class GivenTarget:
    """A target the replay gave the node: its id, the change that made it, where and with what."""

    target_id: int
    change: TargetChange
    pair: int  # index of the pair it was given on
    name: str  # the object's name in the recording's catalogue
    box: tuple[int, int, int, int] | None  # the box drawn, for a box prompt

    @property
    def label(self) -> str:
        return f"target {self.target_id} ({self.change.prompt})"


def given_targets(replayed: dict[str, Any], changes: list[TargetChange], objects: dict[str, Any]) -> list[GivenTarget]:
    """The targets the node accepted, from the replay's figures of each change in `changes`."""
    names = {None: TARGET, **{o["instance"]: name for name, o in objects.items()}}
    made = [replayed["target"], *replayed.get("retargets", [])]
    return [GivenTarget(entry["target_id"], change, entry["pair"], names[change.instance],
                        tuple(entry["box"]) if "box" in entry else None)
            for entry, change in zip(made, changes, strict=True) if entry["target_id"]]


def overlay_frames(scene: Path, outputs: Path, targets: list[GivenTarget]) -> Iterator[np.ndarray]:
    """One side-by-side picture per pair: the source view with the given or tracked target mask (and
    the box where one was given), the target view with the found mask, its box and the GT outline of
    that target's object; each side says which target it shows."""
    truth = ObjectTruth(scene)
    by_id = {t.target_id: t for t in targets}
    # On a re-target pair the node answers twice; the later answer (the new target) is the one kept.
    found: StampWindow[RecordedResult] = StampWindow(
        (r.target_view, r.stamp_ns, r) for r in read_results(outputs, f"{NODE_NAME}/correspondence"))
    tracked = StampWindow((SOURCE_VIEW, m.stamp_ns, m.image != 0)
                          for m in read_bag_images(outputs, [f"{NODE_NAME}/source_mask"]))
    for index, pair in enumerate(bag_pairs(scene)):
        source_ns, target_ns = pair.stamp_of(SOURCE_VIEW), pair.stamp_of(TARGET_VIEW)
        result = found.get(TARGET_VIEW, target_ns)
        target = by_id.get(result.target_id) if result is not None else None
        if target is None:
            left = overlay(pair.of(SOURCE_VIEW), None, label=f"{SOURCE_VIEW} #{index}: no target yet")
            right = overlay(pair.of(TARGET_VIEW), None, label=f"{TARGET_VIEW}: waiting")
            yield side_by_side(left, right)
            continue
        given = index == target.pair
        seen = "found" if result.visible else "not visible"
        right = overlay(pair.of(TARGET_VIEW), result.mask, TARGET_COLOUR, result.bbox,
                        truth.get(TARGET_VIEW, target_ns, target.change.instance),
                        f"{TARGET_VIEW}: {target.label} {seen}, score {result.score:.2f}")
        source_mask = tracked.get(SOURCE_VIEW, source_ns)
        state = "given" if given else "tracked" if source_mask is not None and source_mask.any() else "lost here"
        left = overlay(pair.of(SOURCE_VIEW), source_mask, PROMPT_COLOUR, target.box if given else None,
                       label=f"{SOURCE_VIEW} #{index}: {target.label} {state}")
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


def sheet_indices(pairs: int, first: int, starts: Iterable[int] = (), count: int = SHEET_FRAMES) -> set[int]:
    """About `count` pair indices spread evenly from the first pair with a result to the last pair,
    always holding the pairs in `starts` (where a later target was given), so every target is shown."""
    if pairs - first <= count:
        return set(range(first, pairs))
    later = {s for s in starts if first < s < pairs}
    return {int(i) for i in np.linspace(first, pairs - 1, count - len(later)).round()} | later


def run_demo(out: Path, frames: int = SCENE.num_frames, checkpoint: Path | None = None, rate: float | None = None,
             domain_id: int | None = None) -> dict[str, Any]:
    """The whole demo; returns what metrics.json holds."""
    started = time.monotonic()
    paths = DemoPaths(out)
    scene = replace(SCENE, num_frames=frames)
    ensure_scene(paths.scene, scene)
    retarget = choose_retarget(paths.scene, frames // 2)
    run = replay_through_node(paths, checkpoint, rate, domain_id or pick_domain_id(), retarget)
    stats = run["replay"]
    targets = given_targets(stats, [TargetChange(SOURCE_VIEW), retarget], read_scene_objects(paths.scene))
    scores = score_results(paths.outputs, paths.scene, f"{NODE_NAME}/correspondence",
                           targets={t.target_id: t.change for t in targets})
    write_pictures(overlay_frames(paths.scene, paths.outputs, targets), paths,
                   sheet_indices(stats["pairs"], stats["pairs_before_first_result"], [t.pair for t in targets[1:]]),
                   scene.fps)
    named = {t.target_id: {"name": t.name, "pair": t.pair} for t in targets}
    figures = {"direction": f"{SOURCE_VIEW}->{TARGET_VIEW}", "metrics": scores["metrics"],
               "targets": [{**scored, **named[scored["target_id"]]} for scored in scores["targets"]],
               "scene": {"bag": str(paths.scene), **asdict(scene)}, **run,
               "files": {name: str(getattr(paths, name)) for name in ("metrics", "video", "sheet", "outputs")},
               "wall_s": round(time.monotonic() - started, 1)}
    paths.metrics.write_text(json.dumps(figures, indent=2))
    return figures


def _scores(m: dict[str, Any], results: str) -> str:
    return (f"IoU {m['iou']:.3f}   LE {m['le']:.3f}   CA {m['ca']:.3f}   BA {m['ba']:.3f}   "
            f"({m['n_frames']} {results}, {m['n_frames_with_gt']} with it in view)")


def headline(figures: dict[str, Any]) -> str:
    """What the demo prints: where things are and the figures people look for first."""
    r, node = figures["replay"], figures["node"]
    latency = (f"latency median {r['latency_ms_median']:.0f} ms, p95 {r['latency_ms_p95']:.0f} ms"
               if r["latency_ms_median"] is not None else "no latency measured")
    weights = node["checkpoint"] or "NONE: random weights, masks are meaningless (lmeec_core/assets/nano.pt missing)"
    files = figures["files"]
    lines = [f"LM-EEC demo, {figures['direction']}, checkpoint {weights}"]
    for t in figures["targets"]:
        lines.append(f"  target {t['target_id']} ({t['prompt']}: {t['name']}) from pair {t['pair']}:  "
                     + _scores(t["metrics"], "results"))
    lines += [
        f"  all targets:  {_scores(figures['metrics'], 'results scored')}",
        f"  pairs: {r['pairs']} replayed ({r['mode']}), {r['pairs_before_first_result']} before the target, "
        f"{r['results']} processed, {r['dropped']} dropped; {latency}",
        *(f"  set_target: {made['answer']}" for made in [r["target"], *r.get("retargets", [])]),
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
