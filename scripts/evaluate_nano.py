#!/usr/bin/env python3
"""Held-out figures of a nano checkpoint, as recorded in lmeec_core/assets/nano.json.

Renders (once) held-out rooms with every table object annotated (seeds never trained on), then runs
`lmeec evaluate` for both directions: the official protocol, the robot protocol with a mask, a box and
a click prompt, and the copy-the-source-box baseline. Prints JSON with the commands it ran and the
frame-weighted IoU per object kind: the room's target (the object the wearer looks at, which slides),
its look-alikes (same colours), the other table objects, and all non-target objects together. A model
that ignores the prompt scores well on the target only.

    scripts/evaluate_nano.py CHECKPOINT --out eval/nano [--rooms 12] [--frames 45]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

DIRECTIONS = ("ego2exo", "exo2ego")
RUNS = {  # name -> extra `lmeec evaluate` arguments
    "official": ["--protocol", "official"],
    "robot_mask": ["--protocol", "robot", "--prompt", "mask"],
    "robot_box": ["--protocol", "robot", "--prompt", "box"],
    "robot_click": ["--protocol", "robot", "--prompt", "click"],
    "copy_box": ["--protocol", "official", "--baseline", "copy-box"],
}


def object_kind(name: str) -> str:
    """target | lookalike | other, from the synthetic rooms' object names (lmeec_core.data.synthetic)."""
    return "target" if name == "target" else "lookalike" if name.startswith("lookalike") else "other"


def iou_by_kind(metrics: dict) -> dict[str, float | int]:
    """Frame-weighted IoU per object kind from `lmeec evaluate`'s per-sequence rows (take/object/pair)."""
    sums: dict[str, list[float]] = {}
    for row in metrics["sequences"]:
        kind = object_kind(row["sequence"].split("/")[1])
        frames = row["n_frames_with_gt"]
        if frames:
            for group in (kind, "non_target" if kind != "target" else None, "all"):
                if group:
                    total = sums.setdefault(group, [0.0, 0])
                    total[0] += row["iou"] * frames
                    total[1] += frames
    out: dict[str, float | int] = {}
    for group, (weighted, frames) in sorted(sums.items()):
        out[f"{group}_iou"] = round(weighted / frames, 4)
        out[f"{group}_frames"] = frames
    return out


def ensure_rooms(root: Path, rooms: int, frames: int) -> None:
    if root.exists() and len([p for p in root.iterdir() if p.is_dir()]) == rooms:
        return
    from lmeec_core.data.clips import write_held_out_takes

    write_held_out_takes(root, scenes=rooms, frames=frames, fps=3.0, objects="table")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the evaluations and summary.json")
    parser.add_argument("--rooms", type=int, default=12)
    parser.add_argument("--frames", type=int, default=45)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--directions", nargs="+", default=list(DIRECTIONS), choices=DIRECTIONS)
    args = parser.parse_args()
    rooms = args.out / f"heldout_table_{args.rooms}x{args.frames}"
    ensure_rooms(rooms, args.rooms, args.frames)
    lmeec = Path(sys.executable).parent / "lmeec"
    summary: dict = {"checkpoint": str(args.checkpoint), "rooms": str(rooms), "results": {}, "commands": []}
    for direction in args.directions:
        for name in args.runs:
            out = args.out / f"{direction}_{name}"
            command = [str(lmeec), "evaluate", str(rooms), "--checkpoint", str(args.checkpoint), "--direction",
                       direction, "--out", str(out), "--no-plots", *RUNS[name]]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            metrics = json.loads((out / "metrics.json").read_text())
            summary["commands"].append(" ".join(["lmeec", *command[1:]]))
            summary["results"].setdefault(direction, {})[name] = {
                **{k: round(v, 4) for k, v in metrics["total"].items() if isinstance(v, float)},
                **iou_by_kind(metrics)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["results"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
