"""The demo: a procedural rosbag with unknown objects on the road, evaluated end to end.

It writes the bag with the rosbag tools, runs the embedded model on it through the inference engine
(the node's code path, via ``eval-bag``), and renders the node's overlay and heat-map outputs for a
few frames. Everything lands in one folder, replaced on every run.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from openset_perception.atomic import atomic_write_png
from openset_perception.bags.evaluate import evaluate_bag
from openset_perception.bags.frames import ReadStatistics, read_frames
from openset_perception.bags.reader import BagReader
from openset_perception.bags.writer import write_dataset_bag
from openset_perception.data.synthetic_streets import SyntheticStreets, split_stream
from openset_perception.engine import Segmenter
from openset_perception.image_codec import decode_color, image_to_numpy
from openset_perception.runtime.camera_batch import FrameMaps
from openset_perception.runtime.outputs import RenderStyle, heatmap_range, render_image_outputs
from openset_perception.visualize import contact_sheet

DEMO_BAG = "demo_bag"
HEATMAP_SPAN = 10.0


def _write_png(path: Path, rgb: np.ndarray) -> None:
    atomic_write_png(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _pick_frames(bag: Path, count: int) -> list[np.ndarray]:
    """``count`` frames spread over the bag, preferring frames whose ground truth has anomalies."""
    frames = []
    with BagReader(bag) as reader:
        for frame in read_frames(reader, ReadStatistics()):
            anomalous = frame.gt_anomaly is not None and bool((image_to_numpy(frame.gt_anomaly) == 1).any())
            frames.append((decode_color(frame.image), anomalous))
    preferred = [image for image, anomalous in frames if anomalous] or [image for image, _ in frames]
    chosen = np.linspace(0, len(preferred) - 1, num=min(count, len(preferred))).round().astype(int)
    return [preferred[i] for i in sorted(set(chosen))]


def render_examples(segmenter: Segmenter, bag: Path, out_dir: Path, count: int) -> Path:
    """Overlay and heat-map PNGs for ``count`` frames, plus a contact sheet; returns the sheet's path."""
    style = RenderStyle(
        palette=np.asarray(segmenter.card.palette, dtype=np.uint8),
        heatmap_range=heatmap_range(segmenter.threshold, HEATMAP_SPAN),
    )
    rows = []
    for index, image in enumerate(_pick_frames(bag, count)):
        result = segmenter.segment([image], outputs=("anomaly_score", "open_set"))
        maps = FrameMaps(None, result.anomaly_score[0], result.open_set[0], None)
        rendered = render_image_outputs(image, maps, ("overlay", "anomaly_heatmap"), style)
        _write_png(out_dir / f"frame_{index:02d}_overlay.png", rendered["overlay"])
        _write_png(out_dir / f"frame_{index:02d}_heatmap.png", rendered["anomaly_heatmap"])
        rows.append([image, rendered["overlay"], rendered["anomaly_heatmap"]])
    titles = ["input", "open-set overlay (unknown = cyan)", "anomaly score"] * len(rows)
    sheet_path = out_dir / "contact_sheet.png"
    _write_png(sheet_path, contact_sheet(rows, titles=[titles[i * 3 : i * 3 + 3] for i in range(len(rows))]))
    return sheet_path


def run_demo(
    out_dir: str | Path,
    checkpoint: str | Path,
    frames: int = 30,
    height: int = 256,
    width: int = 512,
    seed: int = 2024,
    examples: int = 4,
    device: str = "auto",
    runtime: str = "torch",
) -> dict:
    """Build the bag, evaluate it, render examples; returns the metrics (also in metrics.json)."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    scenes = SyntheticStreets(
        frames, seed=seed, height=height, width=width, anomalies=True, stream=split_stream("demo")
    )
    bag = out_dir / DEMO_BAG
    write_dataset_bag(scenes, bag, storage="mcap", rate_hz=10.0)
    segmenter = Segmenter.from_checkpoint(checkpoint, device=device, runtime=runtime)
    # The first frame of a size exports the onnxruntime graph (or picks kernels): not a frame's latency.
    segmenter.warmup(height, width, iterations=1)
    metrics = evaluate_bag(segmenter, bag, out_dir, title="Demo: embedded model on a procedural rosbag")
    sheet = render_examples(segmenter, bag, out_dir, examples)
    metrics["demo"] = {"seconds": time.perf_counter() - started, "contact_sheet": str(sheet), "bag": str(bag)}
    return metrics
