"""Latency, throughput, FLOPs and memory of the inference paths, timed interleaved in one run.

Four paths start from the same frames (random weights unless a checkpoint is given):

- ``closed_set``: normalisation, backbone + classifier, logits upsampled to full resolution, argmax.
  No inlier-posterior head: the minimal closed-set segmenter, built from the model's own modules.
- ``densehybrid``: the engine's own ``Segmenter.dense_maps`` (the same logits path plus the inlier
  head, its upsampling and the hybrid score), then argmax and open-set fusion.
- ``depth``: ``densehybrid`` plus per-depth-bin statistics of the score (depth uploaded from the host).
- ``node``: one step of the ROS node without DDS: decode ``sensor_msgs/Image`` messages (bgr8 colour,
  16UC1 depth), ``Segmenter.segment`` (upload, every map, depth report, download), encode the
  semantic / anomaly-score / open-set output messages.

The first three start from a uint8 batch already on the device, so ``densehybrid - closed_set`` is
exactly the inlier head + its upsampling + the score + the fusion. Within every iteration the paths
run in rotating order, so a change of machine load hits all of them alike. Several runtimes
(``--runtime torch,onnxruntime``) are timed in the same loop, one engine each, and compared stage by
stage with paired per-iteration ratios.

Beside the paths, every iteration also times the node's unknown-object stage on the host (connected
components and object statistics of the open-set mask, the decimated point cloud and its PointCloud2
encoding) on the maps of one DenseHybrid run, and relates it to that iteration's ``densehybrid`` time.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from rosbags.typesys import Stores, get_typestore
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from openset_perception.atomic import atomic_write_text
from openset_perception.checkpoint import ModelCard, load_checkpoint
from openset_perception.depth import DepthBinStats, depth_bin_statistics
from openset_perception.engine import PRECISIONS, Segmenter, check_runtime
from openset_perception.geometry import Intrinsics, anomaly_points
from openset_perception.image_codec import decode_color, decode_depth, numpy_to_image, rosbags_factories
from openset_perception.models import ArchitectureSpec, build_model
from openset_perception.models.blocks import resize_to
from openset_perception.objects import ObjectFilters, UnknownObject, find_objects
from openset_perception.point_cloud_codec import numpy_to_pointcloud2
from openset_perception.preprocess import hwc_batch_to_tensor, normalize, pad_to_multiple
from openset_perception.scoring import open_set_from_semantic, predicted_classes

PATHS = ("closed_set", "densehybrid", "depth", "node")
PATH_TITLES = {
    "closed_set": "closed-set forward + argmax",
    "densehybrid": "+ DenseHybrid score + open-set fusion",
    "depth": "+ depth binning",
    "node": "full node path (decode -> engine -> encode)",
}
# The maps the node publishes from the engine's output, in the node's encodings.
NODE_OUTPUT_ENCODINGS = {"semantic": "mono8", "anomaly_score": "32FC1", "open_set": "mono8"}
WIDTH_SCALABLE_BACKBONES = ("swiftnet_rn18",)
CITYSCAPES_CLASSES = 19
THRESHOLD_QUANTILE = 0.95
# The node's defaults for the object stage (object_min_pixels, object_max_distance, cloud_decimation).
OBJECT_FILTERS = ObjectFilters(min_pixels=50, max_distance_m=50.0)
CLOUD_DECIMATION = 2


@dataclass(frozen=True)
class BenchmarkConfig:
    backbone: str = "swiftnet_rn18"
    height: int = 1024
    width: int = 2048
    batch: int = 1
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    iterations: int = 100
    warmup: int = 10
    checkpoint: str | None = None
    model_width: float | None = None  # channel scale of width-scalable backbones (random weights only)
    num_classes: int = CITYSCAPES_CLASSES
    seed: int = 0
    runtime: str = "torch"
    execution_provider: str = "auto"  # onnxruntime's

    def __post_init__(self) -> None:
        check_runtime(self.runtime)
        if self.compile and self.runtime != "torch":
            raise ValueError("--compile applies to the torch runtime only")
        if self.height < 32 or self.width < 32:
            raise ValueError(f"the input must be at least 32x32, got {self.height}x{self.width}")
        if self.batch < 1 or self.iterations < 1 or self.warmup < 0:
            raise ValueError("batch and iterations must be >= 1 and warmup >= 0")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        if self.model_width is not None and self.backbone not in WIDTH_SCALABLE_BACKBONES:
            raise ValueError(
                f"--width applies to {', '.join(WIDTH_SCALABLE_BACKBONES)} only, not to {self.backbone}"
            )


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    p95_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    iterations: int

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        """Median and p95 with linear interpolation between order statistics (numpy's default)."""
        samples = np.asarray(samples_ms, dtype=np.float64)
        if samples.size == 0:
            raise ValueError("no timing samples")
        return cls(
            median_ms=float(np.median(samples)),
            p95_ms=float(np.percentile(samples, 95)),
            mean_ms=float(samples.mean()),
            min_ms=float(samples.min()),
            max_ms=float(samples.max()),
            iterations=int(samples.size),
        )


@dataclass(frozen=True)
class PathResult:
    latency: LatencyStats
    fps: float  # frames (not batches) per second at the median latency
    peak_memory_mb: float | None


@dataclass(frozen=True)
class Environment:
    device_name: str
    device_type: str
    precision: str  # the precision that ran (fp16 falls back to fp32 on the CPU)
    torch_version: str
    torch_threads: int
    commit: str
    date: str
    load_average: tuple[float, float]  # 1-minute load at the start and the end of the run
    peak_memory_kind: str


@dataclass
class BenchmarkResult:
    config: BenchmarkConfig
    environment: Environment
    paths: dict[str, PathResult]
    gflops: dict[str, float]  # closed_set and densehybrid, one forward of the whole batch
    node_stage_ms: dict[str, float]  # median engine stage timings inside the node path
    threshold: float
    threshold_source: str
    paired_overhead: dict[str, float]  # see paired_overheads
    samples_ms: dict[str, list[float]] = field(default_factory=dict)  # per path, in iteration order
    node_stage_samples_ms: dict[str, list[float]] = field(default_factory=dict)
    # Unknown-object stage: median_ms, p95_ms, share_of_densehybrid (median of per-iteration ratios),
    # objects, points, unknown_fraction (of the first frame).
    objects: dict[str, float] = field(default_factory=dict)
    overhead: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        """Ratios over the closed-set median, e.g. overhead['densehybrid'] = (b - a) / a."""
        closed = self.paths["closed_set"].latency.median_ms
        self.overhead = {name: (self.paths[name].latency.median_ms - closed) / closed for name in PATHS[1:]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "environment": asdict(self.environment),
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "paths": {
                name: {**asdict(path.latency), "fps": path.fps, "peak_memory_mb": path.peak_memory_mb}
                for name, path in self.paths.items()
            },
            "overhead": self.overhead,
            "paired_overhead": self.paired_overhead,
            "gflops": self.gflops,
            "node_stage_ms": self.node_stage_ms,
            "objects": self.objects,
        }


@dataclass(frozen=True)
class SyntheticInputs:
    frames: list[np.ndarray]  # HxWx3 uint8 RGB
    depth_m: list[np.ndarray]  # HxW float32 metres, NaN invalid


@dataclass(frozen=True)
class NodeOutput:
    messages: list[dict[str, Any]]  # per camera: output name -> sensor_msgs/Image
    depth_report: list[list[DepthBinStats] | None] | None
    timings_ms: dict[str, float]


def synthetic_inputs(batch: int, height: int, width: int, seed: int = 0) -> SyntheticInputs:
    """Noise frames and a road-like depth ramp (60 m at the top to 0.5 m at the bottom, 5% holes)."""
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(batch)]
    ramp = np.linspace(60.0, 0.5, height, dtype=np.float32)[:, None]
    depth = []
    for _ in range(batch):
        metres = np.repeat(ramp, width, axis=1)
        metres[rng.random((height, width)) < 0.05] = np.nan
        depth.append(metres)
    return SyntheticInputs(frames, depth)


def random_weights_card(backbone: str, num_classes: int, model_width: float | None = None) -> ModelCard:
    kwargs = {} if model_width is None else {"width": model_width}
    return ModelCard(
        architecture=ArchitectureSpec(backbone, num_classes, kwargs),
        class_names=[f"class_{k}" for k in range(num_classes)],
        palette=[(k, k, k) for k in range(num_classes)],
        description="random weights, for benchmarks",
    )


def build_segmenter(config: BenchmarkConfig) -> Segmenter:
    if config.checkpoint is not None:
        model, card = load_checkpoint(config.checkpoint)
        if card.architecture.backbone != config.backbone:
            raise ValueError(
                f"checkpoint {config.checkpoint} holds a {card.architecture.backbone}, "
                f"not a {config.backbone}"
            )
    else:
        torch.manual_seed(config.seed)
        card = random_weights_card(config.backbone, config.num_classes, config.model_width)
        model = build_model(card.architecture)
    # The benchmark owns its model: folded and channels-last, as from_checkpoint makes it.
    return Segmenter(
        model,
        card,
        device=config.device,
        precision=config.precision,
        runtime=config.runtime,
        execution_provider=config.execution_provider,
        owns_model=True,
        # Random weights have no threshold by construction; InferencePaths.set_threshold picks one.
        warn_uncalibrated=config.checkpoint is not None,
    )


class ClosedSetNetwork(nn.Module):
    """Backbone + classifier of an OpenSetSegmenter (shared modules, not copies), logits upsampled."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.classifier = model.classifier
        self.upsample = model.upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x, with_probes=False)
        return self.upsample(self.classifier(features.prelogits), x.shape[-2:])


class InferencePaths:
    """The four timed paths over one fixed batch; each call computes and returns its outputs."""

    def __init__(self, segmenter: Segmenter, inputs: SyntheticInputs) -> None:
        self.segmenter = segmenter
        self.inputs = inputs
        self.batch = hwc_batch_to_tensor(inputs.frames, segmenter.device, pin_memory=True)
        self.closed_set_network: nn.Module = ClosedSetNetwork(segmenter.model)
        self._pad_multiple = int(getattr(segmenter.model.backbone, "pad_multiple", 32))
        self._message_factory = rosbags_factories(get_typestore(Stores.ROS2_JAZZY)).image
        self._image_messages = [
            numpy_to_image(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), "bgr8", msg_factory=self._message_factory)
            for frame in inputs.frames
        ]
        millimetres = [np.nan_to_num(d * 1000.0, nan=0.0).astype(np.uint16) for d in inputs.depth_m]
        self._depth_messages = [
            numpy_to_image(mm, "16UC1", msg_factory=self._message_factory) for mm in millimetres
        ]

    def calls(self) -> dict[str, Callable[[], object]]:
        return {
            "closed_set": self.closed_set,
            "densehybrid": self.densehybrid,
            "depth": self.depth,
            "node": self.node,
        }

    def compile(self) -> None:
        """torch.compile both networks; the segmenter's model is replaced by its compiled version."""
        self.closed_set_network = torch.compile(self.closed_set_network)
        self.segmenter.model = torch.compile(self.segmenter.model)

    @torch.inference_mode()
    def closed_set(self) -> torch.Tensor:
        """(B,H,W) int64 argmax of the full-resolution logits, preprocessed as the engine does."""
        segmenter = self.segmenter
        height, width = self.batch.shape[-2:]
        x = normalize(self.batch, segmenter.card.normalization)
        input_size = segmenter.card.input_size
        if input_size is not None and tuple(input_size) != (height, width):
            x = F.interpolate(x, size=tuple(input_size), mode="bilinear", align_corners=False)
        net_height, net_width = x.shape[-2:]
        x, _ = pad_to_multiple(x, self._pad_multiple)
        if segmenter.runtime != "torch":
            # The exported graph is the whole network; its inlier head is one 1x1 convolution more.
            logits = resize_to(segmenter._network(x).logits, x.shape[-2:])
        else:
            x = x.contiguous(memory_format=segmenter.input_memory_format)
            with _autocast(segmenter.device, segmenter.precision):
                logits = self.closed_set_network(x)
        logits = logits[..., :net_height, :net_width]
        if (net_height, net_width) != (height, width):
            logits = F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False)
        return predicted_classes(logits)

    @torch.inference_mode()
    def densehybrid(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(semantic, open_set, score) on the device, through the engine's ``dense_maps``."""
        segmenter = self.segmenter
        dense = segmenter.dense_maps(self.batch)
        open_set = open_set_from_semantic(
            dense.semantic, dense.score, segmenter.threshold, segmenter.num_classes
        )
        return dense.semantic, open_set, dense.score

    @torch.inference_mode()
    def depth(self) -> list[list[DepthBinStats]]:
        _, _, score = self.densehybrid()
        depth = torch.from_numpy(np.stack(self.inputs.depth_m)).to(self.segmenter.device)
        return depth_bin_statistics(score, depth, self.segmenter.threshold, self.segmenter.depth_bins)

    def node(self) -> NodeOutput:
        images = [decode_color(msg) for msg in self._image_messages]
        depth = [decode_depth(msg) for msg in self._depth_messages]
        result = self.segmenter.segment(images, depth)
        messages = []
        for camera in range(len(images)):
            messages.append(
                {
                    name: numpy_to_image(
                        getattr(result, name)[camera], encoding, msg_factory=self._message_factory
                    )
                    for name, encoding in NODE_OUTPUT_ENCODINGS.items()
                }
            )
        return NodeOutput(messages, result.depth_report, result.timings_ms)

    def prepare_objects(self) -> None:
        """Host maps of one DenseHybrid run for the object stage, with a pinhole camera of focal = width."""
        _, open_set, score = self.densehybrid()
        self._unknown = (open_set == self.segmenter.num_classes).cpu().numpy()
        self._score = score.cpu().numpy()
        height, width = self._score.shape[-2:]
        self._intrinsics = Intrinsics.from_focal_length(float(width), width, height)
        typestore = get_typestore(Stores.ROS2_JAZZY)
        self._cloud_factories = (
            typestore.types["sensor_msgs/msg/PointCloud2"],
            typestore.types["sensor_msgs/msg/PointField"],
        )
        self._header = rosbags_factories(typestore).header()

    @property
    def unknown_fraction(self) -> float:
        return float(self._unknown.mean())

    def objects(self) -> tuple[list[list[UnknownObject]], list[Any]]:
        """The node's object stage per frame: objects, decimated points, PointCloud2 encoding."""
        cloud, point_field = self._cloud_factories
        objects, clouds = [], []
        for index, depth in enumerate(self.inputs.depth_m):
            mask, score = self._unknown[index], self._score[index]
            objects.append(find_objects(mask, score, depth, self._intrinsics, OBJECT_FILTERS))
            points = anomaly_points(depth, score, mask, self._intrinsics, CLOUD_DECIMATION)
            clouds.append(
                numpy_to_pointcloud2(points, self._header, msg_factory=cloud, field_factory=point_field)
            )
        return objects, clouds

    def set_threshold(self) -> str:
        """Use the card's threshold; without one, flag the top 5% of this run's scores, so the
        fusion and the depth statistics do the work they do in deployment."""
        if self.segmenter.card.threshold is not None:
            return "model card"
        with torch.inference_mode():
            score = self.segmenter.dense_maps(self.batch).score.flatten()
        sample = score[:: max(1, score.numel() // 1_000_000)].float()
        self.segmenter.threshold = float(torch.quantile(sample, THRESHOLD_QUANTILE))
        return f"{THRESHOLD_QUANTILE:.0%} quantile of the run's scores (no calibrated threshold)"


def run_benchmark(config: BenchmarkConfig, progress: bool = True) -> BenchmarkResult:
    """Warm up, then time every path ``config.iterations`` times, interleaved."""
    return run_interleaved([config], progress)[0]


def run_interleaved(configs: Sequence[BenchmarkConfig], progress: bool = True) -> list[BenchmarkResult]:
    """``run_benchmark`` for several configurations (e.g. one per runtime) in one loop.

    Every iteration runs every path of every configuration, in an order that rotates from one
    iteration to the next, so load changes on a shared machine hit all of them alike.
    """
    load_start = os.getloadavg()[0]
    first = configs[0]
    segmenters = [build_segmenter(config) for config in configs]
    inputs = synthetic_inputs(first.batch, first.height, first.width, first.seed)
    all_paths = [InferencePaths(segmenter, inputs) for segmenter in segmenters]
    threshold_sources = [paths.set_threshold() for paths in all_paths]
    # FLOPs are counted on the eager torch modules: the counter cannot see inside compiled graphs
    # or onnxruntime; every runtime computes the same network.
    gflops = {name: count_gflops(all_paths[0].calls()[name]) for name in ("closed_set", "densehybrid")}
    for config, paths in zip(configs, all_paths, strict=True):
        if config.compile:
            paths.compile()
    jobs = [(index, name) for index in range(len(configs)) for name in PATHS]
    calls = [paths.calls() for paths in all_paths]
    samples: list[dict[str, list[float]]] = [{name: [] for name in PATHS} for _ in configs]
    node_stages: list[dict[str, list[float]]] = [{} for _ in configs]
    runtimes = ",".join(config.runtime for config in configs)
    label = (
        f"{first.backbone} {first.height}x{first.width} b{first.batch} {segmenters[0].precision} {runtimes}"
    )
    object_ms: list[list[float]] = [[] for _ in configs]
    object_outputs: list[tuple[list, list]] = [([], []) for _ in configs]
    for paths in all_paths:
        paths.prepare_objects()
    for iteration in tqdm(range(first.warmup + first.iterations), desc=label, disable=not progress):
        offset = iteration % len(jobs)
        for index, name in jobs[offset:] + jobs[:offset]:
            elapsed_ms, output = timed_call(calls[index][name], segmenters[index].device)
            if iteration < first.warmup:
                continue
            samples[index][name].append(elapsed_ms)
            if name == "node":
                stages = node_stages[index]
                for stage, ms in output.timings_ms.items():
                    stages.setdefault(stage, []).append(ms)
                # What the node does outside the engine: message decoding and encoding.
                stages.setdefault("decode + encode", []).append(elapsed_ms - sum(output.timings_ms.values()))
        for index, paths in enumerate(all_paths):
            elapsed_ms, object_outputs[index] = timed_call(paths.objects, segmenters[index].device)
            if iteration >= first.warmup:
                object_ms[index].append(elapsed_ms)
    load_end = os.getloadavg()[0]
    return [
        _result(
            config,
            segmenter,
            calls[i],
            samples[i],
            node_stages[i],
            gflops,
            threshold_sources[i],
            (load_start, load_end),
            _object_stage(object_ms[i], samples[i]["densehybrid"], *object_outputs[i], all_paths[i]),
        )
        for i, (config, segmenter) in enumerate(zip(configs, segmenters, strict=True))
    ]


def _result(
    config: BenchmarkConfig,
    segmenter: Segmenter,
    calls: Mapping[str, Callable[[], object]],
    samples: Mapping[str, list[float]],
    node_stages: Mapping[str, list[float]],
    gflops: dict[str, float],
    threshold_source: str,
    load_average: tuple[float, float],
    objects: dict[str, float],
) -> BenchmarkResult:
    memory = {name: peak_memory_mb(calls[name], segmenter.device) for name in PATHS}
    results = {}
    for name in PATHS:
        latency = LatencyStats.from_samples(samples[name])
        results[name] = PathResult(latency, 1e3 * config.batch / latency.median_ms, memory[name])
    environment = Environment(
        device_name=device_name(segmenter.device),
        device_type=segmenter.device.type,
        precision=segmenter.precision,
        torch_version=torch.__version__,
        torch_threads=torch.get_num_threads(),
        commit=git_commit(),
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        load_average=load_average,
        peak_memory_kind="cuda_max_allocated" if segmenter.device.type == "cuda" else "cpu_process_peak_rss",
    )
    return BenchmarkResult(
        config=config,
        environment=environment,
        paths=results,
        gflops=gflops,
        node_stage_ms={stage: float(np.median(ms)) for stage, ms in node_stages.items()},
        threshold=segmenter.threshold,
        threshold_source=threshold_source,
        paired_overhead=paired_overheads(samples),
        samples_ms={name: list(values) for name, values in samples.items()},
        node_stage_samples_ms={stage: list(values) for stage, values in node_stages.items()},
        objects=objects,
    )


def _object_stage(
    object_ms: Sequence[float],
    densehybrid_ms: Sequence[float],
    objects: Sequence[Sequence[UnknownObject]],
    clouds: Sequence[Any],
    paths: InferencePaths,
) -> dict[str, float]:
    latency = LatencyStats.from_samples(object_ms)
    share = np.asarray(object_ms, np.float64) / np.asarray(densehybrid_ms, np.float64)
    return {
        "median_ms": latency.median_ms,
        "p95_ms": latency.p95_ms,
        "share_of_densehybrid": float(np.median(share)),
        "objects": float(np.mean([len(frame) for frame in objects])),
        "points": float(np.mean([cloud.width for cloud in clouds])),
        "unknown_fraction": paths.unknown_fraction,
    }


def paired_overheads(samples_ms: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Per path, the median over iterations of (path - closed-set) / closed-set within each iteration.

    One iteration's calls run back to back, so a slow spell of a shared machine lifts both sides of a
    pair; the ratio of the two medians compares calls from different moments and, on this 2-core
    machine, moved between +2 % and +9 % for the same code over 30 iterations.
    """
    closed = np.asarray(samples_ms["closed_set"], dtype=np.float64)
    return {
        name: float(np.median((np.asarray(samples_ms[name], dtype=np.float64) - closed) / closed))
        for name in PATHS[1:]
    }


def timed_call(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Wall time of ``fn`` in ms, with the device synchronised before and after."""
    _synchronize(device)
    start = time.perf_counter()
    output = fn()
    _synchronize(device)
    return (time.perf_counter() - start) * 1e3, output


def count_gflops(fn: Callable[[], Any]) -> float:
    """GFLOPs of one call as torch's FlopCounterMode counts them (a multiply-add is 2 FLOPs)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


def peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> float | None:
    """CUDA: max_memory_allocated during one call (weights included). CPU: the process's peak RSS
    during it (weights, buffers and the interpreter included), or None where the kernel does not let a
    process reset its peak RSS. (Growth during the call would read 0 on the CPU: after warm-up the
    allocator reuses memory it already holds.)"""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        # Writing 5 resets VmHWM (the peak RSS) to the current RSS (Linux >= 4.0).
        Path("/proc/self/clear_refs").write_text("5")
        fn()
        return _proc_status_kb("VmHWM") / 1024
    except (OSError, KeyError, ValueError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical CPUs)"


def git_commit() -> str:
    """Short commit of the package's checkout, '-dirty' when tracked files differ from it."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        # --no-optional-locks: a benchmark must not touch the repository's index.
        command = ["git", "--no-optional-locks", "-C", str(repo), *args]
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


MARKDOWN_COLUMNS = (
    "date",
    "commit",
    "device",
    "backbone",
    "input",
    "batch",
    "precision",
    "runtime",
    "compile",
    "threads",
    "iters",
    "closed-set ms median (p95)",
    "+ DenseHybrid ms median (p95)",
    "DenseHybrid overhead",
    "+ depth ms median (p95)",
    "node path ms median (p95)",
    "node FPS",
    "GFLOPs closed / hybrid",
    "peak MB closed / hybrid / node",
    "torch",
)


def overhead_text(result: BenchmarkResult) -> str:
    """DenseHybrid's overhead as the ratio of medians and, in brackets, the paired estimate."""
    return (
        f"{100 * result.overhead['densehybrid']:+.2f} % "
        f"(paired {100 * result.paired_overhead['densehybrid']:+.2f} %)"
    )


def markdown_row(result: BenchmarkResult) -> str:
    """One table row; latencies as 'median (p95)'."""
    config, env, paths = result.config, result.environment, result.paths

    def latency(name: str) -> str:
        stats = paths[name].latency
        return f"{stats.median_ms:.1f} ({stats.p95_ms:.1f})"

    def memory(name: str) -> str:
        value = paths[name].peak_memory_mb
        return "n/a" if value is None else f"{value:.0f}"

    width = "" if config.model_width is None else f" (width {config.model_width:g})"
    cells = (
        env.date,
        env.commit,
        env.device_name,
        config.backbone + width,
        f"{config.height}x{config.width}",
        str(config.batch),
        env.precision,
        config.runtime,
        "yes" if config.compile else "no",
        str(env.torch_threads),
        str(paths["closed_set"].latency.iterations),
        latency("closed_set"),
        latency("densehybrid"),
        overhead_text(result),
        latency("depth"),
        latency("node"),
        f"{paths['node'].fps:.2f}",
        f"{result.gflops['closed_set']:.2f} / {result.gflops['densehybrid']:.2f}",
        " / ".join(memory(name) for name in ("closed_set", "densehybrid", "node")),
        env.torch_version,
    )
    return "| " + " | ".join(cells) + " |"


def markdown_table(results: Sequence[BenchmarkResult]) -> str:
    header = "| " + " | ".join(MARKDOWN_COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in MARKDOWN_COLUMNS) + "|"
    return "\n".join([header, rule, *(markdown_row(r) for r in results)])


def markdown_block(results: Sequence[BenchmarkResult], command: str) -> str:
    """A dated run: the command, the load it ran under, the table, and the engine's stage split."""
    first = results[0].environment
    loads = ", ".join(
        f"{r.config.backbone} {r.environment.load_average[0]:.2f} -> {r.environment.load_average[1]:.2f}"
        for r in results
    )
    lines = [
        f"### {first.date}, {first.device_name}, commit {first.commit}",
        "",
        f"`{command}`",
        "",
        f"1-minute load average at start -> end: {loads}. Latency: median (p95) over the iterations; "
        "overhead: ratio of the medians (paired: median of the per-iteration ratios); "
        f"peak memory: {first.peak_memory_kind}.",
        "",
        markdown_table(results),
        "",
    ]
    for r in results:
        stages = ", ".join(f"{stage} {ms:.1f}" for stage, ms in r.node_stage_ms.items())
        lines.append(
            f"- {r.config.backbone} ({r.config.runtime}): stages of the node path (median ms): {stages}; "
            f"threshold {r.threshold:.4g} ({r.threshold_source})."
        )
        if r.objects:
            lines.append(f"- {r.config.backbone}: {object_stage_text(r)}.")
    for group in runtime_groups(results):
        lines += ["", runtime_comparison_table(group)]
    return "\n".join(lines) + "\n"


def runtime_groups(results: Sequence[BenchmarkResult]) -> list[list[BenchmarkResult]]:
    """Results of one backbone timed together under several runtimes (consecutive in ``results``)."""
    groups: dict[str, list[BenchmarkResult]] = {}
    for r in results:
        groups.setdefault(r.config.backbone, []).append(r)
    return [group for group in groups.values() if len({r.config.runtime for r in group}) > 1]


NODE_STAGES = ("decode + encode", "preprocess", "network", "scoring", "postprocess", "depth")


def paired_ratio(reference: Sequence[float], candidate: Sequence[float]) -> float:
    """Median over iterations of reference / candidate (how many times faster the candidate is)."""
    ref, cand = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    return float(np.median(ref / np.maximum(cand, 1e-9)))


def runtime_comparison_table(group: Sequence[BenchmarkResult]) -> str:
    """Per-stage medians of the node path per runtime, the non-network share, and paired speed-ups
    over the first runtime (first / other, per iteration, median)."""
    reference = group[0]
    names = [r.config.runtime for r in group]
    header = [
        "stage",
        *(f"{name} ms" for name in names),
        *(f"{reference.config.runtime} / {n}" for n in names[1:]),
    ]
    rows = []

    def row(label: str, values: list[Sequence[float]]) -> None:
        medians = [f"{np.median(v):.1f}" for v in values]
        ratios = [f"{paired_ratio(values[0], v):.2f}x" for v in values[1:]]
        rows.append([label, *medians, *ratios])

    for stage in NODE_STAGES:
        if all(stage in r.node_stage_samples_ms for r in group):
            row(stage, [r.node_stage_samples_ms[stage] for r in group])
    for path in PATHS:
        row(PATH_TITLES[path], [r.samples_ms[path] for r in group])
    share = []
    for r in group:
        node = np.asarray(r.samples_ms["node"])
        network = np.asarray(r.node_stage_samples_ms["network"])
        share.append(f"{100 * np.median((node - network) / node):.1f} %")
    rows.append(["non-network share of the node path", *share, *([""] * (len(group) - 1))])
    lines = [
        f"{reference.config.backbone} {reference.config.height}x{reference.config.width} batch "
        f"{reference.config.batch}, runtimes interleaved (median ms; ratios: paired per iteration):",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    return "\n".join(lines)


def append_markdown(path: str | Path, results: Sequence[BenchmarkResult], command: str) -> None:
    """Append a run to a Markdown file (created if missing); earlier content is kept as it was.

    The whole file is rewritten atomically, so a kill mid-write leaves the old file, never half a run.
    """
    path = Path(path)
    earlier = path.read_text(encoding="utf-8") if path.is_file() else ""
    atomic_write_text(path, earlier + "\n" + markdown_block(results, command))


def object_stage_text(result: BenchmarkResult) -> str:
    o = result.objects
    return (
        f"unknown objects + point cloud (host, per batch) {o['median_ms']:.1f} ms median "
        f"({o['p95_ms']:.1f} p95) = {100 * o['share_of_densehybrid']:.2f} % of the DenseHybrid path "
        f"(paired); {o['objects']:.0f} objects, {o['points']:.0f} points per frame, "
        f"{100 * o['unknown_fraction']:.1f} % of the pixels unknown"
    )


def summary_line(result: BenchmarkResult) -> str:
    config, paths = result.config, result.paths
    median = {name: paths[name].latency.median_ms for name in PATHS}
    return (
        f"{config.backbone} {config.height}x{config.width} batch {config.batch} "
        f"{result.environment.precision} {config.runtime}{' compiled' if config.compile else ''}: "
        f"closed-set {median['closed_set']:.1f} ms, + DenseHybrid {median['densehybrid']:.1f} ms "
        f"({overhead_text(result)}), + depth {median['depth']:.1f} ms, "
        f"node path {median['node']:.1f} ms ({paths['node'].fps:.2f} FPS); "
        f"GFLOPs {result.gflops['closed_set']:.2f} / {result.gflops['densehybrid']:.2f}; "
        + object_stage_text(result)
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def _proc_status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(key)
