"""The `lmeec` lifecycle node: ego/exo images in, the target's mask and box in the other camera out.

Lifecycle: configure loads the model (a bad checkpoint fails the transition with the reason and
leaves the node unconfigured, alive, ready for another try); activate subscribes to the cameras;
deactivate unsubscribes and keeps the target (its temporal memory restarts: the pause ended the
timeline it was built on); cleanup frees the model; shutdown (finalized) ends the process, since no
transition leaves that state. With `autostart` (default) the node configures and activates itself.

Targets: up to `max_targets` at once, each with an id that set_target answers and that is never
reused in the process (not even across cleanup and configure); each pair is encoded once for all
of them. ~/clear_target (std_srvs/Trigger) stops them all, ~/remove_target one.

Threads: subscriptions check and pair images and hand the newest pair to a single inference
worker, which drops what it had no time for; services run in their own callback group so that
set_target is answered while images keep flowing, and hand the prompt to that worker, which runs it
between two pairs. The tracker is used under one lock. Diagnostics run on the steady clock, so they
report even when a simulated clock (`use_sim_time`) has not started.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from concurrent.futures import CancelledError

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from lmeec_core.errors import InputError, LmeecError, StateError
from lmeec_core.preprocess import check_image
from lmeec_core.sync import NS_PER_S
from lmeec_core.tracker import Correspondence as Result
from lmeec_core.tracker import CorrespondenceTracker, TrackerConfig
from lmeec_ros import params
from lmeec_ros.diagnostics import ClockWatch, Health, Snapshot, TargetReport
from lmeec_ros.frame_pair import VIEWS, FramePair, ImageMsg, PairHistory, other_view, stamp_ns
from lmeec_ros.image_codec import compressed_to_rgb, image_size, image_to_rgb, import_cv2
from lmeec_ros.newest_only_worker import NewestOnlyWorker
from lmeec_ros.outputs import MAX_LABEL, OutputPublishers
from lmeec_ros.pairing import BACKEND, CameraPairing
from lmeec_ros.prompt import describe_prompt, prompt_from_request
from lmeec_ros.shutdown import ignore_stop_signals, on_stop_signal, shut_down, spin_until
from lmeec_ros.srv import RemoveTarget, SetTarget

NODE_NAME = "lmeec"
Images = dict[str, np.ndarray]   # view -> uint8 RGB [H, W, 3]
LOG_THROTTLE_S = 5.0
WORKER_STOP_TIMEOUT_S = 10.0


def load_tracker(settings: params.Settings, first_target_id: int = 1) -> CorrespondenceTracker:
    """The tracker the parameters describe, issuing ids from `first_target_id`; raises LmeecError
    subclasses with the reason."""
    config = TrackerConfig(
        device=_resolve_device(settings.device), dtype=settings.dtype, compression=settings.compression,
        capacity=settings.capacity, bank_policy=settings.bank_policy, source_lost=settings.source_lost,
        banks=settings.banks, visibility_threshold=settings.visibility_threshold, max_time_gap_s=settings.max_time_gap,
        compile=settings.compile, max_targets=settings.max_targets, max_prompt_overlap=settings.max_prompt_overlap,
        first_target_id=first_target_id)
    preset = None if settings.preset == "auto" else settings.preset
    return CorrespondenceTracker.from_checkpoint(settings.checkpoint or None, preset=preset, config=config)


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# Failures that carry a message meant for the user; anything else is a bug and logged with its traceback.
EXPECTED_FAILURES = (LmeecError, ValueError, OSError)


def _reason(exc: Exception) -> str:
    """The message of an expected failure; the exception type too for anything else."""
    return str(exc) if isinstance(exc, EXPECTED_FAILURES) else f"{type(exc).__name__}: {exc}"


class LmeecNode(LifecycleNode):
    """See the module docstring; docs/ros.md lists topics, services and parameters."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        params.declare(self)
        self._settings = params.Settings()      # replaced by the parameters' values at configure
        self._state = "unconfigured"
        self._configure_error = ""
        self.finalized = threading.Event()      # set by the shutdown transition: the process should end
        self._health = Health()
        self._clock_watch = ClockWatch()
        self._history = PairHistory(self._settings.history_size)
        self._tracker: CorrespondenceTracker | None = None
        self._tracker_lock = threading.Lock()
        # Ids name targets in results; unique over the process, across cleanup and configure: each
        # tracker issues them from one above the largest issued before.
        self._issued = 0
        # Guarded by _tracker_lock (replaced, never changed in place, so other threads may read
        # it without the lock): the targets followed, by id. Also under the lock: the newest pair
        # stamp processed (older pairs are late and skipped), each camera's last resolution.
        self._targets: dict[int, TargetReport] = {}
        self._last_stamp_ns: int | None = None
        self._sizes: dict[str, tuple[int, int]] = {}
        self._time_jumped = threading.Event()
        self._last_logged: dict[str, float] = {}
        self._outputs: OutputPublishers | None = None
        self._pairing: CameraPairing | None = None
        self._worker: NewestOnlyWorker[FramePair] | None = None
        self._image_group = MutuallyExclusiveCallbackGroup()
        service_group = MutuallyExclusiveCallbackGroup()
        self.create_service(SetTarget, "~/set_target", self._on_set_target, callback_group=service_group)
        self.create_service(Trigger, "~/clear_target", self._on_clear_target, callback_group=service_group)
        self.create_service(RemoveTarget, "~/remove_target", self._on_remove_target, callback_group=service_group)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = self.get_parameter("diagnostics_period").value
        if params.check_value("diagnostics_period", period):
            period = self._settings.diagnostics_period
        self.create_timer(float(period), self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))
        if hasattr(self, "add_pre_set_parameters_callback"):   # rclpy of Iron and later; Humble keeps the int
            self.add_pre_set_parameters_callback(params.coerce_changes)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # Lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Configure and activate (autostart); a failure is logged and leaves the node waiting."""
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            settings = params.read(self)
            if settings.compressed:
                import_cv2()
            tracker = load_tracker(settings, first_target_id=self._issued + 1)
        except Exception as exc:  # noqa: BLE001 - any failure must leave the node alive and say why
            if not isinstance(exc, EXPECTED_FAILURES):
                self.get_logger().error(traceback.format_exc())
            self._configure_error = f"configure failed: {_reason(exc)}"
            self.get_logger().error(self._configure_error)
            return TransitionCallbackReturn.FAILURE
        model = settings.checkpoint or f"random {'nano' if settings.preset == 'auto' else settings.preset}"
        if not settings.checkpoint:
            self.get_logger().warning(f"no checkpoint: running a {model} model, whose masks are meaningless; "
                                      "set the `checkpoint` parameter")
        self._settings, self._tracker, self._configure_error = settings, tracker, ""
        self._history = PairHistory(settings.history_size)
        self._outputs = OutputPublishers(self, settings.publish_overlay, settings.max_targets)
        self._state = "inactive"
        self.get_logger().info(f"configured: {model} on {tracker.device}")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        s = self._settings
        msg_type = CompressedImage if s.compressed else Image
        qos = QoSProfile(depth=s.queue_size, durability=DurabilityPolicy.VOLATILE,
                         reliability=ReliabilityPolicy.RELIABLE if s.reliability == "reliable"
                         else ReliabilityPolicy.BEST_EFFORT)
        self._worker = NewestOnlyWorker("lmeec-inference", self._process_pair, self._on_worker_error,
                                        self._min_period_s)
        self._worker.start()
        topics = self._input_topics()
        self._pairing = CameraPairing(self, msg_type, topics, qos, s.queue_size, s.slop, self._image_group,
                                      self._on_image, self._on_pair, self._on_time_jump)
        self._health.restart_silence_clock()
        self._state = "active"
        self.get_logger().info(f"active: pairing {topics['ego']} and {topics['exo']} with {BACKEND} "
                               f"(slop {s.slop} s); {self._following()}")
        return super().on_activate(state)

    def _following(self) -> str:
        """What activation resumes, for its log line."""
        if not self._targets:
            return "call ~/set_target to start"
        return f"following {_describe_targets(self._targets)} again; temporal memory starts afresh"

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        with self._tracker_lock:
            kept = _describe_targets(self._targets)
            if self._targets:
                # Frames after the pause do not continue the ones before it: a memory built on
                # those would be stale, and the stamp gap would read as a time jump.
                self._reset_memory()
                self._health.count("memory_resets_at_deactivation")
            self._sizes = {}
        self._history.clear()
        self._time_jumped.clear()
        self._state = "inactive"
        self.get_logger().info(f"deactivated: {kept} kept, temporal memory reset; activate to follow again"
                               if kept else "deactivated")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._free_model()
        self._state = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        self._state = "finalized"
        self._publish_diagnostics()   # the last status, so that monitors do not keep the previous one
        self.get_logger().info("finalized: no transition leaves this state, so the process ends")
        self.finalized.set()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def release(self) -> None:
        """Stop inputs and free the model, whatever the state (shutdown, errors, process exit)."""
        self._stop_inputs()
        self._free_model()

    def _stop_inputs(self) -> None:
        if self._pairing is not None:
            self._pairing.destroy()
            self._pairing = None
        if self._worker is not None:
            if not self._worker.stop(WORKER_STOP_TIMEOUT_S):
                self.get_logger().warning("inference worker still busy after "
                                          f"{WORKER_STOP_TIMEOUT_S:.0f} s; leaving it to finish")
            self._worker = None

    def _free_model(self) -> None:
        if self._outputs is not None:
            self._outputs.destroy()
            self._outputs = None
        with self._tracker_lock:
            self._tracker, self._targets, self._last_stamp_ns, self._sizes = None, {}, None, {}
        self._history.clear()

    def _reset_memory(self) -> None:
        """Drop the temporal memory, keep the target (called under the tracker lock)."""
        self._tracker.reset()
        self._last_stamp_ns = None

    # Inputs ---------------------------------------------------------------------------------

    def _input_topics(self) -> dict[str, str]:
        suffix = "/compressed" if self._settings.compressed else ""
        return {v: self.resolve_topic_name(getattr(self._settings, f"{v}_topic") + suffix) for v in VIEWS}

    def _min_period_s(self) -> float:
        rate = self._settings.max_rate_hz
        return 1.0 / rate if rate > 0 else 0.0

    def _on_image(self, view: str, msg: ImageMsg) -> bool:
        """Count the image; refuse it before it is paired (or held) when it is too large."""
        self._health.image(view)
        size, limit = image_size(msg), self._settings.max_image_pixels
        if size is not None and size[0] * size[1] > limit:
            self._input_problem("oversized_images", f"{view} image of {size[0]}x{size[1]} ({size[0] * size[1]} px) "
                                f"refused: more than max_image_pixels={limit}")
            return False
        return True

    def _on_pair(self, pair: FramePair) -> None:
        self._history.add(pair)
        self._health.pair()
        if self._targets and self._worker is not None:
            self._worker.submit(pair)

    def _on_time_jump(self, view: str, back_ns: int) -> None:
        self._history.clear()
        if self._worker is not None:
            self._worker.discard_pending()
        self._time_jumped.set()
        text = (f"{view} stamps went back {back_ns / NS_PER_S:.3f} s (bag loop or clock reset): "
                "temporal memory reset, target kept")
        self._health.problem("time_jumps", text)
        self.get_logger().warning(text)

    def _decode(self, pair: FramePair) -> Images:
        """RGB arrays of both images, checked as the tracker will check them, so that a frame it
        would refuse changes nothing; InputError names the camera and what is wrong."""
        decode = compressed_to_rgb if self._settings.compressed else image_to_rgb
        images = {}
        for view in VIEWS:
            try:
                rgb = decode(pair.msg(view))
            except InputError as exc:
                raise InputError(f"{view} image: {exc}") from exc
            images[view] = check_image(rgb, view)
        return images

    def _header(self, view: str, msg: ImageMsg) -> Header:
        frame_id = getattr(self._settings, f"{view}_frame_id") or msg.header.frame_id
        return Header(stamp=msg.header.stamp, frame_id=frame_id)

    # Inference (worker thread) --------------------------------------------------------------

    def _process_pair(self, pair: FramePair) -> None:
        try:
            images = self._decode(pair)
        except InputError as exc:
            self._input_problem("bad_images", str(exc))
            return
        with self._tracker_lock:
            if not self._targets or self._tracker is None:
                return
            if self._time_jumped.is_set():
                self._time_jumped.clear()
                self._reset_memory()
            if self._last_stamp_ns is not None and pair.stamp_ns <= self._last_stamp_ns:
                self._health.count("late_pairs")
                return
            self._check_resolutions(images)
            try:
                results = self._tracker.step_all(images["ego"], images["exo"], stamp=pair.stamp_ns / NS_PER_S)
            except InputError as exc:
                self._input_problem("bad_images", str(exc))
                return
            self._last_stamp_ns = pair.stamp_ns
            self._update_targets(results.values())
        if any(result.memory_reset for result in results.values()):
            self._input_problem("memory_resets", f"stamps jumped forward by more than max_time_gap "
                                f"({self._settings.max_time_gap} s): temporal memory reset, targets kept")
        self._publish(list(results.values()), pair, images)

    def _check_resolutions(self, images: Images) -> None:
        """A camera changing resolution resets the memory (called under the tracker lock)."""
        sizes = {v: images[v].shape[:2] for v in VIEWS}
        changed = [v for v in VIEWS if self._sizes.get(v, sizes[v]) != sizes[v]]
        if changed:
            text = "; ".join(f"{v} resolution changed from {self._sizes[v][1]}x{self._sizes[v][0]} to "
                             f"{sizes[v][1]}x{sizes[v][0]}" for v in changed) + ": temporal memory reset, targets kept"
            self._tracker.reset()
            self._input_problem("resolution_changes", text)
        self._sizes = sizes

    def _update_targets(self, results: Iterable[Result] = ()) -> None:
        """Replace the record of the targets followed from the tracker, with the visibility of
        `results` where given and the last known one otherwise (called under the tracker lock)."""
        latest = {result.target_id: result for result in results}
        reports = {}
        for target_id, status in self._tracker.targets().items():
            result, before = latest.get(target_id), self._targets.get(target_id)
            seen = ((result.visible, result.score) if result is not None
                    else (before.visible, before.score) if before is not None else (None, None))
            reports[target_id] = TargetReport(target_id, status.source_view, status.memory, *seen)
        self._targets = reports

    def _start_following(self, view: str, prompt: dict[str, object], pair: FramePair,
                         target_id: int) -> tuple[int, Result]:
        """Add the prompt as a target on `pair`, or re-target `target_id` with it, and publish its
        first result (worker thread). The other targets are not touched."""
        images = self._decode(pair)
        with self._tracker_lock:
            if self._tracker is None:
                raise StateError("the model was unloaded while the request waited")
            if not target_id and self._issued >= MAX_LABEL:
                raise StateError(f"{self._issued} target ids were issued, the most a ~/mask label image (mono16) "
                                 "can hold; expected target_id of a current target to re-target it")
            target_id, result = self._tracker.add_target(view, images["ego"], images["exo"], target_id=target_id,
                                                         **prompt)
            self._issued = max(self._issued, target_id)
            if self._last_stamp_ns is None or pair.stamp_ns > self._last_stamp_ns:
                self._last_stamp_ns = pair.stamp_ns
            self._sizes = {v: images[v].shape[:2] for v in VIEWS}
            self._update_targets([result])
            alone = list(self._targets) == [target_id]
        if alone:   # the pair's results are this target's: every output, as for any pair
            self._publish([result], pair, images)
        elif self._outputs is not None and self._state == "active":
            # The other targets' results for this pair were published with it, or never will be
            # (a pair older than the last processed): only this target's message.
            self._outputs.publish_correspondence(result, lambda v: self._header(v, pair.msg(v)))
        return target_id, result

    def _publish(self, results: list[Result], pair: FramePair, images: Images) -> None:
        """Publish a pair's results, less those of targets removed while they were computed."""
        outputs, followed = self._outputs, self._targets
        results = [result for result in results if result.target_id in followed]
        if outputs is None or self._state != "active" or not results:
            return   # inactive, or every target was cleared while this pair was processed
        outputs.publish_pair(results, lambda v: self._header(v, pair.msg(v)), images)
        latency_ns = self.get_clock().now().nanoseconds - pair.stamp_ns
        self._health.result(latency_ns / 1e6)

    def _input_problem(self, kind: str, text: str) -> None:
        """Count and report a bad input; log each kind at most once per LOG_THROTTLE_S."""
        self._health.problem(kind, text)
        now = time.monotonic()
        if now - self._last_logged.get(kind, -LOG_THROTTLE_S) >= LOG_THROTTLE_S:
            self._last_logged[kind] = now
            self.get_logger().warning(text)

    def _on_worker_error(self, exc: Exception) -> None:
        self._health.problem("step_errors", f"inference failed: {type(exc).__name__}: {exc}")
        self.get_logger().error("inference failed:\n" + "".join(traceback.format_exception(exc)),
                                throttle_duration_sec=LOG_THROTTLE_S)

    # Services -------------------------------------------------------------------------------

    def _on_set_target(self, request: SetTarget.Request, response: SetTarget.Response) -> SetTarget.Response:
        try:
            response.target_id, response.message = self._set_target(request)
            response.success = True
            self.get_logger().info(response.message)
        except Exception as exc:  # noqa: BLE001 - a request must never take the node down
            if not isinstance(exc, EXPECTED_FAILURES):
                self.get_logger().error(traceback.format_exc())
            response.success, response.target_id = False, 0
            response.message = f"set_target refused: {_reason(exc)}"
            self._health.count("set_target_refused")
            self.get_logger().warning(response.message)
        return response

    def _set_target(self, request: SetTarget.Request) -> tuple[int, str]:
        """Check the request here, run the prompt on the inference worker, answer once it ran."""
        worker = self._worker
        if self._state != "active" or worker is None:
            raise StateError(f"the node is {self._state}; expected it active (configure and activate it)")
        if request.view not in VIEWS:
            raise InputError(f"view {request.view!r} is unknown; expected 'ego' or 'exo'")
        prompt = prompt_from_request(request, self._settings.max_image_pixels)
        pair = self._pair_for(request.view, stamp_ns(request.stamp))
        try:
            target_id, result = worker.call(
                functools.partial(self._start_following, request.view, prompt, pair, request.target_id)).result()
        except CancelledError:
            raise StateError("the node stopped inference (deactivate, cleanup or shutdown) before the prompt "
                             "ran; expected it active") from None
        seen = f"visible (score {result.score:.2f})" if result.visible else f"not visible (score {result.score:.2f})"
        done = "re-targeted" if request.target_id else "set"
        return target_id, (f"target {target_id} {done} in {request.view} ({describe_prompt(prompt)}); "
                           f"following it in {other_view(request.view)}, {seen} on this pair; "
                           f"{len(self._targets)} of max_targets={self._settings.max_targets} followed")

    def _pair_for(self, view: str, wanted_ns: int) -> FramePair:
        """The pair a set_target stamp names (zero: the latest one)."""
        if wanted_ns == 0:
            pair = self._history.latest()
            if pair is None:
                topics = self._input_topics()
                raise StateError(f"no synchronised ego/exo pair received yet; expected images on {topics['ego']} "
                                 f"and {topics['exo']} with stamps within slop={self._settings.slop} s")
            return pair
        pair = self._history.find(view, wanted_ns, int(self._settings.slop * NS_PER_S))
        if pair is None:
            raise InputError(f"no recent pair has an {view} image stamped {wanted_ns / NS_PER_S:.3f} s "
                             f"(within slop={self._settings.slop} s): {self._history.describe(view)}")
        return pair

    def _on_clear_target(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Stop following every target (the call of the one-target node, kept as it was)."""
        with self._tracker_lock:
            cleared, self._targets, self._last_stamp_ns = _describe_targets(self._targets), {}, None
            if self._tracker is not None:
                self._tracker.clear()
        if self._worker is not None:
            self._worker.discard_pending()
        response.success = True
        response.message = f"{cleared} cleared" if cleared else "no target was set"
        self.get_logger().info(response.message)
        return response

    def _on_remove_target(self, request: RemoveTarget.Request,
                          response: RemoveTarget.Response) -> RemoveTarget.Response:
        """Stop following one target; the others go on with their memory untouched."""
        with self._tracker_lock:
            if self._tracker is not None and request.target_id in self._targets:
                self._tracker.remove_target(request.target_id)
                self._update_targets()
                response.success = True
            if not self._targets:
                self._last_stamp_ns = None
            remaining = sorted(self._targets)
        response.target_ids = remaining
        if response.success:
            response.message = f"target {request.target_id} removed; {_describe_targets(self._targets) or 'none'} left"
            self.get_logger().info(response.message)
        else:
            response.message = (f"remove_target refused: target {request.target_id} is unknown; expected one of "
                                f"the current ids {remaining} (~/clear_target removes them all)")
            self._health.count("remove_target_refused")
            self.get_logger().warning(response.message)
        return response

    # Parameters and diagnostics -------------------------------------------------------------

    def _on_set_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        specs = params.specs()
        accepted = {}
        for change in changes:
            if change.name not in specs:
                continue
            problem = params.check_value(change.name, change.value)
            if not problem and self._state != "unconfigured" and not specs[change.name][1].dynamic:
                problem = (f"{change.name} is read at configure; expected changes while unconfigured "
                           "(deactivate and clean up first)")
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            accepted[change.name] = params.setting(change.name, change.value)
        if self._state != "unconfigured":
            self._settings = dataclasses.replace(self._settings, **accepted)
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        device = self._device()
        clock, clock_problem = self._clock_watch.check(self.get_clock(), self._settings.input_timeout)
        snap = Snapshot(
            state=self._state, detail=self._detail(), device=device, clock=clock, clock_problem=clock_problem,
            sync_backend=BACKEND, topics=self._input_topics() if self._state == "active" else {},
            input_timeout_s=self._settings.input_timeout,
            dropped_pairs=self._worker.dropped if self._worker is not None else 0,
            targets=[self._targets[target_id] for target_id in sorted(self._targets)])
        array = DiagnosticArray(status=[self._health.status(snap)])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)

    def _detail(self) -> str:
        if self._configure_error:
            return self._configure_error
        if self._state != "active":
            return ""
        if not self._targets:
            return "no target: call ~/set_target"
        return f"following {_describe_targets(self._targets)}"

    def _device(self) -> str:
        """The torch device in use, or the one the `device` parameter names while no model is loaded."""
        tracker = self._tracker
        return str(tracker.device) if tracker is not None else _resolve_device(self._settings.device)


def _describe_targets(targets: dict[int, TargetReport]) -> str:
    """"target 1 (ego -> exo)", "targets 1 (ego -> exo), 3 (exo -> ego)", or "" for none."""
    if not targets:
        return ""
    described = ", ".join(f"{target_id} ({targets[target_id].source_view} -> "
                          f"{other_view(targets[target_id].source_view)})" for target_id in sorted(targets))
    return f"target{'s' if len(targets) > 1 else ''} {described}"


def parse_command_line(argv: list[str]) -> None:
    """Handle what is not a ROS argument: `--help` prints the usage and exits, before ROS starts."""
    parser = argparse.ArgumentParser(
        prog="lmeec_node", formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [-h] [--ros-args [-p NAME:=VALUE] [--params-file FILE] [-r FROM:=TO] ...]",
        description="The lmeec lifecycle node: follows an object marked in one camera (ego or exo, by the "
                    "~/set_target service) in the other camera, and publishes its mask, box, score and "
                    "visibility there. It configures and activates itself unless autostart is false. "
                    "Topics, services and diagnostics: docs/ros.md.",
        epilog="parameters (-p NAME:=VALUE, or a --params-file such as config/lmeec.yaml):\n" + "\n".join(
            f"  {name} (default {default!r})" for name, (default, _) in params.specs().items())
        + "\n\nexamples:\n"
          "  lmeec_node --ros-args --params-file config/lmeec.yaml -p checkpoint:=/path/to/lmeec.pt\n"
          "  ros2 launch lmeec_ros lmeec.launch.py checkpoint:=/path/to/lmeec.pt device:=cuda")
    parser.parse_args(remove_ros_args(argv)[1:])


def main(args: list[str] | None = None) -> None:
    """Run the node until SIGINT/SIGTERM or its shutdown transition
    (`lmeec_node --ros-args --params-file config/lmeec.yaml`)."""
    args = sys.argv if args is None else args
    parse_command_line(args)
    stopped = on_stop_signal()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = LmeecNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        if node.get_parameter("autostart").value is True:
            node.start()
        else:
            node.get_logger().info("autostart is off: waiting for lifecycle transitions")
        spin_until(lambda: stopped() or node.finalized.is_set(), executor)
    finally:
        shut_down(executor)
        node.release()
        node.destroy_node()
        rclpy.try_shutdown()
        ignore_stop_signals()


if __name__ == "__main__":
    main()
