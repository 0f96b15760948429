"""The report's component-level section (SMIYC sIoU / PPV / F1) and its per-distance F1 plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

HEADLINE_SIOU_THRESHOLDS = (0.25, 0.5, 0.75)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def _range_name(range_m: Sequence[float]) -> str:
    return f"{range_m[0]:g}-{range_m[1]:g}"


def components_section(components: Mapping) -> list[str]:
    """Markdown lines: headline metrics, TP / FN / FP / F1 per sIoU threshold, and per distance."""
    lines = [
        "## Component-level metrics (SegmentMeIfYouCan)",
        "",
        f"Pixel threshold {components['pixel_threshold']:.6g} ({components['threshold_source']}; "
        f"pixel F1 {_percent(components.get('pixel_f1'))} %); predicted segments under "
        f"{components['min_segment_px']} px dropped, ground-truth instances under "
        f"{components['min_instance_px']} px void.",
        "",
    ]
    lines += _table(
        ["mean F1 (%)", "mean sIoU (%)", "mean PPV (%)", "instances", "segments"],
        [
            [
                _percent(components["f1_mean"]),
                _percent(components["siou_mean"]),
                _percent(components["ppv_mean"]),
                str(components["instances"]),
                str(components["segments"]),
            ]
        ],
    )
    rows = [
        [
            f"{entry['siou_threshold']:.2f}",
            str(entry["tp"]),
            str(entry["fn"]),
            str(entry["fp"]),
            _percent(entry["f1"]),
        ]
        for entry in components["per_threshold"]
    ]
    lines += _table(["sIoU threshold", "TP", "FN", "FP", "F1 (%)"], rows)
    per_distance = components.get("per_distance") or []
    if any(entry["instances"] or entry["segments"] for entry in per_distance):
        rows = [
            [
                _range_name(entry["range_m"]),
                _percent(entry["f1_mean"]),
                _percent(entry["siou_mean"]),
                _percent(entry["ppv_mean"]),
                str(entry["instances"]),
                str(entry["segments"]),
            ]
            for entry in per_distance
        ]
        lines += ["Per distance (each instance and segment in the bin of its median depth):", ""]
        lines += _table(
            ["range (m)", "mean F1 (%)", "mean sIoU (%)", "mean PPV (%)", "instances", "segments"], rows
        )
    return lines


def has_distance_plot(components: Mapping | None) -> bool:
    return bool(components) and any(
        entry["f1_mean"] is not None
        for entry in components.get("per_distance") or []  # type: ignore[union-attr]
    )


def components_per_distance_figure(components: Mapping) -> Figure:
    per_distance = components["per_distance"]
    figure = Figure(figsize=(7, 3.5))
    axes = figure.add_subplot()
    positions = np.arange(len(per_distance))
    # A range without instances or segments has no F1 and shows as a gap.
    heights = [np.nan if e["f1_mean"] is None else 100.0 * e["f1_mean"] for e in per_distance]
    axes.bar(positions, heights, 0.6, label="mean F1")
    axes.set_xticks(positions, [_range_name(e["range_m"]) for e in per_distance])
    axes.set(xlabel="distance (m)", ylabel="%", ylim=(0, 100), title="Component-level mean F1 by distance")
    axes.legend(loc="best")
    figure.tight_layout()
    return figure
