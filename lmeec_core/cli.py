"""The `lmeec` command: parity, bench, train, evaluate, demo.

Each sub-command lives in its own module; this file only parses arguments and prints results
(JSON for machine-read figures). Heavy modules are imported inside the handlers.
ROS tools have their own commands (lmeec_node, lmeec_bag, lmeec_demo, lmeec_bench_node) so that
lmeec_core never imports rclpy.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .errors import InputError, LmeecError


def camera_size(text: str) -> tuple[int, int]:
    """'640x480' (width x height, as cameras are named) -> (480, 640)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"size {text!r}; expected WIDTHxHEIGHT such as 640x480") from err
    return height, width


def target_counts(text: str) -> tuple[int, ...]:
    """'1,2,4,8' -> (1, 2, 4, 8): how many targets each benchmarked tracker follows."""
    try:
        counts = tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"targets {text!r}; expected positive integers such as 1,2,4,8") from err
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"targets {text!r}; expected distinct positive integers such as 1,2,4,8")
    return counts


def score_size(text: str) -> int | str:
    """'480' -> 480 (a square side); 'challenge' stays a word."""
    if text == "challenge":
        return text
    try:
        return int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"score size {text!r}; expected a side in pixels such as 480, "
                                         "or 'challenge'") from err


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _parity(args: argparse.Namespace) -> int:
    from .parity import run_parity
    from .tracker import parse_speedups

    report = run_parity(args.fixture, args.out, direction=args.direction, threads=args.threads,
                        speedups=parse_speedups(args.speedups))
    _print_json(report)
    return 0 if report.get("ok", True) else 1


def _add_parity(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("parity", help="run the official protocol on a fixture folder and compare with it")
    p.add_argument("fixture", help="fixture folder (model.yaml, checkpoint.pt, annotation.json, frames/)")
    p.add_argument("--out", required=True, help="where to write the predicted arrays (.npz)")
    p.add_argument("--direction", choices=("ego2exo", "exo2ego"), help="default: meta.json's, else ego2exo")
    p.add_argument("--threads", type=int, default=2, help="torch threads (the fixture was made with 2)")
    p.add_argument("--speedups", default="none",
                   help="named speed-ups to check against the tolerances ('all' or a comma list); "
                        "default none: the official mode, bit-compatible in fp32")
    p.set_defaults(handler=_parity)


def _tracker_for(args: argparse.Namespace):
    """A tracker from the common --checkpoint/--preset and tracker options."""
    import torch

    from .model import build_preset, load_checkpoint, load_config_file
    from .tracker import TrackerConfig, parse_speedups

    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config_file(args.config) if args.config else None
    model = (load_checkpoint(args.checkpoint, config=config, preset=args.preset)[0] if args.checkpoint
             else build_preset(args.preset, seed=0))
    tracker = TrackerConfig(device=args.device, dtype=args.dtype, compression=args.compression,
                            capacity=args.capacity, bank_policy=args.bank_policy, source_lost=args.source_lost,
                            compile=args.compile, speedups=parse_speedups(args.speedups))
    return model, tracker


def _evaluate_bag(args: argparse.Namespace) -> int:
    from .bag_eval import evaluate_bag
    from .tracker import CorrespondenceTracker

    model, config = _tracker_for(args)
    figures = evaluate_bag(args.bag, CorrespondenceTracker(model, config), args.source_view, args.protocol,
                           max_pairs=args.max_pairs)
    _print_json(figures)
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(json.dumps(figures, indent=2, default=str))
    return 0


def _add_evaluate_bag(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate-bag", help="pair, track and score a rosbag2 with GT mask topics, without ROS")
    p.add_argument("bag", help="rosbag2 folder (MCAP or sqlite3) with /ego|/exo image_raw and gt_mask topics")
    p.add_argument("--checkpoint", help="checkpoint file; default: random weights of --preset")
    p.add_argument("--config", help="sam2-format model YAML, for checkpoints of a non-preset model")
    p.add_argument("--preset", default="nano")
    p.add_argument("--source-view", choices=("ego", "exo"), default="ego")
    p.add_argument("--protocol", choices=("robot", "benchmark"), default="robot")
    p.add_argument("--max-pairs", type=int)
    p.add_argument("--out", help="also write the figures to this JSON file")
    _add_tracker_options(p)
    p.set_defaults(handler=_evaluate_bag)


def _checkpoint(args: argparse.Namespace) -> int:
    import hashlib

    from .model import load_checkpoint, load_config_file

    config = load_config_file(args.config) if args.config else None
    model, report = load_checkpoint(args.path, config=config, preset=args.preset)
    digest = hashlib.sha256()
    with open(args.path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    _print_json({
        "summary": report.summary(), "kind": report.kind, "preset": report.preset,
        "image_size": model.image_size, "fusion": model.fusion,
        "parameters": sum(p.numel() for p in model.parameters()),
        "freshly_initialised": report.initialised, "meta": report.meta, "sha256": digest.hexdigest(),
    })
    return 0


def _add_checkpoint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("checkpoint", help="load a checkpoint strictly and describe it")
    p.add_argument("path")
    p.add_argument("--preset", help="for files that do not say (official LM-EEC: b+, recognised automatically)")
    p.add_argument("--config", help="sam2-format model YAML, for files of a non-preset model")
    p.set_defaults(handler=_checkpoint)


def _add_tracker_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--compression", choices=("merge", "drop", "fifo"), default="merge")
    p.add_argument("--capacity", type=int, default=6)
    p.add_argument("--bank-policy", choices=("fill", "official"), default="fill",
                   help="fill: banks refill after skipped frames; official: the official code's (spec 3.2)")
    p.add_argument("--source-lost", choices=("follow", "skip"), default="follow",
                   help="a tracked target the source view has lost: follow it on in the target view from its "
                        "last source memory, or skip the frame (the official protocol); per-frame source masks "
                        "always skip empty frames")
    p.add_argument("--compile", action="store_true", help="torch.compile the image encoder's trunk")
    p.add_argument("--speedups", default="all",
                   help="numerics-changing fp32 speed-ups, 'all', 'none' or a comma list of batch_views, "
                        "unpadded_windows (float rounding only; none = bit-compatible with the official code)")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is faster on a busy 2-core machine)")


def _bench(args: argparse.Namespace) -> int:
    from .bench import bench_config, compare, run
    from .tracker import parse_speedups

    if args.suite:
        return _bench_suite(args)
    config = bench_config(args.preset or "nano", args.frames, args.ego_size, args.exo_size, args.protocol,
                          args.checkpoint, args.threads, args.targets, device=args.device, dtype=args.dtype,
                          compression=args.compression, capacity=args.capacity, bank_policy=args.bank_policy,
                          source_lost=args.source_lost, compile=args.compile, speedups=parse_speedups(args.speedups))
    _print_json((compare if args.compare else run)(config, progress=not args.quiet))
    return 0


def _bench_suite(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .bench_suite import DRY_RUN, SuiteConfig, gpu_suite

    suite = DRY_RUN if args.dry_run else SuiteConfig()
    suite = replace(suite, preset=args.preset or suite.preset, checkpoint=args.checkpoint)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    _print_json(gpu_suite(suite))
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="streaming latency and memory of the tracker (JSON)")
    p.add_argument("--preset", help="default: nano (b+ for --suite gpu)")
    p.add_argument("--checkpoint", help="checkpoint file; default: random weights of the preset")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--ego-size", type=camera_size, default=(480, 640), help="WIDTHxHEIGHT")
    p.add_argument("--exo-size", type=camera_size, default=(480, 640), help="WIDTHxHEIGHT")
    p.add_argument("--protocol", choices=("robot", "benchmark"), default="benchmark",
                   help="robot: target given once and tracked; benchmark: per-frame source mask")
    p.add_argument("--targets", type=target_counts, default=(1,),
                   help="objects followed at once; several counts (1,2,4,8) are measured side by side, "
                        "taking turns on every pair")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--suite", choices=("gpu",),
                   help="the prepared GPU check (pairs/s fp32/bf16/bf16+compile, bf16 parity, memory over "
                        "3000 pairs, 30 Hz 1280x720 latency); other stream options are ignored")
    p.add_argument("--dry-run", action="store_true", help="--suite on the CPU with a tiny model (CI)")
    p.add_argument("--compare", choices=("fp32",),
                   help="also run the fp32 reference (official numerics) on the same stream: speed-up, "
                        "max |logit| difference, mask agreement")
    _add_tracker_options(p)
    p.set_defaults(handler=_bench)


def _evaluate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .evaluate import CopySourceBox, TrackerPredictor, evaluate
    from .tracker import CorrespondenceTracker

    if args.baseline == "copy-box":
        if args.prompt != "mask":
            raise InputError(f"--prompt {args.prompt} with --baseline copy-box; the baseline takes the GT mask "
                             "(expected --prompt mask, the default)")
        predictor_for = lambda seq: CopySourceBox()  # noqa: E731
    else:
        model, base = _tracker_for(args)
        source_view = "ego" if args.direction == "ego2exo" else "exo"

        def predictor_for(seq):
            # The official protocol normalises pointer distances by the sequence length (max 16).
            config = replace(base, pointer_frames=min(16, len(seq.frames))) if args.protocol == "official" else base
            return TrackerPredictor(CorrespondenceTracker(model, config), source_view, args.protocol, args.prompt)

    summary = evaluate(args.root, predictor_for, args.out, args.direction, args.protocol, args.takes,
                       args.max_frames, plots=not args.no_plots, score_size=args.score_size, prompt=args.prompt,
                       gt_resize=args.gt_resize)
    _print_json(summary["total"])
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score the tracker on processed takes (EgoExo4D layout)")
    p.add_argument("root", help="folder of processed takes (<take>/annotation.json, <take>/<cam>/<frame>.jpg)")
    p.add_argument("--out", required=True, help="output folder (predictions.json, metrics.json, PNGs)")
    p.add_argument("--checkpoint", help="checkpoint file; default: random weights of --preset")
    p.add_argument("--config", help="sam2-format model YAML, for checkpoints of a non-preset model")
    p.add_argument("--preset", default="nano")
    p.add_argument("--direction", choices=("ego2exo", "exo2ego"), default="ego2exo")
    p.add_argument("--protocol", choices=("official", "robot"), default="official")
    p.add_argument("--prompt", choices=("mask", "box", "click"), default="mask",
                   help="robot protocol: mark the target with its GT mask, its box or one click at its centre")
    p.add_argument("--baseline", choices=("copy-box",), help="score a baseline instead of the model")
    p.add_argument("--takes", nargs="*", help="only these take folders")
    p.add_argument("--max-frames", type=int, help="at most this many frames per sequence")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--score-size", type=score_size, metavar="N|challenge",
                   help="write and score NxN masks as LM-EEC's tool and compute_metrics.py do (480), or "
                        "'challenge': aspect kept, long side 480, as the EgoExo4D challenge scorer; "
                        "default: the target image's size")
    p.add_argument("--gt-resize", choices=("bilinear", "nearest"),
                   help="how GT masks reach the camera or square size: bilinear (default; torchvision's resize "
                        "cast to bool, LM-EEC's hint) or nearest (OpenCV)")
    _add_tracker_options(p)
    p.set_defaults(handler=_evaluate)


def _compare(args: argparse.Namespace) -> int:
    from .compare import compare, load_evaluation

    _print_json(compare(load_evaluation(args.base), load_evaluation(args.other), args.resamples, args.level,
                        args.seed))
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="paired bootstrap comparison of two `lmeec evaluate` outputs (JSON)")
    p.add_argument("base", help="evaluation folder (or metrics.json) of the reference model")
    p.add_argument("other", help="evaluation folder (or metrics.json) of the model compared with it")
    p.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples of the sequences")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the interval")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_compare)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .train import add_train_arguments, main_train

    p = sub.add_parser("train", help="train or fine-tune LM-EEC (synthetic scenes or processed takes)")
    add_train_arguments(p)
    p.set_defaults(handler=main_train)


COMMANDS = [_add_parity, _add_bench, _add_evaluate, _add_evaluate_bag, _add_compare, _add_checkpoint, _add_train]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmeec", description="LM-EEC ego-exo correspondence tools")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except LmeecError as err:
        print(f"lmeec {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
