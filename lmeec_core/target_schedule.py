"""Which object is the target when, in a replayed recording: a schedule of target changes, the prompts
they give (made from ground truth, as a person would mark the object), and scores per target.

A change names the object by the bag's ground truth: the room's target (the GT mask topics, which
every recording has) or any object by its instance id (the GT instance topics), the view it is marked
in, and the prompt: the object's mask, its box, or a click near its middle. A change is due from a
pair on and is made on the first pair from there where the object is visible in that view, so one
schedule fits recordings of any length; changes are made in their order. The ROS replay
(`lmeec_bag replay --set-target/--retarget`) calls ~/set_target for each.

Results carry the id of the target they belong to (the node's `target_id`, also in each set_target
answer); `TargetScores` scores each result against the GT of its own target's object, per target and
in total.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .bag_eval import BagScore, ObjectTruth
from .errors import InputError
from .evaluate import PROMPTS, prompt_from_mask
from .metrics import MetricAccumulator
from .tracker import VIEWS

TARGET = "target"  # how a schedule names the room's target (the GT mask topics)


@dataclass(frozen=True)
class TargetChange:
    """One ~/set_target of a replay: from which pair on, in which view, with which prompt, of which object."""

    view: str
    prompt: str = "mask"
    instance: int | None = None  # None: the room's target (GT mask topics); else an instance id
    from_pair: int = 0  # made on the first pair from this index on where the object is visible in `view`

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise InputError(f"target change in view {self.view!r}; expected one of {VIEWS}")
        if self.prompt not in PROMPTS:
            raise InputError(f"target change with prompt {self.prompt!r}; expected one of {PROMPTS}")
        if self.instance is not None and self.instance < 1:
            raise InputError(f"target change of instance {self.instance}; expected an instance id >= 1 "
                             f"(0 is the background) or {TARGET!r}")
        if self.from_pair < 0:
            raise InputError(f"target change from pair {self.from_pair}; expected a pair index >= 0")

    @classmethod
    def parse(cls, text: str) -> TargetChange:
        """'PAIR:VIEW:PROMPT:OBJECT', e.g. '40:ego:box:4' (OBJECT: an instance id or 'target')."""
        parts = text.split(":")
        if len(parts) != 4:
            raise InputError(f"target change {text!r}; expected PAIR:VIEW:PROMPT:OBJECT, e.g. 40:ego:box:4 "
                             f"(PROMPT one of {PROMPTS}, OBJECT an instance id or {TARGET!r})")
        pair, view, prompt, name = parts
        try:
            from_pair, instance = int(pair), None if name == TARGET else int(name)
        except ValueError:
            raise InputError(f"target change {text!r}: PAIR must be an integer and OBJECT an instance id or "
                             f"{TARGET!r}") from None
        return cls(view, prompt, instance, from_pair)

    @property
    def object(self) -> str:
        """The object, as a schedule writes it: 'target' or the instance id."""
        return TARGET if self.instance is None else str(self.instance)

    def __str__(self) -> str:
        return f"{self.from_pair}:{self.view}:{self.prompt}:{self.object}"


@dataclass(frozen=True)
class Prompted:
    """A change made due on a pair: the pair, the stamp of its `view` image, and set_target's prompt."""

    change: TargetChange
    pair: int
    stamp_ns: int
    prompt: dict[str, Any]  # CorrespondenceTracker.set_target keyword arguments (mask, box or points)


class Schedule:
    """Walks the pairs of a replay and says when the next change is due, with its prompt from the GT.
    A bag without the GT topics a change needs is refused at once, not when the change is due."""

    def __init__(self, changes: Iterable[TargetChange], truth: ObjectTruth) -> None:
        self.changes = tuple(changes)
        truth.require(change.instance for change in self.changes)
        self._truth = truth
        self._next = 0

    @property
    def done(self) -> bool:
        return self._next >= len(self.changes)

    def due(self, index: int, stamps: dict[str, int]) -> Prompted | None:
        """The next change, when it is due on pair `index` (`stamps`: view -> image stamp) and its object is
        visible there; it then counts as made."""
        if self.done or index < self.changes[self._next].from_pair:
            return None
        change = self.changes[self._next]
        mask = self._truth.get(change.view, stamps[change.view], change.instance)
        if mask is None or not mask.any():
            return None
        self._next += 1
        return Prompted(change, index, stamps[change.view], prompt_from_mask(mask, change.prompt))


def prompt_as_json(prompt: dict[str, Any]) -> dict[str, Any]:
    """A prompt as JSON: the box or points given, or the mask's size."""
    if "mask" in prompt:
        return {"mask_px": int(np.count_nonzero(prompt["mask"]))}
    if "box" in prompt:
        return {"box": [int(v) for v in prompt["box"]]}
    return {"points": [[int(x), int(y)] for x, y in prompt["points"]]}


class TargetScores:
    """EgoExo4D metrics per target: each result against the GT of the object its target marked.

    `targets` maps the target ids known in advance (from the set_target answers) to their changes;
    a target id not among them takes the next of `upcoming` (the k-th new id the k-th change), which
    is how results recorded without the answers are scored.
    """

    def __init__(self, truth: ObjectTruth, targets: dict[int, TargetChange] | None = None,
                 upcoming: Sequence[TargetChange] = ()) -> None:
        self._truth = truth
        self._changes = dict(targets or {})
        self._upcoming = list(upcoming)
        self._scores: dict[int, BagScore] = {}

    def add(self, target_id: int, view: str, stamp_ns: int, mask: np.ndarray) -> None:
        if target_id not in self._changes:
            if not self._upcoming:
                raise InputError(f"a result of target {target_id}, which the schedule does not name (it names "
                                 f"{len(self._changes)} targets: {self._described()}); expected one change "
                                 "per set_target of the replay")
            self._changes[target_id] = self._upcoming.pop(0)
        score = self._scores.get(target_id)
        if score is None:
            score = self._scores[target_id] = BagScore(self._truth.of(self._changes[target_id].instance))
        score.add(view, stamp_ns, mask)

    def _described(self) -> str:
        return ", ".join(f"{i}: {c}" for i, c in self._changes.items()) or "none"

    def summary(self) -> dict[str, Any]:
        """{"metrics": totals over every result, "targets": per target id, in order: change and metrics}."""
        total, without_gt = MetricAccumulator(), 0
        targets = []
        for target_id, change in self._changes.items():
            score = self._scores.get(target_id)
            if score is None:
                score = BagScore(self._truth.of(change.instance))
            total.merge(score.metrics)
            without_gt += score.without_gt
            targets.append({"target_id": target_id, "view": change.view, "prompt": change.prompt,
                            "object": change.object, "metrics": score.summary()})
        return {"metrics": {**total.summary(), "results_without_gt": without_gt}, "targets": targets}
