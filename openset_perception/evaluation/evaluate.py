"""Evaluate a segmenter on a dataset: metrics.json, report.md, plots and optionally the raw score maps.

Frames go through the inference engine exactly as in deployment (same preprocessing, batching and
scoring); consecutive frames of one size share a batch. A frame that cannot be read or whose ground
truth does not fit is skipped and named in the report instead of ending the run.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import numpy as np
from tqdm import tqdm

from openset_perception.atomic import atomic_save_npy
from openset_perception.component_metrics import DEFAULT_COMPONENT_OPTIONS, ComponentOptions
from openset_perception.data.sample import Dataset, Sample, validate_sample
from openset_perception.engine import OUTPUTS, Segmenter
from openset_perception.evaluation.accumulate import EvaluationAccumulator
from openset_perception.evaluation.label_map import LabelMap, SemanticGroundTruth
from openset_perception.evaluation.report import jsonable, write_report
from openset_perception.metrics import AccumulatorMode, Protocol

LOGGER = logging.getLogger(__name__)
SCORES_DIR = "scores"

FrameCallback = Callable[[str, np.ndarray], None]


def run_frames(
    segmenter: Segmenter,
    dataset: Dataset,
    accumulator: EvaluationAccumulator,
    batch_size: int = 1,
    max_frames: int | None = None,
    outputs: Sequence[str] = OUTPUTS,
    progress: bool = True,
    on_frame: FrameCallback | None = None,
    semantic: SemanticGroundTruth | None = None,
) -> None:
    """Segment the dataset into ``accumulator``; ``on_frame(name, score)`` sees every accumulated frame.

    ``semantic`` turns the dataset's semantic labels into the model's (default: as they are, where
    they fit the model's classes).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0, got {max_frames}")
    if "anomaly_score" not in outputs:
        raise ValueError("evaluation needs the engine's anomaly_score output")
    if semantic is None:
        semantic = semantic_ground_truth(segmenter, dataset)
    total = len(dataset) if max_frames is None else min(len(dataset), max_frames)
    pending: list[tuple[str, Sample]] = []
    with tqdm(total=total, unit="frame", desc="evaluating", disable=not progress) as bar:
        for index in range(total):
            named = _read_frame(dataset, index, accumulator)
            if named is None:
                bar.update(1)
                continue
            if pending and (len(pending) == batch_size or pending[0][1].image.shape != named[1].image.shape):
                _segment_batch(segmenter, pending, accumulator, outputs, on_frame, semantic)
                bar.update(len(pending))
                pending = []
            pending.append(named)
        if pending:
            _segment_batch(segmenter, pending, accumulator, outputs, on_frame, semantic)
            bar.update(len(pending))


def _read_frame(
    dataset: Dataset, index: int, accumulator: EvaluationAccumulator
) -> tuple[str, Sample] | None:
    try:
        sample = dataset[index]
    except Exception as error:  # any reader failure is one bad frame, not a failed run
        reason = "invalid sample" if isinstance(error, ValueError) else "unreadable sample"
        _skip(accumulator, reason, f"#{index}", error)
        return None
    name = sample.name or f"frame_{index:06d}"
    try:
        validate_sample(sample)
    except ValueError as error:
        _skip(accumulator, "invalid sample", name, error)
        return None
    return name, sample


def _segment_batch(
    segmenter: Segmenter,
    batch: list[tuple[str, Sample]],
    accumulator: EvaluationAccumulator,
    outputs: Sequence[str],
    on_frame: FrameCallback | None,
    semantic: SemanticGroundTruth,
) -> None:
    samples = [sample for _, sample in batch]
    depth = [s.depth for s in samples] if any(s.depth is not None for s in samples) else None
    result = segmenter.segment([s.image for s in samples], depth=depth, outputs=outputs)
    accumulator.add_latency(result.timings_ms)
    assert result.anomaly_score is not None  # run_frames always requests it
    for i, (name, sample) in enumerate(batch):
        score = result.anomaly_score[i]
        try:
            accumulator.update(
                score,
                None if result.semantic is None else result.semantic[i],
                None if result.open_set is None else result.open_set[i],
                gt_anomaly=sample.anomaly,
                gt_semantic=semantic(sample.semantic, name),
                depth=sample.depth,
                gt_instances=sample.instances,
            )
        except ValueError as error:
            _skip(accumulator, "invalid ground truth", name, error)
            continue
        if on_frame is not None:
            on_frame(name, score)


def _skip(accumulator: EvaluationAccumulator, reason: str, name: str, error: BaseException) -> None:
    LOGGER.warning("skipping frame %s (%s): %s", name, reason, error)
    accumulator.skip(reason, f"{name} ({error})")


class _ScoreWriter:
    """Writes score maps as ``scores/<name>.npy``; names are made file-safe and unique."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._used: set[str] = set()

    def __call__(self, name: str, score: np.ndarray) -> None:
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "frame"
        unique, suffix = stem, 1
        while unique in self._used:
            suffix += 1
            unique = f"{stem}_{suffix}"
        self._used.add(unique)
        atomic_save_npy(self.folder / f"{unique}.npy", np.asarray(score, dtype=np.float32))


def evaluate_dataset(
    segmenter: Segmenter,
    dataset: Dataset,
    out_dir: str | Path,
    batch_size: int = 1,
    max_frames: int | None = None,
    save_scores: bool = False,
    mode: AccumulatorMode = "binned",
    progress: bool = True,
    title: str = "Evaluation report",
    label_map: LabelMap | None = None,
    protocol: Protocol = "pooled",
    two_fold: bool = False,
    components: ComponentOptions = DEFAULT_COMPONENT_OPTIONS,
) -> dict:
    """Evaluate and write the report to ``out_dir``; returns the metrics as written to metrics.json.

    ``save_scores`` writes each frame's float32 score map to ``out_dir/scores/<name>.npy``; ``mode``
    picks exact, binned (constant memory) or SMIYC-compatible anomaly metrics, ``protocol`` pooled or
    per-image averages, ``two_fold`` adds the two-fold open-mIoU; ``progress`` shows a progress bar;
    ``label_map`` maps the dataset's semantic ids to the model's (:mod:`.label_map`).
    :func:`summary_line` turns the result into a one-line summary.
    """
    out_dir = Path(out_dir)
    started = time.perf_counter()
    accumulator = EvaluationAccumulator(
        segmenter.card.class_names,
        mode=mode,
        protocol=protocol,
        two_fold=two_fold,
        components=components,
    )
    semantic = semantic_ground_truth(segmenter, dataset, label_map)
    run_frames(
        segmenter,
        dataset,
        accumulator,
        batch_size=batch_size,
        max_frames=max_frames,
        progress=progress,
        on_frame=_ScoreWriter(out_dir / SCORES_DIR) if save_scores else None,
        semantic=semantic,
    )
    metrics = accumulator.compute()
    add_run_settings(
        metrics,
        segmenter,
        started,
        batch_size=batch_size,
        max_frames=max_frames,
        mode=mode,
        protocol=protocol,
        two_fold=two_fold,
    )
    semantic.record(metrics)
    write_report(metrics, out_dir, curves=accumulator.curves(), title=title)
    return cast(dict, jsonable(metrics))


def semantic_ground_truth(
    segmenter: Segmenter, dataset: Dataset, label_map: LabelMap | None = None
) -> SemanticGroundTruth:
    """The dataset's semantic labels in the model's ids, judged by the classes the dataset declares."""
    info = dataset.info
    declared = info.class_names if info.has_semantic else None
    return SemanticGroundTruth(segmenter.card.class_names, label_map, declared)


def add_run_settings(metrics: dict, segmenter: Segmenter, started: float, **settings: object) -> None:
    """Record the open-set threshold and how the run was made (score, device, ...) in ``metrics``."""
    if metrics["segmentation"] and "open_miou" in metrics["segmentation"]:
        metrics["segmentation"]["open_set_threshold"] = segmenter.threshold
    metrics["settings"] = {
        "score_method": segmenter.score_method,
        "score_temperature": segmenter.score_temperature,
        "threshold": segmenter.threshold,
        "device": str(segmenter.device),
        "precision": segmenter.precision,
        **settings,
        "seconds": time.perf_counter() - started,
    }


def summary_line(metrics: dict, out_dir: str | Path) -> str:
    """One line with the headline numbers of :func:`evaluate_dataset`'s result, for the end of a run."""
    anomaly = metrics.get("anomaly") or {}
    segmentation = metrics.get("segmentation") or {}
    frames = metrics["frames"]
    parts = [
        f"{name} {_percent(source.get(key))}"
        for name, source, key in (
            ("AP", anomaly, "ap"),
            ("FPR95", anomaly, "fpr95"),
            ("mIoU", segmentation, "miou"),
            ("open-mIoU", segmentation, "open_miou"),
            ("two-fold open-mIoU", segmentation, "two_fold_open_miou"),
        )
        if source.get(key) is not None
    ]
    skipped = f", {frames['skipped']} skipped" if frames["skipped"] else ""
    headline = ", ".join(parts) if parts else "no metric (no usable ground truth)"
    seconds = metrics["settings"]["seconds"]
    return (
        f"{headline} | {frames['evaluated']} frames{skipped} in {seconds:.1f} s | "
        f"report: {Path(out_dir) / 'report.md'}"
    )


def _percent(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100.0 * value:.2f}%"
