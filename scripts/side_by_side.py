#!/usr/bin/env python3
"""Speed of this checkout against an older commit, measured in one session with alternating runs.

    git worktree add --detach ../base 9a30385        # the commit to compare with
    .venv/bin/python scripts/side_by_side.py --base ../base --out side_by_side.json

For each model (b+ at 480 with random or given weights; the shipped nano checkpoint) it runs
`lmeec bench` (benchmark protocol, 640x480 cameras) in three variants: the old commit's code
(`--base`, imported through PYTHONPATH with this venv), this checkout's fp32 path (all named
speed-ups) and its fast mode (bf16 autocast plus the speed-ups). Every round runs all variants, in
an order that rotates from round to round, so that a load change on a shared machine hits them
alike; the table gives medians over rounds. Accuracy comes from `lmeec bench --compare fp32`: each
variant against the official-numerics fp32 path of this checkout, which `lmeec parity` shows is
bit-identical to the starting commit. With `--node` it also runs `lmeec_bench_node` (old vs new,
alternating) at 640x480 and 1280x720. JSON goes to stdout (and `--out`), a Markdown table to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"start": [], "fp32": ["--speedups", "all"], "fast": ["--speedups", "all", "--dtype", "bf16"]}
# `lmeec bench --compare fp32` figures, and their value for the starting commit itself (bit-identical)
ACCURACY = {"max_abs_logit_diff": 0.0, "max_abs_score_logit_diff": 0.0, "max_abs_fused_diff": 0.0,
            "mask_agreement": 1.0}


def _run_json(command: list[str], base: Path | None) -> dict:
    env = dict(os.environ)
    if base is not None:
        env["PYTHONPATH"] = str(base)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=base or ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    return json.loads(done.stdout)


def _bench(variant: str, model: dict, args: argparse.Namespace, frames: int, compare: bool = False) -> dict:
    command = [sys.executable, "-m", "lmeec_core.cli", "bench", "--quiet", "--threads", str(args.threads),
               "--frames", str(frames), *model["args"], *VARIANTS[variant]]
    if compare:
        command += ["--compare", "fp32"]
    return _run_json(command, args.base if variant == "start" else None)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed_bench(variant: str, model: dict, args: argparse.Namespace) -> dict:
    """A long and a short run: CPU time per pair from their difference (set-up and warm-up cancel).

    On a shared machine CPU time (with one torch thread) is far steadier than wall time, which
    the long run's report gives as well.
    """
    cpu = []
    for frames in (model["short"], model["long"]):
        before = _children_cpu_s()
        report = _bench(variant, model, args, frames)
        cpu.append(_children_cpu_s() - before)
    report["cpu_ms_per_pair"] = 1e3 * (cpu[1] - cpu[0]) / (model["long"] - model["short"])
    report["load_average"] = os.getloadavg()[0]
    return report


def _node(version: str, width: int, height: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "lmeec_ros.bench_node", "--width", str(width), "--height", str(height),
               "--rate", str(args.node_rate), "--seconds", str(args.node_seconds),
               "--checkpoint", str(args.nano_checkpoint), "--preset", ""]
    return _run_json(command, args.base if version == "start" else None)


def _models(args: argparse.Namespace) -> dict[str, dict]:
    bplus = ["--preset", "b+"] + (["--checkpoint", str(args.bplus_checkpoint)] if args.bplus_checkpoint else [])
    nano = ["--preset", "nano", "--checkpoint", str(args.nano_checkpoint)]
    # `--settle N`: the short run ends after N pairs; 7 fills the banks, so the timed pairs are steady-state
    return {"b+ 480": {"args": bplus, "short": args.settle, "long": args.settle + args.bplus_frames},
            "nano": {"args": nano, "short": args.settle, "long": args.settle + args.nano_frames}}


def _rotated(items: list[str], shift: int) -> list[str]:
    return items[shift % len(items):] + items[:shift % len(items)]


def measure(args: argparse.Namespace) -> dict:
    models = _models(args)
    runs: dict[str, dict[str, list[dict]]] = {name: {v: [] for v in VARIANTS} for name in models}
    for round_ in range(args.rounds):
        for name, model in models.items():
            for variant in _rotated(list(VARIANTS), round_):
                report = _timed_bench(variant, model, args)
                runs[name][variant].append(report)
                print(f"round {round_ + 1} {name} {variant}: {report['cpu_ms_per_pair']:.1f} CPU ms/pair, "
                      f"{report['ms_per_pair_median']:.1f} wall ms/pair", file=sys.stderr)
    accuracy = {name: {v: _bench(v, model, args, model["long"], compare=True) for v in ("fp32", "fast")}
                for name, model in models.items()}
    result = {"machine": _machine(), "rounds": args.rounds, "threads": args.threads, "base": str(args.base),
              "runs": runs, "accuracy": accuracy, "summary": _summary(runs, accuracy)}
    if args.node:
        result["node"] = _node_runs(args)
    return result


def _node_runs(args: argparse.Namespace) -> dict:
    out: dict[str, dict[str, list[dict]]] = {}
    for width, height in ((640, 480), (1280, 720)):
        key = f"{width}x{height}"
        out[key] = {"start": [], "new": []}
        for round_ in range(args.node_rounds):
            for version in _rotated(["start", "new"], round_):
                out[key][version].append(_node(version, width, height, args))
                print(f"node {key} {version}: {out[key][version][-1]['results_per_s']} results/s", file=sys.stderr)
    return out


def _summary(runs: dict, accuracy: dict) -> dict:
    summary = {}
    for name, variants in runs.items():
        cpu = {v: statistics.median(r["cpu_ms_per_pair"] for r in reports) for v, reports in variants.items()}
        wall = {v: statistics.median(r["ms_per_pair_median"] for r in reports) for v, reports in variants.items()}
        summary[name] = {
            v: {"cpu_ms_per_pair": cpu[v], "speedup_vs_start": cpu["start"] / cpu[v], "wall_ms_per_pair": wall[v],
                "wall_speedup_vs_start": wall["start"] / wall[v],
                **{key: accuracy[name][v][key] if v in accuracy[name] else same for key, same in ACCURACY.items()}}
            for v in variants
        }
    return summary


def _machine() -> dict:
    import torch

    return {"cpus": os.cpu_count(), "torch": torch.__version__, "load_average_at_end": os.getloadavg(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def markdown(result: dict) -> str:
    lines = ["| model | variant | CPU ms/pair | vs start | wall ms/pair | vs start | max abs diff: logits / "
             "score logit / fused | mask agreement |", "|---|---|---|---|---|---|---|---|"]
    for name, variants in result["summary"].items():
        for v, row in variants.items():
            lines.append(f"| {name} | {v} | {row['cpu_ms_per_pair']:.1f} | {row['speedup_vs_start']:.2f}x | "
                         f"{row['wall_ms_per_pair']:.1f} | {row['wall_speedup_vs_start']:.2f}x | "
                         f"{row['max_abs_logit_diff']:.2g} / {row['max_abs_score_logit_diff']:.2g} / "
                         f"{row['max_abs_fused_diff']:.2g} | {100 * row['mask_agreement']:.3f} % |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="worktree of the commit to compare with")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the tracker runs")
    parser.add_argument("--settle", type=int, default=7, help="pairs before the timed ones (7 fills the banks)")
    parser.add_argument("--bplus-frames", type=int, default=6, help="steady-state pairs timed per b+ run")
    parser.add_argument("--nano-frames", type=int, default=60, help="steady-state pairs timed per nano run")
    parser.add_argument("--bplus-checkpoint", type=Path, help="default: random b+ weights (seed 0)")
    parser.add_argument("--nano-checkpoint", type=Path, default=ROOT / "lmeec_core/assets/nano.pt")
    parser.add_argument("--node", action="store_true", help="also the node's results/s (needs ROS)")
    parser.add_argument("--node-rounds", type=int, default=1)
    parser.add_argument("--node-seconds", type=float, default=30.0)
    parser.add_argument("--node-rate", type=float, default=30.0, help="camera pairs/s published by the client")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    args.base = args.base.resolve()
    result = measure(args)
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        args.out.write_text(text)
    print(text)
    print(markdown(result), file=sys.stderr)


if __name__ == "__main__":
    main()
