"""A worker thread that always processes the newest item and drops the ones it had no time for.

Inference is slower than cameras on many machines. Queueing pairs would add latency without bound;
processing the newest pair keeps latency at about one inference, and every pair overwritten before
the worker took it is counted as dropped. Other work that must use the same model (a new prompt) is
handed over with `call`: it runs on the worker between two items, so it never waits for more than
the item in progress and the stream never waits for more than that work.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Callable, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class NewestOnlyWorker(Generic[T]):
    """Runs `process(item)` in its own thread on the newest `submit`ted item.

    `min_period_s()` is read after each item: the next one starts no sooner, so a rate limit can
    change at run time. Exceptions from `process` go to `on_error` and the worker carries on with
    the next item.
    """

    def __init__(self, name: str, process: Callable[[T], None], on_error: Callable[[Exception], None],
                 min_period_s: Callable[[], float] = lambda: 0.0) -> None:
        self._process = process
        self._on_error = on_error
        self._min_period_s = min_period_s
        self._pending: T | None = None
        self._calls: deque[tuple[Callable[[], object], Future]] = deque()
        self._next_item_at = 0.0
        self._stopping = False
        self._dropped = 0
        self._processed = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, item: T) -> None:
        """Make `item` the next one processed, dropping any item still waiting."""
        with self._cond:
            if self._pending is not None:
                self._dropped += 1
            self._pending = item
            self._cond.notify()

    def call(self, work: Callable[[], R]) -> Future[R]:
        """Run `work()` on the worker thread before the next item (calls run in order, unpaced).

        The future holds its result or exception; it is cancelled if the worker stops first.
        """
        future: Future[R] = Future()
        with self._cond:
            if self._stopping:
                future.cancel()
            else:
                self._calls.append((work, future))
                self._cond.notify()
        return future

    def discard_pending(self) -> None:
        """Forget the waiting item (e.g. it belongs to a timeline that just ended)."""
        with self._cond:
            self._pending = None

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop after the current item or call, cancelling waiting calls; returns False if the
        current one did not finish within `timeout_s`."""
        with self._cond:
            self._stopping = True
            self._pending = None
            while self._calls:
                self._calls.popleft()[1].cancel()
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def processed(self) -> int:
        return self._processed

    def _next(self) -> Callable[[], None] | None:
        """The next call, else the pending item once its time has come, as work to run; None when
        stopping."""
        with self._cond:
            while not self._stopping:
                if self._calls:
                    work, future = self._calls.popleft()
                    return lambda: self._run_call(work, future)
                if self._pending is not None and (wait := self._next_item_at - time.monotonic()) <= 0:
                    item, self._pending = self._pending, None
                    return lambda: self._run_item(item)
                self._cond.wait(wait if self._pending is not None else None)
            return None

    def _run(self) -> None:
        while (work := self._next()) is not None:
            work()

    def _run_item(self, item: T) -> None:
        started = time.monotonic()
        try:
            self._process(item)
        except Exception as exc:  # noqa: BLE001 - reported; the worker must outlive any input
            self._on_error(exc)
        self._processed += 1
        self._next_item_at = started + self._min_period_s()

    @staticmethod
    def _run_call(work: Callable[[], object], future: Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(work())
        except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
