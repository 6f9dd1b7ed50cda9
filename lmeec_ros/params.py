"""Every parameter of the `lmeec` node, in one table: name, default, description, constraints.

The node declares its parameters from `Settings`, reads them back into one, checks changes with
`check_value` and gives each value its declared type with `coerce`. config/lmeec.yaml and the
docs/ros.md table are generated from it (`python -m lmeec_ros.params yaml|markdown`) and tests keep
them equal, so a parameter is defined in exactly one place.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Union

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

Value = Union[bool, int, float, str]
_ROS_TYPE_NAMES = {bool: "bool", int: "integer", float: "double", str: "string"}


@dataclass(frozen=True)
class Spec:
    """How a parameter may be set, besides its type (which its default fixes)."""
    description: str
    choices: tuple[str, ...] = ()
    pattern: str = ""                  # regular expression a string must match
    minimum: float | None = None
    maximum: float | None = None
    dynamic: bool = False              # may change while the node is configured
    aliases: tuple[tuple[str, str], ...] = ()   # (older spelling, the choice it means): still accepted

    def constraints(self) -> str:
        """Human-readable constraints, for the descriptor and the docs."""
        if self.choices:
            return "one of: " + ", ".join(repr(c) for c in self.choices) + "".join(
                f"; {old!r} is read as {new!r}" for old, new in self.aliases)
        if self.pattern:
            return f"matches {self.pattern}"
        bounds = []
        if self.minimum is not None:
            bounds.append(f">= {self.minimum:g}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum:g}")
        return " and ".join(bounds)


def _param(default: Value, description: str, **spec: Any) -> Any:
    return field(default=default, metadata={"spec": Spec(description, **spec)})


@dataclass(frozen=True)
class Settings:
    """Parameter values of one configuration of the node (read at configure)."""

    ego_topic: str = _param("ego/image_raw", "Ego (head) camera image topic, relative to the node's namespace unless absolute.")
    exo_topic: str = _param("exo/image_raw", "Exo (external) camera image topic.")
    compressed: bool = _param(False, "Subscribe to sensor_msgs/CompressedImage on <topic>/compressed (image_transport naming) instead of sensor_msgs/Image on <topic>; needs OpenCV.")
    reliability: str = _param("best_effort", "Reliability of the image subscriptions (volatile, history depth queue_size): best_effort matches camera drivers' sensor-data QoS and never stalls a publisher.", choices=("best_effort", "reliable"))
    slop: float = _param(0.05, "Largest stamp difference (s) between an ego and an exo image for them to form a pair (exclusive bound, as message_filters).", minimum=0.0)
    queue_size: int = _param(10, "Images kept per camera while waiting for a partner (ApproximateTimeSynchronizer queue size).", minimum=1)
    history_size: int = _param(30, "Recent frame pairs kept so that a set_target stamp can name one of them.", minimum=1)
    max_rate_hz: float = _param(0.0, "Most pairs processed per second; 0 processes as fast as the model allows. Pairs in excess are dropped (counted), never queued.", minimum=0.0, dynamic=True)
    max_image_pixels: int = _param(16_777_216, "Largest image (width x height) processed, and largest set_target mask: a larger camera image is refused, counted (oversized_images) and logged, a larger mask refused. The default passes 4K (3840x2160) and 4096x4096.", minimum=64, dynamic=True)
    ego_frame_id: str = _param("", "frame_id written in outputs about the ego camera; empty keeps the incoming image's.")
    exo_frame_id: str = _param("", "frame_id written in outputs about the exo camera; empty keeps the incoming image's.")
    checkpoint: str = _param("", "Model checkpoint file (official LM-EEC, SAM 2.1 or lmeec). Empty runs a randomly initialised `preset` (tests and plumbing only: its masks are meaningless).")
    preset: str = _param("nano", "Model size; auto takes it from the checkpoint (nano without one).", choices=("auto", "nano", "t", "s", "b+"), aliases=(("", "auto"),))
    device: str = _param("auto", "Torch device: auto (cuda when available, else cpu), cpu, cuda or cuda:N.", pattern=r"auto|cpu|cuda(:\d+)?")
    dtype: str = _param("fp32", "Inference precision; bf16 runs under autocast (CUDA, and CPUs that support it).", choices=("fp32", "bf16"))
    compile: bool = _param(False, "torch.compile the model at configure (slower start, faster steps).")
    compression: str = _param("merge", "Memory-bank compression when full: merge (the paper), drop (the official code) or fifo.", choices=("merge", "drop", "fifo"))
    capacity: int = _param(6, "Entries per memory bank (M in the paper).", minimum=1)
    bank_policy: str = _param("fill", "When a frame enters the memory banks: fill (every processed frame, the banks refill after a gap; for long streams) or official (the official code's index window and single compression, to reproduce its numbers).", choices=("fill", "official"))
    source_lost: str = _param("follow", "When source tracking loses the target (the marking camera looks away): follow it on in the other camera from the last view the marking camera had and the memory banks, or skip the pair (empty result, as the official protocol).", choices=("follow", "skip"))
    banks: str = _param("dual", "Memory banks used: both views (dual), the source view's only or the target view's only.", choices=("dual", "source", "target"))
    visibility_threshold: float = _param(0.5, "Score at or above which the target counts as visible in the other camera.", minimum=0.0, maximum=1.0)
    max_targets: int = _param(8, "Most targets followed at once; a set_target that would add one more is refused. Each image is encoded once per pair whatever the number.", minimum=1)
    max_prompt_overlap: float = _param(0.5, "A set_target prompt whose mask overlaps another target's current mask in that camera with IoU above this is refused (re-target that id instead); 1 accepts any overlap.", minimum=0.0, maximum=1.0)
    max_time_gap: float = _param(2.0, "A forward stamp jump larger than this (s) resets the temporal memory (the prompt is kept). Stamps going backwards always reset it.", minimum=0.001)
    publish_overlay: bool = _param(False, "Also publish ~/overlay: the target image with the mask and box drawn (costs a copy per frame).")
    input_timeout: float = _param(2.0, "Seconds without images from a camera (counted from activation), or with use_sim_time without /clock advancing, before diagnostics warn.", minimum=0.0, dynamic=True)
    diagnostics_period: float = _param(1.0, "Seconds between /diagnostics messages (read at start-up).", minimum=0.01)
    autostart: bool = _param(True, "Configure and activate on start-up; false waits for lifecycle transitions.")


def specs() -> dict[str, tuple[Value, Spec]]:
    """name -> (default, spec), in declaration order."""
    return {f.name: (f.default, f.metadata["spec"]) for f in dataclasses.fields(Settings)}


def coerce(name: str, value: Value) -> Value:
    """`value` as the declared type where that loses nothing: an integer where a double is declared
    (`ros2 param set /lmeec slop 1`, or `slop: 1` in a file) becomes that double."""
    expected = type(specs()[name][0])
    return float(value) if expected is float and type(value) is int else value


def check_value(name: str, value: Value) -> str:
    """Why `value` is not acceptable for parameter `name`, or "" when it is."""
    default, spec = specs()[name]
    expected = type(default)
    value = coerce(name, value)
    if type(value) is not expected:
        return (f"{name} must be of type {_ROS_TYPE_NAMES[expected]}, got {value!r} "
                f"({_ROS_TYPE_NAMES.get(type(value), type(value).__name__)})")
    if spec.choices and value not in spec.choices and value not in dict(spec.aliases):
        return f"{name} must be {spec.constraints()}, got {value!r}"
    if spec.pattern and not re.fullmatch(spec.pattern, value):
        return f"{name} must match {spec.pattern}, got {value!r}"
    if spec.minimum is not None and value < spec.minimum:
        return f"{name} must be >= {spec.minimum:g}, got {value!r}"
    if spec.maximum is not None and value > spec.maximum:
        return f"{name} must be <= {spec.maximum:g}, got {value!r}"
    return ""


def declare(node: Node) -> None:
    """Declare every parameter on `node` with its default, description and constraints.

    Types and constraints are enforced by `check_value` (at configure and on every change) rather
    than by rclpy, so that a bad value in a parameter file fails configure with a reason instead of
    killing the process at declaration. An integer given for a double is stored as that double here
    (a parameter file) and by `coerce_changes` (later changes), so it reads back as a double.
    """
    declared = node.declare_parameters("", [
        (name, default, ParameterDescriptor(
            name=name, description=spec.description, additional_constraints=spec.constraints(),
            dynamic_typing=True))
        for name, (default, spec) in specs().items()
    ])
    retyped = [new for new, old in zip(coerce_changes(declared), declared)
               if type(new.value) is not type(old.value)]
    if retyped:
        node.set_parameters(retyped)


def coerce_changes(changes: list[Parameter]) -> list[Parameter]:
    """A pre-set parameters callback (rclpy of Iron and later): each change with the declared type."""
    return [Parameter(p.name, value=coerce(p.name, p.value)) if p.name in specs() else p for p in changes]


def read(node: Node) -> Settings:
    """Current values of every parameter; raises ValueError naming each unacceptable one."""
    values = {name: node.get_parameter(name).value for name in specs()}
    problems = [p for p in (check_value(n, v) for n, v in values.items()) if p]
    if problems:
        raise ValueError("; ".join(problems))
    return Settings(**{name: setting(name, value) for name, value in values.items()})


def setting(name: str, value: Value) -> Value:
    """What `Settings` holds for an accepted value: the declared type, and the current spelling of
    an older one (preset '' -> 'auto')."""
    value = coerce(name, value)
    return dict(specs()[name][1].aliases).get(value, value)


def markdown_table() -> str:
    """The parameters as a Markdown table (docs/ros.md embeds it; a test keeps them equal)."""
    rows = ["| Parameter | Type | Default | Description |", "|---|---|---|---|"]
    for name, (default, spec) in specs().items():
        notes = spec.description
        if spec.constraints():
            notes += f" ({spec.constraints()})"
        if spec.dynamic:
            notes += " Can be changed at run time."
        cells = (f"`{name}`", _ROS_TYPE_NAMES[type(default)], f"`{json.dumps(default)}`", notes)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


_SECTIONS = {"ego_topic": "Inputs", "checkpoint": "Model and tracker", "publish_overlay": "Outputs and health"}


def config_yaml() -> str:
    """config/lmeec.yaml: every parameter at its default, with its description as a comment."""
    lines = ["# Parameters of the lmeec node, at their defaults. Generated by `python -m lmeec_ros.params yaml`",
             "# from lmeec_ros/params.py; copy it to change values.",
             "#   ros2 launch lmeec_ros lmeec.launch.py config:=my_lmeec.yaml",
             "#   lmeec_node --ros-args --params-file config/lmeec.yaml",
             "# `/**` applies it to the node under any name and namespace.",
             "/**:",
             "  ros__parameters:"]
    for name, (default, spec) in specs().items():
        if name in _SECTIONS:
            lines += ["", f"    # ---- {_SECTIONS[name]} ----"]
        text = spec.description + (f" ({spec.constraints()})" if spec.constraints() else "")
        lines += [f"    # {line}" for line in textwrap.wrap(text, 96, break_on_hyphens=False)]
        lines.append(f"    {name}: {json.dumps(default)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print the parameter table of the lmeec node.")
    parser.add_argument("format", choices=("markdown", "yaml"))
    print(markdown_table() if parser.parse_args().format == "markdown" else config_yaml(), end="")
