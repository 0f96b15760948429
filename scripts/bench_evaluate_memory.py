"""Peak memory of a dataset evaluation at 2 MP: does it stay flat as frames are added?

Evaluates procedural 1024x2048 frames (generated on the fly, never all in memory) with the engine and
the binned metric accumulators, and prints the peak RSS after 1, N/4, N/2 and N frames as JSON.

    .venv/bin/python scripts/bench_evaluate_memory.py --frames 200 [--checkpoint C]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

import torch

from openset_perception.data.synthetic_streets import SyntheticStreets
from openset_perception.engine import Segmenter
from openset_perception.evaluation.evaluate import evaluate_dataset


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Probe:
    """A dataset wrapper that records the peak RSS at chosen frame counts."""

    def __init__(self, dataset: SyntheticStreets, marks: set[int]) -> None:
        self.dataset, self.marks, self.info, self.peaks = dataset, marks, dataset.info, {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if index in self.marks:
            self.peaks[index] = round(peak_rss_mb(), 1)
        return self.dataset[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--checkpoint", default=None, help="default: the embedded model")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from openset_perception.embedded_model import embedded_model_path

    segmenter = Segmenter.from_checkpoint(args.checkpoint or embedded_model_path(), device="auto")
    scenes = SyntheticStreets(args.frames, seed=5, height=args.height, width=args.width, anomalies=True)
    marks = {1, args.frames // 4, args.frames // 2, args.frames - 1}
    probe = Probe(scenes, marks)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        metrics = evaluate_dataset(segmenter, probe, out, mode="binned", progress=True)
    print(
        json.dumps(
            {
                "frames": metrics["frames"]["evaluated"],
                "size": f"{args.height}x{args.width}",
                "peak_rss_mb_at_frame": probe.peaks,
                "peak_rss_mb_end": round(peak_rss_mb(), 1),
                "seconds": round(time.perf_counter() - started, 1),
                "ap": metrics["anomaly"]["ap"],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
