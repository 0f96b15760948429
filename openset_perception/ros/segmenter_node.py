"""The open-set segmenter as an rclpy lifecycle node: a thin adapter over ``openset_perception.runtime``.

configure: validate parameters, load the model, create publishers and the /diagnostics timer.
activate: warm up, subscribe, start the inference worker. deactivate: unsubscribe, stop the worker,
free cached GPU memory. cleanup: drop publishers and the model. With ``autostart`` (default) the
node configures and activates itself.

Callbacks pair each image with its depth and camera_info by stamp (``runtime.stamp_sync``) and only
store the newest frame set of each camera; one worker thread decodes, segments and publishes, so no
queue ever builds up and no message can take the node down.
"""

from __future__ import annotations

import functools
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from openset_perception.engine import Segmenter
from openset_perception.image_codec import numpy_to_image
from openset_perception.ros.object_messages import marker_array, point_cloud
from openset_perception.runtime.frame_buffer import CameraFrame, LatestFrameBuffer
from openset_perception.runtime.health import HealthMonitor, gpu_memory_values, health_status
from openset_perception.runtime.outputs import (
    DEPTH_OUTPUTS,
    DEPTH_REPORT,
    IMAGE_OUTPUT_ENCODINGS,
    UNKNOWN_OBJECTS,
    UNKNOWN_POINTS,
)
from openset_perception.runtime.package_share import package_share_dir
from openset_perception.runtime.parameters import (
    PARAMETERS,
    NodeConfig,
    ParameterError,
    ParameterSpec,
    node_config,
    output_topic,
    resolve_model_path,
    runtime_settings,
    validate_changes,
)
from openset_perception.runtime.pipeline import CameraResult, InferencePipeline, Rejected
from openset_perception.runtime.stamp_sync import PRIMARY, StampSynchronizer
from openset_perception.runtime.status import StatusRecord
from openset_perception.runtime.worker import InferenceWorker

DEPTH, CAMERA_INFO = "depth", "camera_info"
LOG_THROTTLE_S = 5.0
_ROS_TYPES = {
    "bool": ParameterType.PARAMETER_BOOL,
    "int": ParameterType.PARAMETER_INTEGER,
    "double": ParameterType.PARAMETER_DOUBLE,
    "string": ParameterType.PARAMETER_STRING,
    "string_array": ParameterType.PARAMETER_STRING_ARRAY,
    "int_array": ParameterType.PARAMETER_INTEGER_ARRAY,
    "double_array": ParameterType.PARAMETER_DOUBLE_ARRAY,
}
_READ_ONLY = [spec.name for spec in PARAMETERS if spec.read_only]
_DYNAMIC = [spec.name for spec in PARAMETERS if not spec.read_only]
Publishers = dict[tuple[str, str], Any]  # (camera, output) -> lifecycle publisher
_MESSAGE_TYPES = {DEPTH_REPORT: DiagnosticArray, UNKNOWN_OBJECTS: MarkerArray, UNKNOWN_POINTS: PointCloud2}


TransitionCallback = Callable[[Any, State], TransitionCallbackReturn]


def _logged(transition: TransitionCallback) -> TransitionCallback:
    """rclpy turns an exception in a transition into ERROR without a word; log it first."""

    @functools.wraps(transition)
    def wrapper(node: Any, state: State) -> TransitionCallbackReturn:
        try:
            return transition(node, state)
        except Exception:
            node.get_logger().error(f"{transition.__name__} failed:\n{traceback.format_exc()}")
            return TransitionCallbackReturn.ERROR

    return wrapper


@dataclass
class _Runtime:
    """Everything that exists between configure and cleanup."""

    config: NodeConfig
    segmenter: Segmenter
    pipeline: InferencePipeline
    buffer: LatestFrameBuffer
    health: HealthMonitor
    worker: InferenceWorker
    publishers: Publishers
    timer: Any
    subscriptions: list[Any] = field(default_factory=list)
    synchronizers: list[StampSynchronizer] = field(default_factory=list)
    unpaired_before: int = 0  # frames_unpaired of the synchronisers of earlier activations


class SegmenterNode(LifecycleNode):
    def __init__(self, node_name: str = "segmenter", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._runtime: _Runtime | None = None

    # Lifecycle transitions ------------------------------------------------------------------------

    @_logged
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            config = node_config(self._values(_READ_ONLY))
            settings = runtime_settings(self._values(_DYNAMIC))
            model_path = resolve_model_path(config.model, package_share_dir())
            segmenter = Segmenter.from_checkpoint(
                model_path, config.device, config.precision, config.runtime, config.execution_provider
            )
        except (ValueError, OSError, RuntimeError) as error:  # bad parameters, missing or corrupt model
            self.get_logger().error(f"configuration failed: {error}")
            return TransitionCallbackReturn.FAILURE
        pipeline = InferencePipeline(segmenter, settings)
        buffer = LatestFrameBuffer(
            config.cameras, settings.max_input_age_s, settings.batch_window_s, now=self._now_s
        )
        health = HealthMonitor()
        publishers = self._create_publishers(config)
        # The worker thread gets the publishers themselves, never self._runtime, which cleanup resets.
        worker = InferenceWorker(
            buffer,
            pipeline,
            functools.partial(_wanted_outputs, publishers),
            functools.partial(_publish_result, publishers),
            self._on_rejected,
            self._on_failure,
            health,
            on_notice=self.get_logger().info,
        )
        self._runtime = _Runtime(
            config=config,
            segmenter=segmenter,
            pipeline=pipeline,
            buffer=buffer,
            health=health,
            worker=worker,
            publishers=publishers,
            timer=self.create_timer(config.diagnostics_period, self._publish_health),
        )
        card = segmenter.card
        self.get_logger().info(
            f"loaded {model_path} ({card.architecture.backbone}, {card.num_classes} classes) on "
            f"{segmenter.device} {segmenter.precision} ({segmenter.runtime}); "
            f"cameras: {', '.join(config.cameras)}"
        )
        return super().on_configure(state)

    @_logged
    def on_activate(self, state: State) -> TransitionCallbackReturn:
        runtime = self._require_runtime()
        config = runtime.config
        if config.warmup_shape is not None:
            try:
                runtime.segmenter.warmup(*config.warmup_shape, batch=len(config.cameras))
            except (RuntimeError, ValueError) as error:
                self.get_logger().error(f"warm-up failed: {error}")
                return TransitionCallbackReturn.FAILURE
        for camera in config.cameras:
            self._subscribe(runtime, camera)
        runtime.worker.start()
        self.get_logger().info(
            "active: segmenting " + ", ".join(config.image_topic(c) for c in config.cameras)
        )
        return super().on_activate(state)

    @_logged
    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        runtime = self._require_runtime()
        self._stop(runtime)
        return super().on_deactivate(state)

    @_logged
    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    @_logged
    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return super().on_shutdown(state)

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def autostart(self) -> None:
        """Drive the node to active when the ``autostart`` parameter asks for it."""
        if not self.get_parameter("autostart").value:
            return
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def release(self) -> None:
        """Stop the worker and drop the model; for shutdown outside the lifecycle (Ctrl-C)."""
        self._release()

    # Setup helpers --------------------------------------------------------------------------------

    def _create_publishers(self, config: NodeConfig) -> Publishers:
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=config.publisher_depth,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.VOLATILE,
        )
        publishers = {}
        for camera in config.cameras:
            for output in config.outputs:
                if output in DEPTH_OUTPUTS and not config.use_depth:
                    continue
                msg_type = _MESSAGE_TYPES.get(output, Image)
                publishers[(camera, output)] = self.create_lifecycle_publisher(
                    msg_type, output_topic(camera, output), qos
                )
        return publishers

    def _subscribe(self, runtime: _Runtime, camera: str) -> None:
        config = runtime.config
        streams = [(PRIMARY, CompressedImage if config.compressed else Image, config.image_topic(camera))]
        depth_topic, info_topic = config.depth_topic(camera), config.camera_info_topic(camera)
        if depth_topic is not None:
            streams.append((DEPTH, CompressedImage if config.compressed_depth else Image, depth_topic))
        if info_topic is not None:
            streams.append((CAMERA_INFO, CameraInfo, info_topic))
        synchronizer = StampSynchronizer(
            required=[DEPTH] if depth_topic is not None else [],
            optional=[CAMERA_INFO] if info_topic is not None else [],
            slop_s=config.sync_slop,
            queue_size=config.sync_queue_size,
        )
        runtime.synchronizers.append(synchronizer)
        overrides = QoSOverridingOptions.with_default_policies()
        for stream, msg_type, topic in streams:
            callback = functools.partial(self._on_message, synchronizer, camera, stream)
            runtime.subscriptions.append(
                self.create_subscription(
                    msg_type, topic, callback, _sensor_qos(), qos_overriding_options=overrides
                )
            )

    def _stop(self, runtime: _Runtime) -> None:
        for subscription in runtime.subscriptions:
            self.destroy_subscription(subscription)
        runtime.subscriptions.clear()
        runtime.unpaired_before = _unpaired(runtime)
        runtime.synchronizers.clear()
        runtime.worker.stop()
        if runtime.segmenter.device.type == "cuda":
            torch.cuda.empty_cache()

    def _release(self) -> None:
        runtime = self._runtime
        if runtime is None:
            return
        self._stop(runtime)
        runtime.buffer.close()
        for publisher in runtime.publishers.values():
            self.destroy_lifecycle_publisher(publisher)
        self.destroy_timer(runtime.timer)
        self._runtime = None

    def _require_runtime(self) -> _Runtime:
        if self._runtime is None:
            raise RuntimeError("the node is not configured")
        return self._runtime

    # Callbacks ------------------------------------------------------------------------------------

    def _on_message(self, synchronizer: StampSynchronizer, camera: str, stream: str, msg: Any) -> None:
        runtime = self._runtime
        if runtime is None:
            return
        stamp = msg.header.stamp
        for synced in synchronizer.add(stream, stamp.sec * 1_000_000_000 + stamp.nanosec, msg):
            image_msg = synced.primary
            runtime.health.record_input()
            runtime.buffer.put(
                CameraFrame(
                    camera=camera,
                    header=image_msg.header,
                    stamp_s=synced.stamp_ns * 1e-9,
                    received_s=time.monotonic(),
                    image_msg=image_msg,
                    depth_msg=synced.partners.get(DEPTH),
                    camera_info=synced.partners.get(CAMERA_INFO),
                )
            )

    def _on_rejected(self, rejected: Rejected) -> None:
        self.get_logger().warning(
            f"skipping a frame from '{rejected.frame.camera}': {rejected.reason}",
            throttle_duration_sec=LOG_THROTTLE_S,
        )

    def _on_failure(self, error: Exception) -> None:
        self.get_logger().error(
            f"inference failed, frames skipped: {type(error).__name__}: {error}",
            throttle_duration_sec=LOG_THROTTLE_S,
        )

    def _publish_health(self) -> None:
        runtime = self._runtime
        if runtime is None:
            return
        segmenter = runtime.segmenter
        extra = {
            "model": runtime.config.model,
            "threshold": f"{segmenter.threshold:g}",
            "score_method": segmenter.score_method,
            "active": str(runtime.worker.running).lower(),
            # Images dropped for want of a depth image within sync_slop (or pushed out waiting for one).
            "frames_unpaired": str(_unpaired(runtime)),
            **gpu_memory_values(segmenter.device),
        }
        status = health_status(
            f"{self.get_fully_qualified_name()}: health",
            runtime.health.snapshot(),
            runtime.buffer.counters,
            str(segmenter.device),
            segmenter.precision,
            extra,
            any_subscriber=any(p.get_subscription_count() > 0 for p in runtime.publishers.values()),
        )
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diagnostics.publish(DiagnosticArray(header=header, status=[_to_msg(status)]))

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters if p.name in _DYNAMIC or p.name in _READ_ONLY}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            settings = validate_changes(changes, self._values(_DYNAMIC))
        except ParameterError as error:
            return SetParametersResult(successful=False, reason=str(error))
        runtime = self._runtime
        if runtime is not None:
            runtime.pipeline.update(settings)
            runtime.buffer.max_input_age_s = settings.max_input_age_s
            runtime.buffer.batch_window_s = settings.batch_window_s
        return SetParametersResult(successful=True)

    def _values(self, names: list[str]) -> dict[str, Any]:
        return {name: self.get_parameter(name).value for name in names}

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9


def _unpaired(runtime: _Runtime) -> int:
    return runtime.unpaired_before + sum(s.counters.unpaired for s in runtime.synchronizers)


def _wanted_outputs(publishers: Publishers, camera: str) -> list[str]:
    """The camera's outputs that have a subscriber right now."""
    return [
        output
        for (cam, output), publisher in publishers.items()
        if cam == camera and publisher.get_subscription_count() > 0
    ]


def _publish_result(publishers: Publishers, result: CameraResult) -> None:
    camera, header = result.frame.camera, result.frame.header
    for output, pixels in result.images.items():
        msg = numpy_to_image(pixels, IMAGE_OUTPUT_ENCODINGS[output], header, msg_factory=Image)
        publishers[(camera, output)].publish(msg)
    if result.depth_statuses is not None:
        report = DiagnosticArray(header=header, status=[_to_msg(s) for s in result.depth_statuses])
        publishers[(camera, DEPTH_REPORT)].publish(report)
    if result.objects is not None:
        publishers[(camera, UNKNOWN_OBJECTS)].publish(marker_array(result.objects, header, camera))
    if result.points is not None:
        publishers[(camera, UNKNOWN_POINTS)].publish(point_cloud(result.points, header))


def _descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    constraints = spec.constraints
    if spec.choices:
        constraints = "one of: " + ", ".join(repr(c) for c in spec.choices)
    descriptor = ParameterDescriptor(
        name=spec.name,
        type=_ROS_TYPES[spec.type],
        description=spec.description,
        additional_constraints=constraints,
        read_only=spec.read_only,
    )
    if spec.type == "double" and spec.min_value is not None:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(spec.min_value), to_value=float(spec.max_value), step=0.0)
        ]
    if spec.type == "int" and spec.min_value is not None:
        descriptor.integer_range = [
            IntegerRange(from_value=int(spec.min_value), to_value=int(spec.max_value), step=1)
        ]
    return descriptor


def _sensor_qos() -> QoSProfile:
    # A fresh profile per subscription: QoS overrides are written into the profile object.
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=5,
        reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def _to_msg(record: StatusRecord) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=bytes([int(record.level)]),
        name=record.name,
        message=record.message,
        hardware_id=record.hardware_id,
        values=[KeyValue(key=key, value=value) for key, value in record.values.items()],
    )


def _spin(executor: SingleThreadedExecutor, node: SegmenterNode, stop: threading.Event) -> None:
    """Spin until ``stop``; an exception escaping a callback is logged instead of ending the node."""
    while not stop.is_set():
        try:
            executor.spin_once(timeout_sec=0.25)
        except ExternalShutdownException:
            return
        except Exception as error:  # e.g. rclpy's lifecycle service raising on an invalid transition
            node.get_logger().error(
                f"a callback failed, the node carries on: {type(error).__name__}: {error}"
            )


def main(args: list[str] | None = None) -> None:
    # Own SIGINT/SIGTERM handling: rclpy's handler also raises KeyboardInterrupt at a random point,
    # which could cut the worker's shutdown short. Here a signal just ends the spin loop.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop.set())
    node = SegmenterNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        node.autostart()
        _spin(executor, node, stop)
    finally:
        node.release()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
