"""The segmenter node's parameters: definitions, validation and the settings built from them.

ROS-agnostic: the node turns each ``ParameterSpec`` into a declared parameter with a descriptor, and
calls ``validate_changes`` from its set-parameters callback, so every rule here is unit-tested
without ROS. Read-only parameters are fixed at start-up (``NodeConfig``); the others may change at
run time (``RuntimeSettings``).
"""

from __future__ import annotations

import array
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openset_perception.depth import DEFAULT_EDGES_M, DepthBins
from openset_perception.engine import EXECUTION_PROVIDERS, PRECISIONS, RUNTIMES
from openset_perception.image_codec import DEFAULT_MAX_PIXELS, MAX_PIXELS_CEILING
from openset_perception.objects import ObjectFilters
from openset_perception.runtime.depth_report import DangerZone
from openset_perception.runtime.outputs import OUTPUT_NAMES
from openset_perception.scoring import SCORE_METHODS

DEFAULT_MODEL = "streets_swiftnet_small.safetensors"
PARAMETER_TYPES = ("bool", "int", "double", "string", "string_array", "int_array", "double_array")
_CAMERA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class ParameterError(ValueError):
    """A parameter value the node cannot use; the message names the parameter."""


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    type: str  # one of PARAMETER_TYPES
    default: Any
    description: str
    read_only: bool = True
    min_value: float | None = None
    max_value: float | None = None
    choices: tuple[str, ...] = ()
    constraints: str = ""  # human-readable rules beyond type, range and choices


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("autostart", "bool", True, "Configure and activate by itself at start-up."),
    ParameterSpec(
        "model",
        "string",
        DEFAULT_MODEL,
        "Checkpoint (.safetensors with model card). A relative path is looked up in the package's "
        "share/models/ first, then in the working directory.",
    ),
    ParameterSpec("device", "string", "auto", "Inference device.", constraints="auto, cpu, cuda or cuda:N"),
    ParameterSpec("precision", "string", "fp32", "Inference precision.", choices=tuple(PRECISIONS)),
    ParameterSpec(
        "runtime",
        "string",
        "torch",
        "Network runtime (onnxruntime needs the onnxruntime package).",
        choices=RUNTIMES,
    ),
    ParameterSpec(
        "execution_provider",
        "string",
        "auto",
        "onnxruntime execution provider; auto: TensorRT, CUDA, CPU as available on a CUDA device.",
        choices=EXECUTION_PROVIDERS,
    ),
    ParameterSpec(
        "cameras",
        "string_array",
        ["camera"],
        "Camera names; each reads <cam>/image and <cam>/depth and publishes <cam>/<output>.",
        constraints="distinct ROS names, e.g. front or front/left",
    ),
    ParameterSpec(
        "compressed", "bool", False, "Read <cam>/image/compressed (JPEG/PNG) instead of <cam>/image."
    ),
    ParameterSpec("use_depth", "bool", True, "Synchronise a depth image per camera for the depth report."),
    ParameterSpec(
        "compressed_depth", "bool", False, "Read <cam>/depth/compressedDepth instead of <cam>/depth."
    ),
    ParameterSpec(
        "use_camera_info",
        "bool",
        True,
        "Pair <cam>/camera_info with each image: the intrinsics of unknown_objects and unknown_points "
        "(without it, focal_length_px or no 3D outputs).",
    ),
    ParameterSpec(
        "sync_slop",
        "double",
        0.05,
        "Largest stamp difference in seconds between an image and its depth / camera_info partner.",
        min_value=0.001,
        max_value=1.0,
    ),
    ParameterSpec(
        "sync_queue_size", "int", 5, "Messages kept per stream for stamp pairing.", min_value=1, max_value=100
    ),
    ParameterSpec(
        "outputs",
        "string_array",
        list(OUTPUT_NAMES),
        "Outputs to advertise per camera; outputs without subscribers are not computed.",
        constraints=f"a non-empty subset of {', '.join(OUTPUT_NAMES)}",
    ),
    ParameterSpec(
        "publisher_depth", "int", 2, "History depth of the output publishers.", min_value=1, max_value=5
    ),
    ParameterSpec(
        "warmup_shape",
        "int_array",
        [256, 512],
        "Image size [height, width] of the warm-up frames run on activation; [0, 0] skips warm-up.",
        constraints="[0, 0] or [height, width] with both >= 32",
    ),
    ParameterSpec(
        "diagnostics_period",
        "double",
        1.0,
        "Seconds between /diagnostics messages.",
        min_value=0.1,
        max_value=60.0,
    ),
    ParameterSpec(
        "max_input_age",
        "double",
        0.5,
        "Frames whose stamp is older than this many seconds when inference is free are dropped; 0 disables.",
        read_only=False,
        min_value=0.0,
        max_value=3600.0,
    ),
    ParameterSpec(
        "max_input_pixels",
        "int",
        DEFAULT_MAX_PIXELS,
        "Largest image (height x width, read from the header before decoding) a frame may have; "
        "larger frames are skipped with a warning.",
        read_only=False,
        min_value=32 * 32,
        max_value=MAX_PIXELS_CEILING,
    ),
    ParameterSpec(
        "batch_window",
        "double",
        0.01,
        "Seconds to wait for the other cameras' frames so they share a forward pass.",
        read_only=False,
        min_value=0.0,
        max_value=0.5,
    ),
    ParameterSpec(
        "threshold",
        "double",
        math.nan,
        "Anomaly score threshold; pixels at or above it are unknown. NaN = the model card's value.",
        read_only=False,
    ),
    ParameterSpec(
        "score_method",
        "string",
        "",
        "Anomaly score; empty = the model card's method.",
        read_only=False,
        choices=("", *SCORE_METHODS),
    ),
    ParameterSpec(
        "danger_range",
        "double_array",
        [0.0, 20.0],
        "[near, far] metres: a depth bin warns when its nearest anomaly lies in this range.",
        read_only=False,
        constraints="[near, far] with 0 <= near < far",
    ),
    ParameterSpec(
        "danger_min_pixels",
        "int",
        20,
        "Anomalous pixels a depth bin needs before it can warn.",
        read_only=False,
        min_value=1,
        max_value=100_000_000,
    ),
    ParameterSpec(
        "depth_bins",
        "double_array",
        [float(e) for e in DEFAULT_EDGES_M],
        "Depth bin edges in metres; a last bin reaches from the last edge to infinity.",
        read_only=False,
        constraints="at least two finite, increasing edges >= 0",
    ),
    ParameterSpec(
        "focal_length_px",
        "double",
        0.0,
        "Focal length in pixels (principal point in the image centre) used while no usable camera_info "
        "has arrived; 0 = none: the 3D outputs stay off until camera_info comes.",
        read_only=False,
        min_value=0.0,
        max_value=1e6,
    ),
    ParameterSpec(
        "object_min_pixels",
        "int",
        50,
        "Pixels a connected unknown region needs to be reported as an object.",
        read_only=False,
        min_value=1,
        max_value=100_000_000,
    ),
    ParameterSpec(
        "object_min_size",
        "double",
        0.0,
        "Metres an object's larger side (width or height) needs to be reported; needs 3D; 0 = any.",
        read_only=False,
        min_value=0.0,
        max_value=1000.0,
    ),
    ParameterSpec(
        "object_max_distance",
        "double",
        50.0,
        "Objects whose nearest valid depth lies farther (metres) are not reported.",
        read_only=False,
        min_value=0.1,
        max_value=100_000.0,
    ),
    ParameterSpec(
        "cloud_decimation",
        "int",
        2,
        "unknown_points keeps every N-th pixel row and column of the unknown pixels with valid depth.",
        read_only=False,
        min_value=1,
        max_value=64,
    ),
    ParameterSpec(
        "heatmap_span",
        "double",
        40.0,
        "Width of the heat map's fixed score range, centred on the threshold.",
        read_only=False,
        min_value=1e-3,
        max_value=1e6,
    ),
    ParameterSpec(
        "overlay_alpha",
        "double",
        0.5,
        "Weight of the class colours in the overlay.",
        read_only=False,
        min_value=0.0,
        max_value=1.0,
    ),
)
SPECS: dict[str, ParameterSpec] = {spec.name: spec for spec in PARAMETERS}


@dataclass(frozen=True)
class NodeConfig:
    """The read-only parameters, fixed from configuration on."""

    autostart: bool
    model: str
    device: str
    precision: str
    runtime: str
    execution_provider: str
    cameras: tuple[str, ...]
    compressed: bool
    use_depth: bool
    compressed_depth: bool
    use_camera_info: bool
    sync_slop: float
    sync_queue_size: int
    outputs: tuple[str, ...]
    publisher_depth: int
    warmup_shape: tuple[int, int] | None
    diagnostics_period: float

    def image_topic(self, camera: str) -> str:
        return f"{camera}/image/compressed" if self.compressed else f"{camera}/image"

    def depth_topic(self, camera: str) -> str | None:
        if not self.use_depth:
            return None
        return f"{camera}/depth/compressedDepth" if self.compressed_depth else f"{camera}/depth"

    def camera_info_topic(self, camera: str) -> str | None:
        return f"{camera}/camera_info" if self.use_camera_info else None


def output_topic(camera: str, output: str) -> str:
    return f"{camera}/{output}"


@dataclass(frozen=True)
class RuntimeSettings:
    """The parameters that may change while the node runs."""

    max_input_age_s: float
    max_input_pixels: int
    batch_window_s: float
    threshold: float | None  # None: the model card's
    score_method: str | None  # None: the model card's
    danger: DangerZone
    depth_bins: DepthBins
    heatmap_span: float
    overlay_alpha: float
    objects: ObjectFilters = field(default_factory=ObjectFilters)
    focal_length_px: float | None = None  # None: no fallback for a missing camera_info
    cloud_decimation: int = 1


def default_values() -> dict[str, Any]:
    return {spec.name: spec.default for spec in PARAMETERS}


def check_value(name: str, value: Any) -> None:
    """Raise ``ParameterError`` unless ``value`` is acceptable for parameter ``name``."""
    spec = SPECS.get(name)
    if spec is None:
        raise ParameterError(f"unknown parameter '{name}'")
    _check_type(spec, value)
    if spec.type in ("int", "double") and not math.isnan(value):
        if spec.min_value is not None and value < spec.min_value:
            raise ParameterError(f"{name} must be >= {spec.min_value}, got {value}")
        if spec.max_value is not None and value > spec.max_value:
            raise ParameterError(f"{name} must be <= {spec.max_value}, got {value}")
    if spec.choices and value not in spec.choices:
        raise ParameterError(f"{name} must be one of {list(spec.choices)}, got '{value}'")
    checker = _EXTRA_CHECKS.get(name)
    if checker is not None:
        checker(value)


def validate_changes(changes: Mapping[str, Any], current: Mapping[str, Any]) -> RuntimeSettings:
    """The settings after applying ``changes`` to ``current``; ``ParameterError`` if any change is refused.

    Names this module does not define (e.g. QoS overrides) are left to their owners.
    """
    for name, value in changes.items():
        spec = SPECS.get(name)
        if spec is None:
            continue
        if spec.read_only:
            raise ParameterError(f"{name} is read-only while the node runs")
        check_value(name, value)
    return runtime_settings({**current, **changes})


def runtime_settings(values: Mapping[str, Any]) -> RuntimeSettings:
    """Settings from a full set of parameter values (missing ones take their defaults)."""
    v = _checked({**default_values(), **values}, (s.name for s in PARAMETERS if not s.read_only))
    near, far = v["danger_range"]
    return RuntimeSettings(
        max_input_age_s=float(v["max_input_age"]),
        max_input_pixels=int(v["max_input_pixels"]),
        batch_window_s=float(v["batch_window"]),
        threshold=None if math.isnan(v["threshold"]) else float(v["threshold"]),
        score_method=v["score_method"] or None,
        danger=DangerZone(float(near), float(far), int(v["danger_min_pixels"])),
        depth_bins=DepthBins(tuple(float(e) for e in v["depth_bins"])),
        heatmap_span=float(v["heatmap_span"]),
        overlay_alpha=float(v["overlay_alpha"]),
        objects=ObjectFilters(
            int(v["object_min_pixels"]), float(v["object_min_size"]), float(v["object_max_distance"])
        ),
        focal_length_px=float(v["focal_length_px"]) or None,
        cloud_decimation=int(v["cloud_decimation"]),
    )


def node_config(values: Mapping[str, Any]) -> NodeConfig:
    """The read-only configuration from parameter values (missing ones take their defaults)."""
    v = _checked({**default_values(), **values}, (s.name for s in PARAMETERS if s.read_only))
    return NodeConfig(
        autostart=bool(v["autostart"]),
        model=str(v["model"]),
        device=str(v["device"]),
        precision=str(v["precision"]),
        runtime=str(v["runtime"]),
        execution_provider=str(v["execution_provider"]),
        cameras=tuple(v["cameras"]),
        compressed=bool(v["compressed"]),
        use_depth=bool(v["use_depth"]),
        compressed_depth=bool(v["compressed_depth"]),
        use_camera_info=bool(v["use_camera_info"]),
        sync_slop=float(v["sync_slop"]),
        sync_queue_size=int(v["sync_queue_size"]),
        outputs=tuple(v["outputs"]),
        publisher_depth=int(v["publisher_depth"]),
        warmup_shape=(int(v["warmup_shape"][0]), int(v["warmup_shape"][1]))
        if any(v["warmup_shape"])
        else None,
        diagnostics_period=float(v["diagnostics_period"]),
    )


def resolve_model_path(model: str, share_dir: Path | None, cwd: Path | None = None) -> Path:
    """Absolute paths as given; relative ones in ``share_dir/models`` first, then in ``cwd``."""
    path = Path(model).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [share_dir / "models" / path] if share_dir is not None else []
        candidates.append((cwd or Path.cwd()) / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise ParameterError(f"model '{model}' not found (looked at {tried})")


def _checked(values: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    for name in names:
        check_value(name, values[name])
    return dict(values)


def _check_type(spec: ParameterSpec, value: Any) -> None:
    scalar_checks = {
        "bool": lambda x: isinstance(x, bool),
        "int": lambda x: isinstance(x, int) and not isinstance(x, bool),
        "double": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
        "string": lambda x: isinstance(x, str),
    }
    element_type = spec.type.removesuffix("_array")
    if spec.type.endswith("_array"):
        # rclpy hands arrays from the parameter service over as array.array.
        is_array = isinstance(value, (list, tuple, array.array))
        ok = is_array and all(scalar_checks[element_type](x) for x in value)
    else:
        ok = scalar_checks[spec.type](value)
    if not ok:
        raise ParameterError(f"{spec.name} must be of type {spec.type}, got {value!r}")


def _check_cameras(cameras: Sequence[str]) -> None:
    if not cameras:
        raise ParameterError("cameras must name at least one camera")
    if len(set(cameras)) != len(cameras):
        raise ParameterError(f"cameras must be distinct, got {list(cameras)}")
    for camera in cameras:
        if not _CAMERA_NAME.match(camera):
            raise ParameterError(f"camera name '{camera}' is not a valid relative ROS name")


def _check_outputs(outputs: Sequence[str]) -> None:
    unknown = sorted(set(outputs) - set(OUTPUT_NAMES))
    if unknown or not outputs or len(set(outputs)) != len(outputs):
        raise ParameterError(f"outputs must be distinct names from {list(OUTPUT_NAMES)}, got {list(outputs)}")


def _check_device(device: str) -> None:
    if not _DEVICE.match(device):
        raise ParameterError(f"device must be auto, cpu, cuda or cuda:N, got '{device}'")


def _check_warmup_shape(shape: Sequence[int]) -> None:
    # ROS parameter files cannot hold an empty array, so [0, 0] is the "off" value.
    if len(shape) != 2 or (any(shape) and min(shape) < 32):
        raise ParameterError(
            f"warmup_shape must be [0, 0] or [height, width] with both >= 32, got {list(shape)}"
        )


def _check_danger_range(bounds: Sequence[float]) -> None:
    if len(bounds) != 2:
        raise ParameterError(f"danger_range must be [near, far], got {list(bounds)}")
    try:
        DangerZone(float(bounds[0]), float(bounds[1]))
    except ValueError as error:
        raise ParameterError(f"danger_range: {error}") from None


def _check_depth_bins(edges: Sequence[float]) -> None:
    try:
        DepthBins(tuple(float(e) for e in edges))
    except ValueError as error:
        raise ParameterError(f"depth_bins: {error}") from None


def _check_finite(name: str):
    def check(value: float) -> None:
        if not math.isfinite(value):
            raise ParameterError(f"{name} must be a finite number, got {value}")

    return check


_EXTRA_CHECKS = {
    **{name: _check_finite(name) for name in ("focal_length_px", "object_min_size", "object_max_distance")},
    "cameras": _check_cameras,
    "outputs": _check_outputs,
    "device": _check_device,
    "warmup_shape": _check_warmup_shape,
    "danger_range": _check_danger_range,
    "depth_bins": _check_depth_bins,
}
