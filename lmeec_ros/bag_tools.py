"""`lmeec_bag`: replay a bag into the node, record its results, score them; for machines without `ros2 bag`.

    lmeec_bag replay scene/ --lockstep --set-target ego --record results/   # node running elsewhere
    lmeec_bag replay scene/ --lockstep --set-target ego --retarget 40:ego:box:4 --record results/
    lmeec_bag record results/ --duration 60                                  # while something else plays
    lmeec_bag score results/ --gt scene/                                     # metrics JSON
    lmeec_bag score results/ --gt scene/ --set-target ego --retarget 40:ego:box:4   # per target

The commands join the ROS graph of the environment (ROS_DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE,
FASTDDS_DEFAULT_PROFILES_FILE), like any ROS tool; start the node with `-p use_sim_time:=true` to
follow the replayed /clock.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from lmeec_core.bag_eval import BagTopics
from lmeec_core.errors import LmeecError
from lmeec_core.target_schedule import TargetChange
from lmeec_ros.bag_record import OutputRecorder, output_topics
from lmeec_ros.bag_replay import BagPlayer, ReplayOptions, TargetsFromGroundTruth
from lmeec_ros.bag_score import score_results
from lmeec_ros.shutdown import stop_on_signals

DISCOVERY_TIMEOUT_S = 60.0


class RosSession:
    """A private rclpy context whose node spins in a background thread.

    The calling thread is then free to block (pacing a replay, waiting for a result, calling a
    service) while subscriptions and service answers are handled.
    """

    def __init__(self, name: str, domain_id: int | None = None) -> None:
        self.context = Context()
        # args=[]: this program's own arguments (e.g. --remap A:=B) are not ROS arguments for rcl.
        # No rclpy signal handlers: `stop_on_signals` turns SIGINT/SIGTERM into KeyboardInterrupt,
        # which every command handles by closing its bag and this session in order.
        rclpy.init(args=[], context=self.context, domain_id=domain_id,
                   signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._spin, name=f"{name}-spin", daemon=True)
        self._spinner.start()

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except ExternalShutdownException:  # SIGINT/SIGTERM shut the context down
            pass

    def close(self) -> None:
        self._executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._spinner.join(timeout=5.0)

    def __enter__(self) -> RosSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def replay(session: RosSession, bag: Path, options: ReplayOptions, target_view: str | None = None,
           node_name: str = "/lmeec", record: Path | None = None, storage: str = "mcap",
           wait_s: float = DISCOVERY_TIMEOUT_S, retargets: Sequence[TargetChange] = ()) -> dict[str, Any]:
    """Replay `bag` into the node, optionally marking targets from GT and recording the results.

    `target_view` marks the room's target with its GT mask in that view on its first visible pair;
    `retargets` are the later changes, made in order (see `lmeec_core.target_schedule`): each stops
    the target before it (~/remove_target) and marks its object as a new target.
    The figures hold `target` (the first change) and, with retargets, `retargets`.
    """
    changes = schedule(target_view, retargets)
    setter = (TargetsFromGroundTruth(session.node, bag, changes, f"{node_name}/set_target", options.topics)
              if changes else None)
    player = BagPlayer(session.node, bag, options, on_pair=setter or (lambda pair, republish: None))
    recorder = OutputRecorder(session.node, record, output_topics(node_name), storage) if record else None
    try:
        if wait_s > 0 and not player.wait_for_node(wait_s):
            raise TimeoutError(f"no node subscribed to the camera topics or published {options.results_topic} "
                               f"within {wait_s} s")
        if recorder is not None:
            recorder.wait_for_publishers(wait_s)
        stats = player.run().as_dict()
        if recorder is not None:
            recorder.settle()
    finally:
        recorded = recorder.close() if recorder is not None else None
        player.close()
        if setter is not None:
            setter.close()
    if setter is not None:
        first, *later = setter.summary()
        stats["target"] = first
        if later:
            stats["retargets"] = later
    if recorded is not None:
        stats["recorded"] = {"bag": str(record), "messages": recorded}
    return stats


def schedule(target_view: str | None, retargets: Sequence[TargetChange] = ()) -> list[TargetChange]:
    """The target changes of `--set-target VIEW` (the room's target, by its GT mask) and `--retarget`."""
    return ([TargetChange(target_view)] if target_view else []) + list(retargets)


def _remap(item: str) -> tuple[str, str]:
    """'FROM:=TO' -> (FROM, TO), as ROS remapping rules are written."""
    source, sep, target = item.partition(":=")
    if not sep or not source or not target:
        raise argparse.ArgumentTypeError(f"remap {item!r}; expected FROM:=TO")
    return source, target


def _topics(args: argparse.Namespace) -> BagTopics:
    return BagTopics(args.ego_topic, args.exo_topic, args.ego_gt_topic, args.exo_gt_topic,
                     args.ego_instances_topic, args.exo_instances_topic)


def _replay_command(args: argparse.Namespace) -> dict[str, Any]:
    options = ReplayOptions(topics=_topics(args), remap=dict(args.remap), rate=args.rate,
                            lockstep=args.lockstep, clock=not args.no_clock,
                            results_topic=f"{args.node.rstrip('/')}/correspondence",
                            result_timeout_s=args.result_timeout)
    with RosSession("lmeec_bag_replay") as session:
        return replay(session, Path(args.bag), options, args.set_target, args.node,
                      Path(args.record) if args.record else None, args.storage, args.wait, args.retarget)


def _record_command(args: argparse.Namespace) -> dict[str, Any]:
    """Record until Ctrl-C or the duration; says on stderr when every topic has a publisher."""
    topics = output_topics(args.node)
    with RosSession("lmeec_bag_record") as session:
        recorder = OutputRecorder(session.node, args.out, topics, args.storage)
        print(f"lmeec_bag record: waiting for publishers of {', '.join(topics)}", file=sys.stderr, flush=True)
        announced = False
        try:
            deadline = time.monotonic() + args.duration if args.duration else float("inf")
            while time.monotonic() < deadline and session.context.ok():
                if not announced and recorder.matched():
                    print(f"lmeec_bag record: recording to {args.out}", file=sys.stderr, flush=True)
                    announced = True
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        finally:
            counts = recorder.close()
    return {"bag": args.out, "messages": counts}


def _score_command(args: argparse.Namespace) -> dict[str, Any]:
    figures = score_results(args.results, args.gt, f"{args.node.rstrip('/')}/correspondence", _topics(args),
                            schedule=schedule(args.set_target, args.retarget))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


def _add_node_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", default="/lmeec", help="full name of the lmeec node (default /lmeec)")


def _add_topic_options(p: argparse.ArgumentParser) -> None:
    defaults = BagTopics()
    p.add_argument("--ego-topic", default=defaults.ego_image, help="ego image topic in the bag")
    p.add_argument("--exo-topic", default=defaults.exo_image, help="exo image topic in the bag")
    p.add_argument("--ego-gt-topic", default=defaults.ego_mask, help="ego GT mask topic (the target) in the bag")
    p.add_argument("--exo-gt-topic", default=defaults.exo_mask, help="exo GT mask topic (the target) in the bag")
    p.add_argument("--ego-instances-topic", default=defaults.ego_instances,
                   help="ego GT instance-id topic in the bag (for --retarget of other objects)")
    p.add_argument("--exo-instances-topic", default=defaults.exo_instances,
                   help="exo GT instance-id topic in the bag")


def _target_change(text: str) -> TargetChange:
    try:
        return TargetChange.parse(text)
    except LmeecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


SCHEDULE_HELP = {
    "replay": ("mark the room's target with its GT mask in this view on its first visible pair",
               "then mark OBJECT (an instance id of the GT instance topics, or 'target') with its GT mask, box "
               "or click (PROMPT: mask|box|click) in VIEW, on the first pair from index PAIR on where it is "
               "visible there, in place of the target before (removed first); repeat for more, in order "
               "(e.g. 40:ego:box:4)"),
    "score": ("score per target: the replay marked the room's target first (--set-target of the replay)",
              "score per target: a later change of the replay (its --retarget); the k-th new target id "
              "of the results is the k-th change"),
}


def _add_schedule_options(p: argparse.ArgumentParser, command: str) -> None:
    set_target, retarget = SCHEDULE_HELP[command]
    p.add_argument("--set-target", choices=("ego", "exo"), help=set_target)
    p.add_argument("--retarget", action="append", default=[], type=_target_change, metavar="PAIR:VIEW:PROMPT:OBJECT",
                   help=retarget)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmeec_bag", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("replay", help="publish a bag's camera topics (and /clock) into the node")
    p.add_argument("bag", help="rosbag2 folder, or its .mcap/.db3 file")
    p.add_argument("--rate", type=float, default=1.0, help="bag seconds per wall second (default 1)")
    p.add_argument("--lockstep", action="store_true",
                   help="once results flow, publish each pair only after the previous one's result")
    _add_schedule_options(p, "replay")
    p.add_argument("--record", help="also record the node's results to this new bag")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--remap", action="append", default=[], type=_remap, metavar="FROM:=TO",
                   help="publish a bag topic elsewhere")
    p.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    p.add_argument("--wait", type=float, default=DISCOVERY_TIMEOUT_S,
                   help="seconds to wait for the node's subscriptions first (0: start at once)")
    p.add_argument("--result-timeout", type=float, default=30.0, help="lockstep: longest wait for one result")
    _add_node_option(p)
    _add_topic_options(p)
    p.set_defaults(handler=_replay_command)

    p = sub.add_parser("record", help="record the node's results (~/correspondence, ~/mask, ~/source_mask)")
    p.add_argument("out", help="new bag folder")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--duration", type=float, help="seconds to record (default: until Ctrl-C)")
    _add_node_option(p)
    p.set_defaults(handler=_record_command)

    p = sub.add_parser("score", help="score recorded results against a bag's GT mask topics")
    p.add_argument("results", help="bag recorded by `record` or `replay --record`")
    p.add_argument("--gt", required=True, help="the bag that was replayed (with GT mask topics)")
    p.add_argument("--json", help="also write the figures to this file")
    _add_schedule_options(p, "score")
    _add_node_option(p)
    _add_topic_options(p)
    p.set_defaults(handler=_score_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop_on_signals()
    try:
        print(json.dumps(args.handler(args), indent=2))
    except (LmeecError, OSError, RuntimeError) as err:  # OSError: missing files, timeouts
        print(f"lmeec_bag {args.command}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
