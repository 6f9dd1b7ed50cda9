"""The inference worker: newest item only, and calls (a new prompt) run between two items."""
import threading
import time

import pytest

from lmeec_ros.newest_only_worker import NewestOnlyWorker


class Recorder:
    """A `process` that records items and can be held inside an item until released."""

    def __init__(self) -> None:
        self.done: list[object] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, item: object) -> None:
        self.entered.set()
        self.release.wait(10)
        self.done.append(item)


@pytest.fixture
def recorder():
    return Recorder()


def started(recorder: Recorder, min_period_s: float = 0.0) -> NewestOnlyWorker:
    worker = NewestOnlyWorker("test-worker", recorder, lambda exc: recorder.done.append(exc), lambda: min_period_s)
    worker.start()
    return worker


def test_items_waiting_replace_each_other_and_are_counted_as_dropped(recorder):
    recorder.release.clear()
    worker = started(recorder)
    worker.submit(1)
    assert recorder.entered.wait(5)
    for item in (2, 3, 4):
        worker.submit(item)
    recorder.release.set()
    deadline = time.monotonic() + 5
    while len(recorder.done) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop()
    assert recorder.done == [1, 4] and worker.dropped == 2


def test_a_call_runs_after_the_item_in_progress_and_before_the_waiting_one(recorder):
    recorder.release.clear()
    worker = started(recorder)
    worker.submit("first")
    assert recorder.entered.wait(5)
    worker.submit("waiting")
    future = worker.call(lambda: recorder.done.append("call") or "answer")
    time.sleep(0.2)
    assert not future.done(), "the call must not run beside the item in progress"
    recorder.release.set()
    assert future.result(5) == "answer"
    worker.stop()
    assert recorder.done[:2] == ["first", "call"]


def test_calls_are_not_held_back_by_the_rate_limit(recorder):
    worker = started(recorder, min_period_s=30.0)
    worker.submit(1)
    assert recorder.entered.wait(5)
    worker.submit(2)   # waits 30 s for its turn
    assert worker.call(lambda: "now").result(5) == "now"
    worker.stop()
    assert recorder.done == [1]


def test_a_failing_call_hands_its_exception_to_the_caller_and_the_worker_goes_on(recorder):
    worker = started(recorder)
    with pytest.raises(ValueError, match="bad prompt"):
        worker.call(lambda: (_ for _ in ()).throw(ValueError("bad prompt"))).result(5)
    worker.submit(1)
    assert worker.call(lambda: "still here").result(5) == "still here"
    worker.stop()


def test_stopping_cancels_the_calls_still_waiting(recorder):
    recorder.release.clear()
    worker = started(recorder)
    worker.submit(1)
    assert recorder.entered.wait(5)
    waiting = worker.call(lambda: "never")
    threading.Timer(0.2, recorder.release.set).start()
    assert worker.stop(5)
    assert waiting.cancelled()
    assert worker.call(lambda: "after stop").cancelled()
