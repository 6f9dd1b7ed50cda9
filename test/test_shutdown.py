"""Stopping on SIGINT/SIGTERM: the signal reaches the spinning main thread, and only it tears down.

rclpy's own handlers shut the context down from a signal thread, racing the executor's next wait-set
build (a CI run once ended the node with RCLError "the given context is not valid"). These tests
check the property that removes the race: after the signal the executor stops spinning while the
context is still valid, so the main thread shuts it down in order.
"""
from __future__ import annotations

import gc
import os
import signal

import pytest

pytestmark = pytest.mark.usefixtures("ros")


@pytest.fixture()
def restore_signal_handlers():
    from lmeec_ros.shutdown import STOP_SIGNALS

    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_sent_from_a_callback_ends_the_spin_with_the_context_still_valid(ros, restore_signal_handlers,
                                                                                   capfd, signum):
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from lmeec_ros.shutdown import on_stop_signal, shut_down, spin_until

    context = Context()
    rclpy.init(context=context, domain_id=ros.domain_id, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("shutdown_probe", context=context)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(node)
    ticks: list[int] = []

    def tick() -> None:  # runs on an executor thread, as the node's callbacks do
        ticks.append(len(ticks))
        if len(ticks) == 3:
            os.kill(os.getpid(), signum)

    node.create_timer(0.02, tick)
    stopped = on_stop_signal()
    try:
        spin_until(stopped, executor)
        assert stopped() and len(ticks) >= 3
        assert context.ok(), "the signal must not shut the context down behind the executor's back"
    finally:
        shut_down(executor)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert not context.ok()
    del executor
    gc.collect()   # a callback that failed under the teardown would say so when its task is collected
    assert "never retrieved" not in capfd.readouterr().err

