"""A worker thread that always processes the newest item and drops the ones it had no time for.

Inference is slower than cameras on many machines. Queueing pairs would add latency without bound;
processing the newest pair keeps latency at about one inference, and every pair overwritten before
the worker took it is counted as dropped.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class NewestOnlyWorker(Generic[T]):
    """Runs `process(item)` in its own thread on the newest `submit`ted item.

    `min_period_s()` is read before each item, so a rate limit can change at run time. Exceptions
    from `process` go to `on_error` and the worker carries on with the next item.
    """

    def __init__(self, name: str, process: Callable[[T], None], on_error: Callable[[Exception], None],
                 min_period_s: Callable[[], float] = lambda: 0.0) -> None:
        self._process = process
        self._on_error = on_error
        self._min_period_s = min_period_s
        self._pending: T | None = None
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

    def discard_pending(self) -> None:
        """Forget the waiting item (e.g. it belongs to a timeline that just ended)."""
        with self._cond:
            self._pending = None

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop after the current item; returns False if it did not finish within `timeout_s`."""
        with self._cond:
            self._stopping = True
            self._pending = None
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

    def _next(self) -> T | None:
        with self._cond:
            while self._pending is None and not self._stopping:
                self._cond.wait()
            item, self._pending = self._pending, None
            return None if self._stopping else item

    def _run(self) -> None:
        while (item := self._next()) is not None:
            started = time.monotonic()
            try:
                self._process(item)
            except Exception as exc:  # noqa: BLE001 - reported; the worker must outlive any input
                self._on_error(exc)
            self._processed += 1
            self._pace(started)

    def _pace(self, started: float) -> None:
        """Wait out the rest of the minimum period; items submitted meanwhile replace each other."""
        period = self._min_period_s()
        with self._cond:
            deadline = started + period
            while not self._stopping and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)
