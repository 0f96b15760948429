"""eval-bag: run the inference engine over a recorded bag and report the benchmark metrics.

Frames stream through: a bag message is read, paired, decoded, segmented in a batch, scored and
dropped, so memory does not grow with the bag. Metrics come from the same
:class:`~openset_perception.evaluation.accumulate.EvaluationAccumulator` as dataset evaluation, so a
bag made from a dataset gives the numbers ``evaluate`` gives on that dataset. Frames without ground
truth count for latency only. Besides the engine's stages, the latency table has the evaluation's own
per-frame overhead (``overhead: read`` = bag I/O and deserialisation, ``pairing``, ``decode``,
``metrics``, ``write outputs``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from tqdm import tqdm

from openset_perception.atomic import atomic_write_text
from openset_perception.bags.frames import BagFrame, ReadStatistics, announced_images, read_frames
from openset_perception.bags.outputs import OutputBagWriter
from openset_perception.bags.reader import BagReader
from openset_perception.bags.writer import CLASS_NAMES_KEY, STORAGE_FORMATS
from openset_perception.component_metrics import DEFAULT_COMPONENT_OPTIONS, ComponentOptions
from openset_perception.engine import OUTPUTS, Segmenter
from openset_perception.evaluation.accumulate import EvaluationAccumulator
from openset_perception.evaluation.evaluate import add_run_settings
from openset_perception.evaluation.label_map import LabelMap, SemanticGroundTruth
from openset_perception.evaluation.report import jsonable, write_report
from openset_perception.image_codec import ImageDecodeError, image_to_numpy
from openset_perception.metrics import AccumulatorMode, Protocol
from openset_perception.runtime.camera_batch import FrameMaps, decode_frame
from openset_perception.runtime.frame_buffer import CameraFrame

LOGGER = logging.getLogger(__name__)
OVERHEAD = "overhead: "
PROBLEMS_SHOWN = 20
_GROUND_TRUTH_ENCODINGS = ("mono8", "8UC1")


@dataclass
class _Decoded:
    frame: BagFrame
    image: np.ndarray
    depth: np.ndarray | None
    gt_anomaly: np.ndarray | None
    gt_semantic: np.ndarray | None
    gt_error: str | None  # ground truth that could not be decoded: the frame counts for latency only


def semantic_ground_truth(
    segmenter: Segmenter, reader: BagReader, label_map: LabelMap | None = None
) -> SemanticGroundTruth:
    """The bag's semantic labels in the model's ids; bags written by make-bag name their classes."""
    stored = reader.custom_data.get(CLASS_NAMES_KEY)
    declared = None if stored is None else list(json.loads(stored))
    return SemanticGroundTruth(segmenter.card.class_names, label_map, declared)


def evaluate_bag(
    segmenter: Segmenter,
    bag: str | Path,
    out_dir: str | Path,
    cameras: Sequence[str] | None = None,
    batch_size: int = 1,
    slop_s: float = 0.05,
    queue_size: int = 16,
    mode: AccumulatorMode = "binned",
    write_outputs: str | Path | None = None,
    progress: bool = True,
    title: str = "Bag evaluation report",
    label_map: LabelMap | None = None,
    protocol: Protocol = "pooled",
    two_fold: bool = False,
    components: ComponentOptions = DEFAULT_COMPONENT_OPTIONS,
) -> dict:
    """Evaluate and write metrics.json, report.md and plots to ``out_dir``; returns the metrics.

    ``write_outputs``: path of a new bag with the node's output topics (in the input's storage format).
    ``label_map`` maps the bag's semantic ids to the model's (see :mod:`.evaluation.label_map`).
    Raises ValueError for a camera the bag does not have.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    accumulator = EvaluationAccumulator(
        segmenter.card.class_names,
        mode=mode,
        protocol=protocol,
        two_fold=two_fold,
        components=components,
    )
    statistics = ReadStatistics()
    with BagReader(bag) as reader:
        semantic = semantic_ground_truth(segmenter, reader, label_map)
        frames = read_frames(reader, statistics, cameras, slop_s, queue_size)
        expected = announced_images(reader, cameras)
        storage = reader.storage if reader.storage in STORAGE_FORMATS else "mcap"
        writer = OutputBagWriter(write_outputs, segmenter, storage) if write_outputs is not None else None
        total = sum(count or 0 for _, count in expected.values()) or None
        with (
            writer if writer is not None else nullcontext(),
            tqdm(total=total, unit="frame", desc="evaluating bag", disable=not progress) as bar,
        ):
            _Run(segmenter, accumulator, writer, batch_size, semantic).consume(frames, statistics, bar)
        _note_losses(accumulator, statistics, reader, expected)
        metrics = accumulator.compute()
        metrics["overhead"] = _overhead_summary(accumulator)
        metrics["bag"] = _bag_section(reader, statistics, slop_s, queue_size, write_outputs)
    add_run_settings(
        metrics, segmenter, started, batch_size=batch_size, mode=mode, protocol=protocol, two_fold=two_fold
    )
    semantic.record(metrics)
    written = write_report(metrics, out_dir, curves=accumulator.curves(), title=title)
    _append_bag_section(written["report"], cast(dict, jsonable(metrics)))
    return cast(dict, jsonable(metrics))


class _Run:
    """Batches decoded frames like dataset evaluation and feeds engine results to the accumulator."""

    def __init__(
        self,
        segmenter: Segmenter,
        accumulator: EvaluationAccumulator,
        writer: OutputBagWriter | None,
        batch_size: int,
        semantic: SemanticGroundTruth,
    ) -> None:
        self.segmenter = segmenter
        self.semantic = semantic
        self.accumulator = accumulator
        self.writer = writer
        self.batch_size = batch_size

    def consume(self, frames: Iterable[BagFrame], statistics: ReadStatistics, bar: tqdm) -> None:
        pending: list[_Decoded] = []
        for frame in frames:
            for stage, milliseconds in statistics.take_times().items():
                self._overhead(stage, milliseconds)
            decoded = self._decode(frame)
            if decoded is None:
                bar.update(1)
                continue
            if pending and (len(pending) == self.batch_size or pending[0].image.shape != decoded.image.shape):
                self._segment(pending)
                bar.update(len(pending))
                pending = []
            pending.append(decoded)
        if pending:
            self._segment(pending)
            bar.update(len(pending))

    def _overhead(self, stage: str, milliseconds: float) -> None:
        # Per-frame stages go straight into the accumulator's latency table, beside the engine's
        # per-call stages, without counting towards the engine's "total".
        self.accumulator.latency_ms.setdefault(OVERHEAD + stage, []).append(milliseconds)

    def _decode(self, frame: BagFrame) -> _Decoded | None:
        started = time.perf_counter()
        try:
            return _decode(frame)
        except ImageDecodeError as error:
            self._skip("undecodable image or depth", frame.name, error)
            return None
        finally:
            self._overhead("decode", (time.perf_counter() - started) * 1e3)

    def _segment(self, batch: list[_Decoded]) -> None:
        depth = [item.depth for item in batch] if any(item.depth is not None for item in batch) else None
        result = self.segmenter.segment([item.image for item in batch], depth=depth, outputs=OUTPUTS)
        self.accumulator.add_latency(result.timings_ms)
        assert (
            result.anomaly_score is not None and result.semantic is not None and result.open_set is not None
        )
        for i, item in enumerate(batch):
            maps = FrameMaps(
                result.semantic[i],
                result.anomaly_score[i],
                result.open_set[i],
                result.depth_report[i] if result.depth_report is not None else None,
            )
            started = time.perf_counter()
            self._accumulate(item, maps)
            self._overhead("metrics", (time.perf_counter() - started) * 1e3)
            if self.writer is not None:
                started = time.perf_counter()
                frame = item.frame
                self.writer.write(frame.camera, frame.header, frame.log_time_ns, item.image, maps)
                self._overhead("write outputs", (time.perf_counter() - started) * 1e3)

    def _accumulate(self, item: _Decoded, maps: FrameMaps) -> None:
        if item.gt_error is not None:
            self._skip("invalid ground truth", item.frame.name, item.gt_error)
            return
        try:
            self.accumulator.update(
                maps.anomaly_score,
                maps.semantic,
                maps.open_set,
                gt_anomaly=item.gt_anomaly,
                gt_semantic=self.semantic(item.gt_semantic, item.frame.name),
                depth=item.depth,
            )
        except ValueError as error:
            self._skip("invalid ground truth", item.frame.name, error)

    def _skip(self, reason: str, name: str, error: object) -> None:
        LOGGER.warning("skipping frame %s (%s): %s", name, reason, error)
        self.accumulator.skip(reason, f"{name} ({error})")


def _decode(frame: BagFrame) -> _Decoded:
    """Image and depth exactly as the node decodes them; ground truth that does not decode is kept
    as an error, so the frame still counts for latency."""
    camera_frame = CameraFrame(
        frame.camera, frame.header, frame.stamp_ns * 1e-9, 0.0, frame.image, frame.depth
    )
    decoded = decode_frame(camera_frame)
    truths: dict[str, np.ndarray | None] = {"anomaly": None, "semantic": None}
    gt_error = None
    for key, message in (("anomaly", frame.gt_anomaly), ("semantic", frame.gt_semantic)):
        if message is not None:
            try:
                truths[key] = decode_ground_truth(message)
            except ImageDecodeError as error:
                gt_error = f"{key} ground truth: {error}"
    return _Decoded(frame, decoded.image, decoded.depth, truths["anomaly"], truths["semantic"], gt_error)


def decode_ground_truth(message: Any) -> np.ndarray:
    """HxW uint8 labels of a mono8 ground-truth Image; ``ImageDecodeError`` for anything else."""
    if str(message.encoding) not in _GROUND_TRUTH_ENCODINGS:
        raise ImageDecodeError(f"encoding {message.encoding!r}, expected mono8")
    return image_to_numpy(message)


def _note_losses(
    accumulator: EvaluationAccumulator,
    statistics: ReadStatistics,
    reader: BagReader,
    expected: dict[str, tuple[str, int | None]],
) -> None:
    """Frames the bag promised but that never reached the engine, as skips with their reasons."""
    for name in statistics.ground_truth_without_image:
        accumulator.skip("ground truth without image", name)
    for text in statistics.undecodable:
        if any(text.startswith(topic + " ") for topic in statistics.image_topics.values()):
            accumulator.skip("undecodable image message", text)
    if not reader.problems:
        return
    for camera, (topic, count) in expected.items():
        read = statistics.messages[topic]
        for index in range(read, count or 0):
            accumulator.skip("unreadable (bag damaged)", f"{camera} image {index + 1} of {count}")


def _overhead_summary(accumulator: EvaluationAccumulator) -> dict[str, float]:
    """Total milliseconds per stage and the share of the run that was not the engine."""
    totals = {
        stage.removeprefix(OVERHEAD): float(np.sum(values))
        for stage, values in accumulator.latency_ms.items()
        if stage.startswith(OVERHEAD)
    }
    engine = float(np.sum(accumulator.latency_ms.get("total", [])))
    overhead = sum(totals.values())
    summary = {f"{stage}_ms": value for stage, value in totals.items()}
    summary["engine_ms"] = engine
    summary["overhead_ms"] = overhead
    summary["overhead_fraction"] = overhead / (overhead + engine) if overhead + engine > 0 else 0.0
    return summary


def _bag_section(
    reader: BagReader,
    statistics: ReadStatistics,
    slop_s: float,
    queue_size: int,
    write_outputs: str | Path | None,
) -> dict[str, Any]:
    return {
        "path": str(reader.path),
        "storage": reader.storage,
        "cameras": dict(statistics.image_topics),
        "messages_read": dict(statistics.messages),
        "problems": list(reader.problems),
        "undecodable_messages": statistics.undecodable[:PROBLEMS_SHOWN],
        "unpaired_messages": dict(statistics.unpaired),
        "slop_s": slop_s,
        "queue_size": queue_size,
        "outputs_bag": None if write_outputs is None else str(write_outputs),
    }


def _append_bag_section(report: Path, metrics: dict) -> None:
    bag, overhead = metrics["bag"], metrics["overhead"]
    lines = ["", "## Bag", "", f"- bag: `{bag['path']}` ({bag['storage']})"]
    lines += [f"- camera `{camera}` from `{topic}`" for camera, topic in bag["cameras"].items()]
    lines += [f"- problem: {text}" for text in bag["problems"]]
    lines += [f"- undecodable message: {text}" for text in bag["undecodable_messages"]]
    lines += [f"- messages no image took: {stream} x {n}" for stream, n in bag["unpaired_messages"].items()]
    if bag["outputs_bag"]:
        lines.append(f"- node outputs written to `{bag['outputs_bag']}`")
    share = overhead["overhead_fraction"]
    lines += [
        "",
        f"Evaluation overhead (read, pairing, decode, metrics, writing): {overhead['overhead_ms']:.0f} ms, "
        f"{100.0 * share:.1f}% of the time next to {overhead['engine_ms']:.0f} ms in the engine.",
        "",
    ]
    atomic_write_text(report, report.read_text() + "\n".join(lines))
