"""The inference engine: uint8 camera frames in, semantic / anomaly / open-set maps out.

This is the single code path used by the ROS node, dataset and rosbag evaluation, the demo,
benchmarks and validation during training. Preprocessing (normalisation, optional resize, padding
to the network stride) and postprocessing (upsampling, scoring, argmax, open-set fusion, depth
binning) run on the model's device; only the final uint8/float32 maps travel back to the host.

Two runtimes run the network and share everything else: ``torch`` (PyTorch eager; BatchNorm folded
into the convolutions when the engine owns the model) and ``onnxruntime`` (the exported network
through its CPU, CUDA or TensorRT execution providers, see ``onnx_runtime``). Either way the network
stops at its output stride; on a CPU the upsampling to full resolution, the argmax and the score then
run as one compiled kernel (``kernels.upsample_score``), so the K x H x W logits exist only for a
caller that asks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from openset_perception.checkpoint import ModelCard, load_checkpoint
from openset_perception.depth import DepthBins, DepthBinStats, depth_bin_statistics
from openset_perception.host_memory import keep_freed_memory
from openset_perception.models.blocks import resize_to
from openset_perception.models.fold import fold_batchnorm as fold_model_batchnorm
from openset_perception.models.segmenter import SegmenterOutput
from openset_perception.preprocess import hwc_batch_to_tensor, normalize, normalize_padded, pad_to_multiple
from openset_perception.row_blocks import tracing
from openset_perception.scoring import (
    MOOSE_METHODS,
    SCORE_METHODS,
    check_score_method,
    classes_and_anomaly_score,
    open_set_from_semantic,
)

LOGGER = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
OUTPUTS = ("semantic", "anomaly_score", "open_set", "depth_report")
RUNTIMES = ("torch", "onnxruntime")
EXECUTION_PROVIDERS = ("auto", "tensorrt", "cuda", "cpu")  # onnxruntime's; auto: the best available


@dataclass
class FrameResult:
    """Per-frame maps for a batch of B frames; outputs that were not requested are None."""

    semantic: np.ndarray | None  # (B,H,W) uint8 train ids
    anomaly_score: np.ndarray | None  # (B,H,W) float32, higher = more anomalous
    open_set: np.ndarray | None  # (B,H,W) uint8, K = unknown
    depth_report: list[list[DepthBinStats] | None] | None  # per frame; None where no depth came
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class DenseMaps:
    """Full-resolution device tensors, for callers that keep computing on the device (validation)."""

    logits: torch.Tensor | None  # (B,K,H,W) float, only when asked for (with_logits)
    semantic: torch.Tensor  # (B,H,W) closed-set argmax: uint8, int64 for models of 255 classes or more
    score: torch.Tensor  # (B,H,W) float32


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it falls back to CPU with a loud warning."""
    requested = str(device)
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        LOGGER.warning(
            "CUDA device '%s' requested but CUDA is not available: running on the CPU (slow)", requested
        )
        return torch.device("cpu")
    return torch.device(requested)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if precision == "fp16" and device.type == "cpu":
        LOGGER.warning("fp16 is not supported on the CPU: using fp32")
        return "fp32"
    return precision


def check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got '{runtime}'")


# Scores that read the inlier-posterior head g(z); meaningless for a checkpoint whose head is untrained.
INLIER_HEAD_METHODS = ("densehybrid", "discriminative")


class Segmenter:
    """A loaded model plus its card, ready to segment batches of HxWx3 uint8 RGB frames.

    ``runtime``: ``torch`` or ``onnxruntime`` (needs the onnxruntime package; ``execution_provider``
    forces tensorrt, cuda or cpu). ``owns_model``: the engine may change the model in place for
    speed (torch runtime; onnxruntime does the same in its graph): BatchNorm folded into the
    convolutions (equal up to float rounding) and channels-last weights. Only an owner of the model
    (``from_checkpoint``, the benchmark) says so; a training loop's model stays as it is, except for
    channels-last weights on a GPU.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        card: ModelCard,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        runtime: str = "torch",
        execution_provider: str | None = None,
        owns_model: bool = False,
        warn_uncalibrated: bool = True,
    ) -> None:
        check_runtime(runtime)
        self.runtime = runtime
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            keep_freed_memory()  # each frame reuses the last one's pages instead of faulting in new ones
        self.precision = resolve_precision(precision, self.device)
        self.card = card
        self._pad_multiple = int(getattr(getattr(model, "backbone", None), "pad_multiple", 32))
        self._align_corners = bool(getattr(getattr(model, "backbone", None), "align_corners", False))
        self._onnx = None
        if execution_provider == "auto":
            execution_provider = None
        if runtime == "onnxruntime":
            from openset_perception.onnx_runtime import OnnxNetwork

            # The torch model stays on the CPU: it is only exported.
            self.model = model.cpu().eval()
            self._onnx = OnnxNetwork(self.model, card, self.device, self.precision, execution_provider)
            self.precision = self._onnx.precision
        else:
            self.model = model.to(self.device).eval()
            if owns_model:
                example = torch.zeros(
                    (1, 3, 2 * self._pad_multiple, 2 * self._pad_multiple), device=self.device
                )
                LOGGER.debug("folded %d BatchNorm layers", fold_model_batchnorm(self.model, example))
        # Channels-last convolutions are faster on GPUs and on CPUs alike (oneDNN on the CPU; 2 MP
        # figures from scripts/bench_cpu_kernels.py in docs/benchmarks.md).
        # onnxruntime's graph takes standard (NCHW) input.
        channels_last = self._onnx is None and (owns_model or self.device.type == "cuda")
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._input_buffer: torch.Tensor | None = None
        self.score_method = card.score_method
        self.score_temperature = card.score_temperature
        self.threshold = card.threshold if card.threshold is not None else math.inf
        self.depth_bins = DepthBins()
        if card.threshold is None and warn_uncalibrated:
            LOGGER.warning("model card has no calibrated threshold: no pixel will be labelled unknown")

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        runtime: str = "torch",
        execution_provider: str | None = None,
    ) -> Segmenter:
        model, card = load_checkpoint(path, device="cpu")
        return cls(
            model,
            card,
            device=device,
            precision=precision,
            runtime=runtime,
            execution_provider=execution_provider,
            owns_model=True,
        )

    @property
    def input_memory_format(self) -> torch.memory_format:
        """The layout the network takes its input in (channels-last for a torch model the engine owns)."""
        return self._memory_format

    @property
    def num_classes(self) -> int:
        return self.card.num_classes

    @property
    def score_method(self) -> str:
        return self._score_method

    @score_method.setter
    def score_method(self, method: str) -> None:
        check_score_method(method)
        if method in INLIER_HEAD_METHODS and not self.card.inlier_head_trained:
            working = [m for m in SCORE_METHODS if m not in INLIER_HEAD_METHODS + MOOSE_METHODS]
            raise ValueError(
                f"score method '{method}' reads the inlier head, which this model has not trained "
                f"(a closed-set checkpoint); use one of {', '.join(working)}"
            )
        self._score_method = method

    def warmup(self, height: int, width: int, batch: int = 1, iterations: int = 2) -> None:
        """Run dummy frames so kernels are selected and memory is allocated before real traffic."""
        frames = [np.zeros((height, width, 3), dtype=np.uint8)] * batch
        for _ in range(iterations):
            self.segment(frames)

    @torch.inference_mode()
    def segment(
        self,
        images: Sequence[np.ndarray] | np.ndarray,
        depth: Sequence[np.ndarray | None] | None = None,
        outputs: Sequence[str] = OUTPUTS,
    ) -> FrameResult:
        """Segment a batch of same-size frames (e.g. several cameras) in one forward pass.

        ``depth``: per frame, HxW float32 metres (NaN/0/inf invalid) or None; ``outputs`` limits what is
        computed and copied back (the node skips outputs nobody subscribes to).
        """
        unknown = set(outputs) - set(OUTPUTS)
        if unknown:
            raise ValueError(f"unknown outputs {sorted(unknown)}; choose from {OUTPUTS}")
        frames = _check_frames(images)
        depth_list = _check_depth(depth, frames)
        timings: dict[str, float] = {}

        with self._timed("preprocess", timings):
            batch = hwc_batch_to_tensor(frames, self.device, pin_memory=True)
        dense = self.dense_maps(batch, timings)

        wanted = set(outputs)
        result = FrameResult(None, None, None, None, timings)
        with self._timed("postprocess", timings):
            semantic = dense.semantic.to(torch.uint8)
            if "open_set" in wanted:
                open_set = open_set_from_semantic(semantic, dense.score, self.threshold, self.num_classes)
                result.open_set = open_set.cpu().numpy()
            if "semantic" in wanted:
                result.semantic = semantic.cpu().numpy()
            if "anomaly_score" in wanted:
                result.anomaly_score = dense.score.cpu().numpy()
        if "depth_report" in wanted and depth_list is not None:
            with self._timed("depth", timings):
                result.depth_report = self._depth_report(dense.score, depth_list)
        return result

    def dense_maps(
        self, batch: torch.Tensor, timings: dict[str, float] | None = None, with_logits: bool = False
    ) -> DenseMaps:
        """(B,3,H,W) uint8 tensor on the device -> classes and anomaly score at full resolution.

        ``with_logits`` also returns the full-resolution logits (upsampled whole, the unfused path;
        the classes and scores are the same either way).
        """
        timings = {} if timings is None else timings
        height, width = batch.shape[-2:]
        resize = self.card.input_size is not None and tuple(self.card.input_size) != (height, width)
        with self._timed("preprocess", timings):
            if resize:
                x = normalize(batch, self.card.normalization)
                x = F.interpolate(x, size=tuple(self.card.input_size), mode="bilinear", align_corners=False)
                net_height, net_width = x.shape[-2:]
                x, _ = pad_to_multiple(x, self._pad_multiple)
            else:
                # The padded input buffer is reused frame to frame (not while an exporter traces).
                reuse = None if tracing() else self._input_buffer
                x = normalize_padded(
                    batch, self.card.normalization, self._pad_multiple, reuse, self._memory_format
                )
                self._input_buffer = None if tracing() else x
                net_height, net_width = height, width
            x = x.contiguous(memory_format=self.input_memory_format)
        with self._timed("network", timings):
            out = self._network(x)
        with self._timed("scoring", timings):
            method, temperature = self.score_method, self.score_temperature
            # Open-set maps hold label K as well, so uint8 takes up to 254 classes.
            classes_dtype = torch.uint8 if self.num_classes < 255 else torch.int64
            # The fused upsampling is bilinear with align_corners=False; a backbone trained with
            # align_corners=True (NVIDIA's DeepLabV3+) is upsampled whole, as it was trained.
            if resize or with_logits or self._align_corners:
                size = x.shape[-2:]
                full = type(out)(
                    *(resize_to(t, size, align_corners=self._align_corners) for t in out[:2]),
                    [resize_to(p, size, align_corners=self._align_corners) for p in out.probe_logits],
                )
                out = _crop_and_resize(full, (net_height, net_width), (height, width))
                semantic, score = classes_and_anomaly_score(
                    out, method, temperature, classes_dtype=classes_dtype
                )
            else:
                semantic, score = classes_and_anomaly_score(
                    out,
                    method,
                    temperature,
                    upsample=tuple(x.shape[-2:]),
                    crop=(height, width),
                    classes_dtype=classes_dtype,
                )
            # Saturated fp16 heads can still produce inf after the float32 cast; keep the contract: finite.
            score = score.nan_to_num_(nan=0.0, posinf=1e30, neginf=-1e30)  # in place: a fresh map
        return DenseMaps(logits=out.logits if with_logits else None, semantic=semantic, score=score)

    def _network(self, x: torch.Tensor) -> SegmenterOutput:
        """The network at its output stride, in the chosen runtime."""
        if self._onnx is not None:
            return SegmenterOutput(*self._onnx(x))
        with self._autocast():
            out = self.model(x, upsample=False)

        # Post-processing reads float32 (B,K,h,w) maps in their standard layout (PyTorch's channels-last
        # bilinear kernel rounds differently from the one the CPU kernel reproduces); at the output
        # stride the conversion is cheap.
        def standard(t: torch.Tensor) -> torch.Tensor:
            return t.float().contiguous()

        return SegmenterOutput(
            standard(out.logits), standard(out.ood_logit), [standard(p) for p in out.probe_logits]
        )

    def _depth_report(
        self, score: torch.Tensor, depth_list: list[np.ndarray | None]
    ) -> list[list[DepthBinStats] | None]:
        with_depth = [i for i, d in enumerate(depth_list) if d is not None]
        report: list[list[DepthBinStats] | None] = [None] * len(depth_list)
        if not with_depth:
            return report
        chosen = [depth_list[i] for i in with_depth]
        stacked = chosen[0][None] if len(chosen) == 1 else np.stack(chosen)  # one camera: no copy
        depth = torch.from_numpy(stacked).to(self.device)
        # Every frame with depth (the usual case): no copy of the scores.
        scores = score if len(with_depth) == len(depth_list) else score[with_depth]
        stats = depth_bin_statistics(scores, depth, self.threshold, self.depth_bins)
        for i, frame_stats in zip(with_depth, stats, strict=True):
            report[i] = frame_stats
        return report

    def _autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=PRECISIONS[self.precision])

    @contextmanager
    def _timed(self, stage: str, timings: dict[str, float]) -> Iterator[None]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        timings[stage] = timings.get(stage, 0.0) + (time.perf_counter() - start) * 1e3


def _crop_and_resize(out, net_size: tuple[int, int], frame_size: tuple[int, int]):
    """Drop the padding, then bring the maps back to the frame size if the card asked for a resize."""
    net_height, net_width = net_size

    def fix(t: torch.Tensor) -> torch.Tensor:
        t = t[..., :net_height, :net_width]
        if (net_height, net_width) != frame_size:
            t = F.interpolate(t.float(), size=frame_size, mode="bilinear", align_corners=False)
        return t

    return type(out)(fix(out.logits), fix(out.ood_logit), [fix(p) for p in out.probe_logits])


def _check_frames(images: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    frames = list(images) if not isinstance(images, np.ndarray) or images.ndim == 4 else [images]
    if not frames:
        raise ValueError("segment() needs at least one frame")
    for i, frame in enumerate(frames):
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame {i}: expected HxWx3 uint8 RGB, got {frame.shape} {frame.dtype}")
        if frame.shape[0] < 1 or frame.shape[1] < 1:
            raise ValueError(f"frame {i}: empty image {frame.shape}")
    sizes = {f.shape[:2] for f in frames}
    if len(sizes) > 1:
        raise ValueError(f"frames of one batch must share a size, got {sorted(sizes)}")
    return frames


def _check_depth(
    depth: Sequence[np.ndarray | None] | None, frames: list[np.ndarray]
) -> list[np.ndarray | None] | None:
    if depth is None:
        return None
    depth = list(depth)
    if len(depth) != len(frames):
        raise ValueError(f"{len(depth)} depth maps for {len(frames)} frames")
    checked: list[np.ndarray | None] = []
    for i, (d, frame) in enumerate(zip(depth, frames, strict=True)):
        if d is not None:
            if d.shape != frame.shape[:2]:
                raise ValueError(
                    f"frame {i}: depth size {d.shape} does not match image size {frame.shape[:2]}"
                )
            d = np.ascontiguousarray(d, dtype=np.float32)
        checked.append(d)
    return checked
