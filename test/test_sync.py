"""lmeec_core.sync pairs streams the way message_filters' Python ApproximateTimeSynchronizer does."""
import random

import pytest

from lmeec_core.errors import ConfigError
from lmeec_core.sync import NS_PER_S, ApproximateTimeSynchronizer

MS = 1_000_000
EGO, EXO = 0, 1


def feed(sync, arrivals):
    """Add (input, stamp_ns) arrivals with the stamp as payload; return the emitted pairs."""
    pairs = []
    for index, stamp in arrivals:
        out = sync.add(index, stamp, stamp)
        if out is not None:
            pairs.append(out)
    return pairs


def camera(period_ns, count, offset_ns=0, jitter_ns=0, rng=None):
    return [offset_ns + i * period_ns + (rng.randint(-jitter_ns, jitter_ns) if jitter_ns else 0)
            for i in range(count)]


def test_identical_stamps_pair_on_the_second_arrival():
    sync = ApproximateTimeSynchronizer(2, queue_size=5, slop_s=0.01)
    assert sync.add(EGO, 100, "ego") is None
    assert sync.add(EXO, 100, "exo") == ("ego", "exo")
    assert sync.queued() == [0, 0]


def test_pairs_come_back_in_input_order_whichever_input_completes_them():
    sync = ApproximateTimeSynchronizer(2, queue_size=5, slop_s=0.01)
    assert sync.add(EXO, 100, "exo") is None
    assert sync.add(EGO, 101, "ego") == ("ego", "exo")


def test_jittered_cameras_pair_frame_for_frame():
    rng = random.Random(0)
    period = 33 * MS
    ego = camera(period, 200, jitter_ns=4 * MS, rng=rng)
    exo = camera(period, 200, offset_ns=3 * MS, jitter_ns=4 * MS, rng=rng)
    arrivals = sorted([(EGO, s) for s in ego] + [(EXO, s) for s in exo], key=lambda a: a[1])
    pairs = feed(ApproximateTimeSynchronizer(2, queue_size=10, slop_s=0.015), arrivals)
    assert pairs == list(zip(ego, exo))


def test_dropped_frames_leave_the_other_camera_unpaired_rather_than_mispaired():
    rng = random.Random(1)
    period = 50 * MS
    ego = camera(period, 100, jitter_ns=2 * MS, rng=rng)
    exo = camera(period, 100, offset_ns=5 * MS, jitter_ns=2 * MS, rng=rng)
    dropped = set(rng.sample(range(100), 20))
    exo_kept = [s for i, s in enumerate(exo) if i not in dropped]
    arrivals = sorted([(EGO, s) for s in ego] + [(EXO, s) for s in exo_kept], key=lambda a: a[1])
    pairs = feed(ApproximateTimeSynchronizer(2, queue_size=10, slop_s=0.02), arrivals)
    assert pairs == [(ego[i], exo[i]) for i in range(100) if i not in dropped]


def test_out_of_order_arrivals_within_the_queue_still_pair():
    rng = random.Random(2)
    ego = camera(100 * MS, 8)
    exo = camera(100 * MS, 8, offset_ns=MS)
    arrivals = [(EGO, s) for s in rng.sample(ego, len(ego))] + [(EXO, s) for s in rng.sample(exo, len(exo))]
    pairs = feed(ApproximateTimeSynchronizer(2, queue_size=8, slop_s=0.01), arrivals)
    assert sorted(pairs) == list(zip(ego, exo))


def test_a_late_message_completes_an_older_pair_after_a_newer_one_was_emitted():
    sync = ApproximateTimeSynchronizer(2, queue_size=5, slop_s=0.01)
    pairs = feed(sync, [(EGO, 1 * NS_PER_S), (EGO, 2 * NS_PER_S), (EXO, 2 * NS_PER_S), (EXO, 1 * NS_PER_S)])
    assert pairs == [(2 * NS_PER_S, 2 * NS_PER_S), (1 * NS_PER_S, 1 * NS_PER_S)]


@pytest.mark.parametrize("delta_ns, paired", [(10 * MS - 1, True), (10 * MS, False), (10 * MS + 1, False)])
def test_slop_boundary_is_exclusive(delta_ns, paired):
    sync = ApproximateTimeSynchronizer(2, queue_size=5, slop_s=0.010)
    sync.add(EGO, NS_PER_S, "ego")
    assert (sync.add(EXO, NS_PER_S + delta_ns, "exo") is not None) is paired


def test_the_closest_candidate_wins_and_ties_go_to_the_earlier_arrival():
    sync = ApproximateTimeSynchronizer(2, queue_size=5, slop_s=0.05)
    feed(sync, [(EGO, 100 * MS), (EGO, 120 * MS), (EGO, 90 * MS)])
    assert sync.add(EXO, 112 * MS, "exo") == (120 * MS, "exo")
    assert sync.add(EXO, 95 * MS, "exo") == (100 * MS, "exo")   # 100 and 90 are both 5 ms away


def test_queue_overflow_evicts_the_oldest_stamp():
    sync = ApproximateTimeSynchronizer(2, queue_size=2, slop_s=0.01)
    feed(sync, [(EGO, 1 * NS_PER_S), (EGO, 2 * NS_PER_S), (EGO, 3 * NS_PER_S)])
    assert sync.queued() == [2, 0]
    assert sync.add(EXO, 1 * NS_PER_S, "exo") is None
    assert sync.add(EXO, 3 * NS_PER_S, "exo") == (3 * NS_PER_S, "exo")


def test_an_arrival_older_than_a_full_queue_is_evicted_at_once_and_never_pairs():
    sync = ApproximateTimeSynchronizer(2, queue_size=2, slop_s=0.01)
    feed(sync, [(EGO, 7 * NS_PER_S), (EGO, 8 * NS_PER_S), (EXO, 1 * NS_PER_S)])
    assert sync.add(EGO, 1 * NS_PER_S, "late") is None   # its match is queued, but it is not
    assert sync.queued() == [2, 1]


def test_a_repeated_stamp_replaces_the_queued_message():
    sync = ApproximateTimeSynchronizer(2, queue_size=5, slop_s=0.01)
    sync.add(EGO, 100, "first")
    sync.add(EGO, 100, "second")
    assert sync.add(EXO, 100, "exo") == ("second", "exo")


def test_clear_forgets_queued_messages():
    sync = ApproximateTimeSynchronizer(2, queue_size=5, slop_s=0.01)
    sync.add(EGO, 100, "ego")
    sync.clear()
    assert sync.queued() == [0, 0]
    assert sync.add(EXO, 100, "exo") is None


def test_three_inputs_need_all_within_slop():
    sync = ApproximateTimeSynchronizer(3, queue_size=5, slop_s=0.01)
    sync.add(0, 100 * MS, "a")
    sync.add(1, 104 * MS, "b")
    assert sync.add(2, 111 * MS, "c") is None   # span 11 ms
    assert sync.add(2, 105 * MS, "c") == ("a", "b", "c")


@pytest.mark.parametrize("kwargs", [dict(num_inputs=1, queue_size=5, slop_s=0.1),
                                    dict(num_inputs=2, queue_size=0, slop_s=0.1),
                                    dict(num_inputs=2, queue_size=5, slop_s=-0.1)])
def test_invalid_configuration_is_refused(kwargs):
    with pytest.raises(ConfigError):
        ApproximateTimeSynchronizer(**kwargs)
