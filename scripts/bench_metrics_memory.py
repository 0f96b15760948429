"""Peak memory and time of the anomaly metric accumulators on synthetic 1024x2048 score maps.

Each mode runs in its own subprocess (so every peak RSS is its own), one after the other. Frames are
generated on the fly from a fixed seed: DenseHybrid-like float32 scores (inliers around -9 with three
modes, anomalies around -4), 5 % anomaly and 5 % void pixels, and with ``--depth`` a depth map so the
nine per-distance accumulators run too. Frame generation is not timed. Prints one JSON object per
mode, and the largest AP / AUROC / FPR95 difference of each mode from ``exact`` when it ran.

    PYTHONPATH=. .venv/bin/python scripts/bench_metrics_memory.py --frames 100 --modes binned exact
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def frame(index: int, height: int, width: int, with_depth: bool):
    rng = np.random.default_rng(index)
    labels = (rng.random((height, width), dtype=np.float32) < 0.05).astype(np.uint8)
    inlier = rng.choice(np.array([-12.0, -9.0, -7.5], np.float32), size=(height, width))
    noise = rng.standard_normal((height, width), dtype=np.float32)
    scores = np.where(labels == 1, -4.0 + 2.0 * noise, inlier + 1.2 * noise).astype(np.float32)
    labels[rng.random((height, width), dtype=np.float32) < 0.05] = 255
    depth = None
    if with_depth:
        depth = np.broadcast_to(np.linspace(60.0, 0.5, height, dtype=np.float32)[:, None], (height, width))
    return scores, labels, depth


def run_mode(mode: str, frames: int, height: int, width: int, with_depth: bool) -> dict:
    from openset_perception.evaluation.accumulate import EvaluationAccumulator

    accumulator = EvaluationAccumulator(["inlier", "other"], mode=mode)
    baseline = peak_rss_mb()
    update_s = 0.0
    for index in range(frames):
        scores, labels, depth = frame(index, height, width, with_depth)
        started = time.perf_counter()
        accumulator.update(scores, None, None, gt_anomaly=labels, depth=depth)
        update_s += time.perf_counter() - started
    started = time.perf_counter()
    metrics = accumulator.compute()
    compute_s = time.perf_counter() - started
    anomaly = metrics["anomaly"]
    labelled = anomaly["n_pos"] + anomaly["n_neg"]
    return {
        "mode": mode,
        "frames": frames,
        "size": f"{height}x{width}",
        "depth": with_depth,
        "labelled_pixels": labelled,
        "rss_before_frames_mb": round(baseline, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_growth_bytes_per_labelled_pixel": round((peak_rss_mb() - baseline) * 2**20 / labelled, 2),
        "update_ms_per_frame": round(1e3 * update_s / frames, 1),
        "compute_s": round(compute_s, 2),
        "metrics": {key: anomaly[key] for key in ("ap", "auroc", "fpr95")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--modes", nargs="+", default=["binned", "exact"])
    parser.add_argument("--depth", action="store_true", help="also per-distance metrics (nine ranges)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_mode(args.child, args.frames, args.height, args.width, args.depth)))
        return
    results = {}
    for mode in args.modes:
        command = [sys.executable, __file__, "--child", mode, "--frames", str(args.frames)]
        command += ["--height", str(args.height), "--width", str(args.width)] + (
            ["--depth"] if args.depth else []
        )
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[mode] = json.loads(output.strip().splitlines()[-1])
    if "exact" in results:
        for result in results.values():
            result["max_difference_from_exact"] = max(
                abs(result["metrics"][key] - results["exact"]["metrics"][key]) for key in result["metrics"]
            )
    for result in results.values():
        print(json.dumps(result))


if __name__ == "__main__":
    main()
