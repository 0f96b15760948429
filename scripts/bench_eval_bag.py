#!/usr/bin/env python3
"""How much of an eval-bag run is the evaluation itself, and does its memory stay flat?

Builds a bag of procedural street frames in a temporary folder (raw rgb8 + 32FC1 depth + both ground
truths per frame, 10 Hz), then runs ``evaluate_bag`` with a random-weight model and prints one JSON
object: per-frame milliseconds of the engine and of each overhead stage (bag read + deserialisation,
pairing, decode, metrics), the overhead's share of the run, and the process's resident memory sampled
during the evaluation (at 25 / 50 / 100 % of the run and its peak), next to the size of all frames.
A flat RSS while the bag streams through is the bounded-memory check.

The bag is written by a child process so its memory does not count; only ``--distinct`` frames are
rendered and then repeated under new stamps (reading, decoding and scoring cost the same for any
content). Defaults are the issue's setting; the machine here is small, so e.g.::

    .venv/bin/python scripts/bench_eval_bag.py                                  # 300 x 1024x2048
    .venv/bin/python scripts/bench_eval_bag.py --frames 100 --height 512 --width 1024 --threads 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

from openset_perception.data.sample import Sample

BYTES_PER_PIXEL = 3 + 4 + 1 + 1  # rgb8 image, 32FC1 depth, two mono8 ground truths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--distinct", type=int, default=8, help="rendered frames, repeated to --frames")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--compressed", action="store_true", help="JPEG images instead of rgb8")
    parser.add_argument("--backbone", default="swiftnet_rn18")
    parser.add_argument(
        "--backbone-width",
        type=float,
        help="channel width multiplier (e.g. 0.125): a cheap engine, to measure the overhead at full "
        "resolution on a slow CPU; engine times then do not stand for the real model",
    )
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--workdir", help="folder for the bag (default: a temporary folder, removed)")
    return parser.parse_args(argv)


class _RepeatedFrames:
    """``distinct`` rendered frames standing in for ``frames`` frames."""

    def __init__(self, frames: int, distinct: int, height: int, width: int) -> None:
        from openset_perception.data.synthetic_streets import SyntheticStreets

        streets = SyntheticStreets(distinct, seed=1, height=height, width=width, anomalies=True)
        self.samples = [streets[i] for i in range(distinct)]
        self.info = streets.info
        self.frames = frames

    def __len__(self) -> int:
        return self.frames

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index % len(self.samples)]


def _build_bag(args: argparse.Namespace, bag: Path) -> None:
    from openset_perception.bags.writer import write_dataset_bag

    dataset = _RepeatedFrames(args.frames, args.distinct, args.height, args.width)
    write_dataset_bag(dataset, bag, storage=args.storage, compressed=args.compressed, progress=False)


def _rss_mb() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _RssSampler(threading.Thread):
    def __init__(self, period_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.perf_counter(), _rss_mb()))
            self._stop_event.wait(self.period_s)

    def stop(self) -> list[tuple[float, float]]:
        self._stop_event.set()
        self.join()
        return self.samples


def _segmenter(args: argparse.Namespace):
    import numpy as np

    from openset_perception.checkpoint import ModelCard
    from openset_perception.data.synthetic_streets import STREET_CLASSES, STREET_PALETTE
    from openset_perception.engine import Segmenter
    from openset_perception.models import ArchitectureSpec, build_model

    kwargs = {} if args.backbone_width is None else {"width": args.backbone_width}
    spec = ArchitectureSpec(args.backbone, len(STREET_CLASSES), kwargs)
    card = ModelCard(
        architecture=spec, class_names=list(STREET_CLASSES), palette=STREET_PALETTE, threshold=0.0
    )
    segmenter = Segmenter(build_model(spec).eval(), card, device=args.device)
    warmup = np.zeros((args.height, args.width, 3), np.uint8)
    segmenter.threshold = float(np.quantile(segmenter.segment([warmup]).anomaly_score, 0.95))
    return segmenter


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from openset_perception.bags.evaluate import evaluate_bag

    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        bag = Path(folder) / "bench_bag"
        started = time.perf_counter()
        builder = multiprocessing.get_context("spawn").Process(target=_build_bag, args=(args, bag))
        builder.start()
        builder.join()
        if builder.exitcode != 0:
            print(f"building the bag failed (exit code {builder.exitcode})", file=sys.stderr)
            return 1
        build_s = time.perf_counter() - started
        bag_bytes = sum(file.stat().st_size for file in bag.iterdir())

        segmenter = _segmenter(args)
        rss_before = _rss_mb()
        sampler = _RssSampler()
        sampler.start()
        started = time.perf_counter()
        metrics = evaluate_bag(
            segmenter, bag, Path(folder) / "eval", batch_size=args.batch_size, progress=False
        )
        eval_s = time.perf_counter() - started
        samples = sampler.stop()

    frames = max(metrics["frames"]["evaluated"], 1)
    overhead = metrics["overhead"]
    stages = ("read", "pairing", "decode", "metrics")
    at = {}
    for fraction in (0.25, 0.5, 1.0):
        moment = samples[0][0] + fraction * (samples[-1][0] - samples[0][0])
        at[f"{int(fraction * 100)}%"] = round(max(rss for t, rss in samples if t <= moment), 1)
    result = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "frames": frames,
        "size": f"{args.height}x{args.width}",
        "storage": args.storage,
        "compressed": args.compressed,
        "backbone": args.backbone
        if args.backbone_width is None
        else f"{args.backbone} x{args.backbone_width}",
        "device": str(segmenter.device),
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "bag_mb": round(bag_bytes / 2**20, 1),
        "build_s": round(build_s, 1),
        "eval_s": round(eval_s, 1),
        "engine_ms_per_frame": round(overhead["engine_ms"] / frames, 2),
        "overhead_ms_per_frame": {stage: round(overhead[f"{stage}_ms"] / frames, 2) for stage in stages},
        "overhead_fraction": round(overhead["overhead_fraction"], 4),
        "rss_mb": {"before_eval": round(rss_before, 1), **at},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "all_frames_mb": round(frames * args.height * args.width * BYTES_PER_PIXEL / 2**20, 1),
        "load_average_1min": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
