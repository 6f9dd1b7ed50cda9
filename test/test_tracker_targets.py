"""Several targets in one tracker: independence of their results, stable ids, refusals, one image pass.

Independence is checked against trackers that follow one target alone: the same model in eval mode
on the same frames must give each target the same result whether or not other targets share its
batch, so batching never mixes rows. Random-weight `nano` with per-frame source masks (every target
is processed on every pair) checks the numbers; the shipped checkpoint checks source tracking.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lmeec_core.data.synthetic import SceneConfig, render_scene
import lmeec_core.model.lmeec as lmeec_model
from lmeec_core.errors import InputError, StateError, TargetLimitError, TargetOverlapError, UnknownTargetError
from lmeec_core.tracker import CorrespondenceTracker, TrackerConfig

# visibility_threshold 0: every processed target gets a mask, so masks compare even with random weights.
CONFIG = TrackerConfig(compression="merge", capacity=3, visibility_threshold=0.0)
SCORE_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def scene():
    return list(render_scene(SceneConfig(seed=3, num_frames=8, ego_size=(96, 112), exo_size=(120, 160))))


# Objects of seed 3 that show on frame 0: (instance, view of its prompt).
A, B, C, D, E = (1, "ego"), (3, "ego"), (8, "exo"), (2, "ego"), (4, "ego")


def _mask(frame, obj):
    instance, view = obj
    return (frame.ego_instances if view == "ego" else frame.exo_instances) == instance


def _add(tracker, frame, obj, **kwargs):
    return tracker.add_target(obj[1], frame.ego_image, frame.exo_image, mask=_mask(frame, obj), **kwargs)


def _source_masks(frame, objects):
    """Per-frame source masks of `objects` ({target id: object})."""
    return {target_id: _mask(frame, obj) for target_id, obj in objects.items()}


def _assert_same(result, alone):
    assert (result.frame_index, result.source_view, result.skipped) == (alone.frame_index, alone.source_view,
                                                                         alone.skipped)
    assert abs(result.score - alone.score) <= SCORE_TOLERANCE
    assert np.array_equal(result.mask, alone.mask) and np.array_equal(result.source_mask, alone.source_mask)


def test_each_target_gets_what_it_would_get_alone(nano_model, scene):
    """Four targets, both source views; target 2 re-targeted on frame 2, so from then on the ego-source
    batch holds banks of lengths long, short, long: grouped by length and put back in id order."""
    schedule = {0: [("A", A), ("B", B), ("D", D), ("C", C)], 2: [("B", E)]}
    together = CorrespondenceTracker(nano_model, CONFIG)
    alone = {name: CorrespondenceTracker(nano_model, CONFIG) for name in "ABCD"}
    ids, objects, ego_bank_sizes = {}, {}, []
    for frame in scene:
        for name, obj in schedule.get(frame.index, []):
            target_id, first = _add(together, frame, obj, target_id=ids.get(name))
            assert ids.setdefault(name, target_id) == target_id  # re-targeting keeps the id
            objects[target_id] = obj
            _assert_same(first, alone[name].set_target(obj[1], frame.ego_image, frame.exo_image,
                                                       mask=_mask(frame, obj)))
        results = together.step_all(frame.ego_image, frame.exo_image, source_masks=_source_masks(frame, objects))
        assert list(results) == [1, 2, 3, 4]
        for name, target_id in ids.items():
            own = alone[name].step(frame.ego_image, frame.exo_image, source_mask=_mask(frame, objects[target_id]))
            assert results[target_id].target_id == target_id
            _assert_same(results[target_id], own)
        ego_bank_sizes.append([s.memory["source_bank"] for s in together.targets().values() if s.source_view == "ego"])
    assert [s.source_view for s in together.targets().values()] == ["ego", "ego", "ego", "exo"]
    assert ego_bank_sizes[3] == [3, 2, 3]  # lengths long, short, long in one batch
    masks = [results[i].mask for i in (1, 2, 3)]
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])


def test_removing_a_target_leaves_the_other_unchanged(shipped_model, scene):
    """Robot protocol (source tracking batched too): target A with B present, then B removed, against A alone."""
    config = TrackerConfig(compression="merge", capacity=3)
    both, alone = CorrespondenceTracker(shipped_model, config), CorrespondenceTracker(shipped_model, config)
    a, _ = _add(both, scene[0], A)
    _add(alone, scene[0], A)
    b, _ = _add(both, scene[1], B)  # a frame later: source tracking memories of two lengths
    for frame in scene[1:]:
        if frame.index == 5:
            both.remove_target(b)
        results = both.step_all(frame.ego_image, frame.exo_image)
        own = alone.step(frame.ego_image, frame.exo_image)
        assert (b in results) == (frame.index < 5)
        _assert_same(results[a], own)
        assert not own.skipped and own.source_mask.any()  # the source view is really tracked
    assert both.target_ids == (a,)


def test_a_target_the_source_view_lost_shares_the_batch_with_a_seen_one_unchanged(shipped_model, scene):
    """From pair 4 the ego camera shows a blank wall: A (tracked) is lost there and followed from its last
    source memory, while B (given its mask each pair) is encoded; one batch, each as it would be alone."""
    config = TrackerConfig(compression="merge", capacity=3)
    both = CorrespondenceTracker(shipped_model, config)
    alone = {obj: CorrespondenceTracker(shipped_model, config) for obj in (A, B)}
    a, _ = _add(both, scene[0], A)
    b, _ = _add(both, scene[0], B)
    for obj, tracker in alone.items():
        _add(tracker, scene[0], obj)
    blank = np.full_like(scene[0].ego_image, 128)
    for frame in scene[1:]:
        ego = frame.ego_image if frame.index < 4 else blank
        results = both.step_all(ego, frame.exo_image, source_masks={b: _mask(frame, B)})
        _assert_same(results[a], alone[A].step(ego, frame.exo_image))
        _assert_same(results[b], alone[B].step(ego, frame.exo_image, source_mask=_mask(frame, B)))
        assert results[a].source_mask.any() == (frame.index < 4) and not results[a].skipped


def test_ids_are_stable_and_never_reused(nano_model, scene):
    tracker, f = CorrespondenceTracker(nano_model, CONFIG), scene[0]
    assert [_add(tracker, f, obj)[0] for obj in (A, B)] == [1, 2]
    target_id, result = _add(tracker, f, E, target_id=2)  # re-target: new object, fresh memory, same id
    assert (target_id, result.target_id, result.frame_index) == (2, 2, 0)
    assert np.array_equal(result.source_mask, _mask(f, E))
    tracker.step_all(f.ego_image, f.exo_image)
    tracker.remove_target(1)
    assert _add(tracker, f, C, target_id=0)[0] == 3  # 0 means new; 1 is not given again
    assert tracker.target_ids == (2, 3) and tracker.targets()[2].frame_index == 1
    tracker.clear()
    assert not tracker.has_target and tracker.target_ids == ()
    assert _add(tracker, f, A)[0] == 4
    assert tracker.set_target("ego", f.ego_image, f.exo_image, mask=_mask(f, B)).target_id == 5
    assert tracker.target_ids == (5,) and tracker.target_id == 5  # set_target replaced every target
    # A node building a new tracker (configure after cleanup) goes on from the ids it issued.
    later = CorrespondenceTracker(nano_model, replace(CONFIG, first_target_id=6))
    assert _add(later, f, A)[0] == 6


def test_refusals_name_the_problem_and_change_nothing(nano_model, scene):
    f, later = scene[0], scene[1]
    config = TrackerConfig(compression="merge", capacity=3, visibility_threshold=0.0, max_targets=3)
    tracker, untouched = CorrespondenceTracker(nano_model, config), CorrespondenceTracker(nano_model, config)
    for each in (tracker, untouched):
        _add(each, f, A)
        _add(each, f, C)
    before = tracker.targets()
    refusals = [
        (UnknownTargetError, r"target 7 is unknown; expected one of the current ids \[1, 2\]",
         lambda: _add(tracker, f, B, target_id=7)),
        (UnknownTargetError, "target 7 is unknown", lambda: tracker.remove_target(7)),
        (UnknownTargetError, "target 7 is unknown",
         lambda: tracker.step_all(f.ego_image, f.exo_image, source_masks={7: _mask(f, A)})),
        (TargetOverlapError, r"overlaps target 1's current ego mask \(IoU 1.00 > max_prompt_overlap 0.5\)",
         lambda: _add(tracker, f, A)),
        (TargetOverlapError, "overlaps target 1's current ego mask", lambda: _add(tracker, f, A, target_id=2)),
        (InputError, r"source_masks\[2\] is 50x50",
         lambda: tracker.step_all(f.ego_image, f.exo_image, source_masks={2: np.zeros((50, 50), bool)})),
        (InputError, "expected exactly one of mask, box or points", lambda: tracker.add_target("ego", *_images(f))),
        (StateError, r"step\(\) serves one target but 2 are set \(ids \[1, 2\]\)",
         lambda: tracker.step(f.ego_image, f.exo_image)),
        (StateError, "target_id serves one target", lambda: tracker.target_id),
    ]
    for error, message, call in refusals:
        with pytest.raises(error, match=message):
            call()
        assert tracker.targets() == before, message
    _add(tracker, f, A, target_id=1)  # a target may be re-targeted onto its own object
    _add(untouched, f, A, target_id=1)
    assert _add(tracker, f, B)[0] == 3  # the refused calls used up no id
    _add(untouched, f, B)
    with pytest.raises(TargetLimitError, match=r"3 targets are set \(ids \[1, 2, 3\]\), the maximum"):
        _add(tracker, f, E)
    for frame in (later, scene[2]):
        results = tracker.step_all(*_images(frame), source_masks=_source_masks(frame, {1: A, 2: C, 3: B}))
        expected = untouched.step_all(*_images(frame), source_masks=_source_masks(frame, {1: A, 2: C, 3: B}))
        for target_id in (1, 2, 3):
            _assert_same(results[target_id], expected[target_id])


def test_a_prompt_on_what_another_target_shows_in_that_view_is_refused(shipped_model, scene):
    tracker, f = CorrespondenceTracker(shipped_model, TrackerConfig()), scene[0]
    _, from_exo = _add(tracker, f, C)  # marked in exo: in the ego view it is its correspondence
    assert from_exo.visible and from_exo.mask.any()
    with pytest.raises(TargetOverlapError, match="overlaps target 1's current ego mask"):
        tracker.add_target("ego", *_images(f), mask=from_exo.mask)
    assert tracker.target_ids == (1,)


def _images(frame):
    return frame.ego_image, frame.exo_image


def test_each_image_is_encoded_once_per_pair_and_heads_run_once_per_batch(nano_model, scene, monkeypatch):
    tracker, f = CorrespondenceTracker(nano_model, CONFIG), scene[0]
    objects = {_add(tracker, f, obj)[0]: obj for obj in (A, B, D, C)}  # three from ego, one from exo
    modules = {"image_encoder": nano_model.image_encoder.neck, "memory_encoder": nano_model.memory_encoder,
               "sam_mask_decoder": nano_model.sam_mask_decoder}
    calls = {name: [] for name in modules}   # batch size of each forward call

    def hook(name):
        def record(module, args, kwargs):
            first = args[0] if args else next(iter(kwargs.values()))
            calls[name].append((first[0] if isinstance(first, list) else first).shape[0])
        return record

    handles = [module.register_forward_pre_hook(hook(name), with_kwargs=True) for name, module in modules.items()]
    attention_calls = []   # (query batch, [rows of each memory]) per memory attention call
    attend = lmeec_model.attend_memories

    def counted_attend(attention, curr, curr_pos, memories):
        attention_calls.append((curr.shape[1], [memory.shape[1] for memory, _, _ in memories]))
        return attend(attention, curr, curr_pos, memories)

    monkeypatch.setattr(lmeec_model, "attend_memories", counted_attend)
    try:
        results = tracker.step_all(*_images(scene[1]), source_masks=_source_masks(scene[1], objects))
    finally:
        for handle in handles:
            handle.remove()
    assert not any(r.skipped for r in results.values()) and len(results) == 4
    # Both images in one encoder batch; per source view (ego: 3 targets, exo: 1): one source memory and
    # one target memory, one decoder call, and one memory attention call on the one target image for
    # F_view and F_mem of all its targets (equal bank lengths: one group).
    assert calls == {"image_encoder": [2], "memory_encoder": [3, 3, 1, 1], "sam_mask_decoder": [3, 1]}
    assert attention_calls == [(1, [3, 3]), (1, [1, 1])]
