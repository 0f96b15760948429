"""Evaluation report: ``metrics.json``, ``report.md`` and PNG plots in one output folder.

The metrics dict has only optional sections; missing values are None, rates are fractions in [0, 1]
(the Markdown shows them as percentages)::

    {
      "anomaly": {"ap", "auroc", "fpr95", "threshold_at_tpr95", "fpr_at_tpr80" ... "fpr_at_tpr99",
                  "tpr_at_fpr1", "tpr_at_fpr5", "best_f1", "best_f1_threshold", "n_pos", "n_neg",
                  per image also "n_images", "images_without_both_classes"}
                 or {score_name: {same keys}, ...} to compare several scores,
      "segmentation": {"miou", "open_miou", "unknown_iou", "macro_f1", "two_fold_open_miou", ...scalars,
                       "per_class_iou": {class_name: iou} or [iou, ...],
                       "per_class_open_iou": same form as per_class_iou},
      "per_distance": [{"range_m": [low, high], "ap", "auroc", "fpr95", "n_pos", "n_neg"}, ...],
      "components": {"pixel_threshold", "threshold_source", "pixel_f1", "f1_mean", "siou_mean",
                     "ppv_mean", "instances", "segments", "per_threshold": [...], "per_distance": [...]},
      "latency_ms": {stage_name: {"p50", "p95", ...}},
      "frames": {name: count or value}
    }

Curves for the PR / ROC plots come separately as :class:`~openset_perception.metrics.CurvePoints`,
one or a mapping ``{score_name: CurvePoints}``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from openset_perception.atomic import atomic_write, atomic_write_text
from openset_perception.evaluation.component_report import (
    components_per_distance_figure,
    components_section,
    has_distance_plot,
)
from openset_perception.metrics import FPR_AT_TPR, TPR_AT_FPR, CurvePoints

ANOMALY_KEYS = ("ap", "auroc", "fpr95")
OPERATING_POINT_COLUMNS = {
    **{f"fpr_at_tpr{round(100 * tpr)}": f"FPR @ TPR {round(100 * tpr)} (%)" for tpr in FPR_AT_TPR},
    **{f"tpr_at_fpr{round(100 * fpr)}": f"TPR @ FPR {round(100 * fpr)} (%)" for fpr in TPR_AT_FPR},
    "best_f1": "best F1 (%)",
}
SEGMENTATION_NAMES = {
    "miou": "mIoU",
    "open_miou": "open-mIoU",
    "unknown_iou": "open-IoU of the unknown class",
    "macro_f1": "macro F1",
    "two_fold_open_miou": "two-fold open-mIoU",
    "two_fold_unknown_iou": "two-fold open-IoU of the unknown class",
    "two_fold_macro_f1": "two-fold macro F1",
}
PER_CLASS_KEYS = {"per_class_iou": "IoU (%)", "per_class_open_iou": "open-IoU (%)"}


def jsonable(value: object) -> object:
    """``value`` with numpy types as Python ones, tuples as lists and NaN / inf as None."""
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _save_figure(figure: Figure, path: Path) -> None:
    atomic_write(path, lambda temp_name: figure.savefig(temp_name, format="png", dpi=120))


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.2f}"


def _number(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _scores_by_name(anomaly: Mapping) -> dict[str, Mapping]:
    return {"anomaly score": anomaly} if "ap" in anomaly else dict(anomaly)


def _anomaly_section(anomaly: Mapping) -> list[str]:
    rows = [
        [
            name,
            *(_percent(metrics.get(key)) for key in ANOMALY_KEYS),
            _number(metrics.get("threshold_at_tpr95")),
            _number(metrics.get("n_pos")),
            _number(metrics.get("n_neg")),
        ]
        for name, metrics in _scores_by_name(anomaly).items()
    ]
    header = ["score", "AP (%)", "AUROC (%)", "FPR95 (%)", "threshold @ TPR 95", "anomaly px", "inlier px"]
    lines = ["## Anomaly detection", "", *_table(header, rows)]
    # Reports written before these operating points existed have none of their keys.
    scores = {name: metrics for name, metrics in _scores_by_name(anomaly).items() if "best_f1" in metrics}
    if scores:
        point_rows = [
            [
                name,
                *(_percent(metrics.get(key)) for key in OPERATING_POINT_COLUMNS),
                _number(metrics.get("best_f1_threshold")),
            ]
            for name, metrics in scores.items()
        ]
        lines += _table(["score", *OPERATING_POINT_COLUMNS.values(), "threshold @ best F1"], point_rows)
    per_image = [
        metrics["n_images"] for metrics in _scores_by_name(anomaly).values() if "n_images" in metrics
    ]
    if per_image:
        lines += [f"Averaged per image over {per_image[0]} images with both anomaly and inlier pixels.", ""]
    return lines


def _per_class_by_name(values: Mapping | Sequence) -> dict[str, float | None]:
    return (
        dict(values)
        if isinstance(values, Mapping)
        else {str(index): value for index, value in enumerate(values)}
    )


def _segmentation_section(segmentation: Mapping) -> list[str]:
    scalar_rows = [
        [f"{SEGMENTATION_NAMES[key]} (%)", _percent(value)]
        for key, value in segmentation.items()
        if key in SEGMENTATION_NAMES
    ]
    scalar_rows += [
        [key, _number(value)]
        for key, value in segmentation.items()
        if key not in SEGMENTATION_NAMES and (value is None or isinstance(value, (int, float)))
    ]
    lines = ["## Segmentation", "", *_table(["metric", "value"], scalar_rows)]

    per_class = {
        column: _per_class_by_name(segmentation[key])
        for key, column in PER_CLASS_KEYS.items()
        if key in segmentation
    }
    if per_class:
        class_names = list(dict.fromkeys(name for values in per_class.values() for name in values))
        rows = [
            [name, *(_percent(values.get(name)) for values in per_class.values())] for name in class_names
        ]
        lines += _table(["class", *per_class], rows)
    return lines


def _per_distance_section(per_distance: Sequence[Mapping]) -> list[str]:
    rows = [
        [
            f"{entry['range_m'][0]:g}-{entry['range_m'][1]:g}",
            *(_percent(entry.get(key)) for key in ANOMALY_KEYS),
            _number(entry.get("n_pos")),
            _number(entry.get("n_neg")),
        ]
        for entry in per_distance
    ]
    header = ["range (m)", "AP (%)", "AUROC (%)", "FPR95 (%)", "anomaly px", "inlier px"]
    return ["## Anomaly detection by distance", "", *_table(header, rows)]


def _latency_section(latency_ms: Mapping[str, Mapping]) -> list[str]:
    statistics = list(dict.fromkeys(key for values in latency_ms.values() for key in values))
    rows = [
        [stage, *(_number(values.get(statistic)) for statistic in statistics)]
        for stage, values in latency_ms.items()
    ]
    return ["## Latency (ms)", "", *_table(["stage", *statistics], rows)]


def _frames_section(frames: Mapping) -> list[str]:
    return [
        "## Frames",
        "",
        *_table(["item", "value"], [[key, _number(value)] for key, value in frames.items()]),
    ]


def _markdown(metrics: Mapping, title: str, plots: Mapping[str, Path]) -> str:
    """Markdown summary of JSON-ready ``metrics`` (NaN already turned into None)."""
    lines = [f"# {title}", ""]
    sections = (
        ("anomaly", _anomaly_section),
        ("segmentation", _segmentation_section),
        ("per_distance", _per_distance_section),
        ("components", components_section),
        ("latency_ms", _latency_section),
        ("frames", _frames_section),
    )
    for key, render in sections:
        if metrics.get(key):
            lines += render(metrics[key])
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{name}]({path.name})" for name, path in plots.items()] + [""]
    return "\n".join(lines)


def _curve_figures(curves: Mapping[str, CurvePoints]) -> dict[str, Figure]:
    pr_figure, roc_figure = Figure(figsize=(5, 4)), Figure(figsize=(5, 4))
    pr_axes, roc_axes = pr_figure.add_subplot(), roc_figure.add_subplot()
    for name, points in curves.items():
        # "steps-pre" draws precision P_n over (R_{n-1}, R_n], the interpolation AP integrates.
        pr_axes.plot(points.recall, points.precision, drawstyle="steps-pre", label=name)
        roc_axes.plot(np.concatenate(([0.0], points.fpr)), np.concatenate(([0.0], points.tpr)), label=name)
    roc_axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for axes, x_label, y_label in (
        (pr_axes, "recall", "precision"),
        (roc_axes, "false positive rate", "true positive rate"),
    ):
        axes.set(xlabel=x_label, ylabel=y_label, xlim=(0, 1), ylim=(0, 1.02))
        axes.grid(alpha=0.3)
        axes.legend(loc="best")
    pr_axes.set_title("Precision-recall")
    roc_axes.set_title("ROC")
    return {"pr_curve": pr_figure, "roc_curve": roc_figure}


def _per_distance_figure(per_distance: Sequence[Mapping]) -> Figure:
    figure = Figure(figsize=(7, 3.5))
    axes = figure.add_subplot()
    labels = [f"{entry['range_m'][0]:g}-{entry['range_m'][1]:g}" for entry in per_distance]
    positions = np.arange(len(labels))
    width = 0.4
    for offset, key, name in ((-width / 2, "ap", "AP"), (width / 2, "fpr95", "FPR95")):
        # Missing metrics (a range without anomaly or inlier pixels) show as gaps.
        heights = [np.nan if entry.get(key) is None else 100.0 * entry[key] for entry in per_distance]
        axes.bar(positions + offset, heights, width, label=name)
    axes.set_xticks(positions, labels)
    axes.set(xlabel="distance (m)", ylabel="%", ylim=(0, 100), title="Anomaly detection by distance")
    axes.legend(loc="best")
    figure.tight_layout()
    return figure


def write_report(
    metrics: Mapping,
    out_dir: str | os.PathLike,
    curves: CurvePoints | Mapping[str, CurvePoints] | None = None,
    title: str = "Evaluation report",
) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md`` and the plots the inputs allow; returns {name: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Figure] = {}
    if curves is not None:
        figures.update(
            _curve_figures({"anomaly score": curves} if isinstance(curves, CurvePoints) else curves)
        )
    if any(entry.get("ap") is not None for entry in metrics.get("per_distance") or []):
        figures["per_distance"] = _per_distance_figure(metrics["per_distance"])
    if has_distance_plot(metrics.get("components")):
        figures["components_per_distance"] = components_per_distance_figure(metrics["components"])

    json_ready = jsonable(metrics)
    written = {"metrics": out_dir / "metrics.json", "report": out_dir / "report.md"}
    _write_text(written["metrics"], json.dumps(json_ready, indent=2, allow_nan=False) + "\n")
    plots = {name: out_dir / f"{name}.png" for name in figures}
    for name, figure in figures.items():
        _save_figure(figure, plots[name])
    _write_text(written["report"], _markdown(json_ready, title, plots))
    return written | plots
