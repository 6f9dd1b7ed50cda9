"""How this package's programs stop on SIGINT/SIGTERM: in order, from the main thread, without races.

rclpy's own signal handlers shut the context down from a signal thread while the executor may be
between its `context.ok()` check and building its next wait set; that build then fails with
RCLError "the given context is not valid" and the process exits with a traceback. Programs here
initialise rclpy without handlers (`SignalHandlerOptions.NO`) and install their own: the signal
only tells the main thread to stop, and the main thread then tears down in order. Any number of
signals may follow the first (a terminal's Ctrl-C reaches the whole process group and `ros2 launch`
forwards its own SIGINT on top): until the teardown is over they are only recorded again, and after
it `ignore_stop_signals` keeps them from killing the interpreter while it exits.
"""
from __future__ import annotations

import signal
import time
from collections.abc import Callable

from rclpy.executors import Executor

POLL_S = 0.2   # how soon a spinning main thread notices a signal when no callback is due
GRACE_S = 0.1  # for callbacks already handed to executor threads to start (see `shut_down`)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt in the main thread, even when the shell started the
    process with SIGINT ignored (a background job of a non-interactive shell inherits that, and Python
    keeps it). For commands whose main thread blocks in their own work."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)


def on_stop_signal() -> Callable[[], bool]:
    """Install handlers that only record SIGINT/SIGTERM; returns "has one arrived?".

    For servers: nothing is interrupted midway (a model still loading finishes loading), the main
    thread checks between its units of work.
    """
    arrived: list[int] = []
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, frame: arrived.append(signum))
    return lambda: bool(arrived)


def ignore_stop_signals() -> None:
    """Ignore SIGINT/SIGTERM from now on: call it once the program has torn down.

    While the interpreter exits, Python restores the default action of every signal it handles, so
    a late SIGINT would end the process with -2 (exit 130 from a shell) instead of 0; an ignored
    signal is left ignored.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def spin_until(stopped: Callable[[], bool], executor: Executor) -> None:
    """Spin `executor` on the calling thread until `stopped()`, e.g. `on_stop_signal()`'s answer.

    Spinning in short waits on this same thread means no other thread ever shuts the executor or the
    context down under a wait in progress; the caller then calls `shut_down`, destroys its nodes and
    shuts the context down.
    """
    while not stopped():
        executor.spin_once(timeout_sec=POLL_S)


def shut_down(executor: Executor) -> None:
    """Stop `executor` once nothing spins it any more.

    A callback handed to an executor thread signals the executor's guard condition as it starts, and
    rclpy's `Executor.shutdown` destroys that guard without waiting for such callbacks (the callback
    then fails and rclpy prints "exception was never retrieved" at exit). The grace lets the ones
    already handed over start first; `shutdown` then waits for the threads to finish them.
    """
    time.sleep(GRACE_S)
    executor.shutdown()
