"""Cost of the issue-16 checks: the weights hash at load, the header size check before decoding.

Times, interleaved in every iteration so load changes hit all alike: ``weights_sha256`` over the
shipped model's tensors, the whole ``load_checkpoint`` (which includes it), and, for a 1024x2048
JPEG and PNG, reading the declared size from the header against decoding the payload. Prints JSON
with the median and p95 in ms.

    .venv/bin/python scripts/bench_input_checks.py [--iterations 50] [--checkpoint C]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone

import cv2
import numpy as np
import torch
from safetensors.torch import load_file

from openset_perception.checkpoint import load_checkpoint, weights_sha256
from openset_perception.embedded_model import embedded_model_path
from openset_perception.image_codec import compressed_image_size


def timed_ms(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(float(np.median(samples)), 3),
        "p95_ms": round(float(np.percentile(samples, 95)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--checkpoint", default=None, help="default: the embedded model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    checkpoint = args.checkpoint or embedded_model_path()
    state = load_file(str(checkpoint))
    # A smooth 2 MP street-like image: compressed sizes close to a camera's.
    ramp = np.linspace(0, 255, 2048, dtype=np.float32)
    image = np.stack(
        [np.tile(ramp, (1024, 1)), np.tile(ramp[::-1], (1024, 1)), np.full((1024, 2048), 90.0)], 2
    )
    image = image.astype(np.uint8)
    payloads = {ext: cv2.imencode(ext, image)[1] for ext in (".jpg", ".png")}
    calls: dict[str, Callable[[], object]] = {
        "weights_sha256": lambda: weights_sha256(state),
        "load_checkpoint": lambda: load_checkpoint(checkpoint),
    }
    for ext, payload in payloads.items():
        calls[f"header_size{ext}"] = lambda payload=payload: compressed_image_size(payload, "bench")
        calls[f"imdecode{ext}"] = lambda payload=payload: cv2.imdecode(payload, cv2.IMREAD_COLOR)
    for call in calls.values():
        call()  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for iteration in range(args.iterations):
        rotation = iteration % len(names)
        for name in names[rotation:] + names[:rotation]:
            samples[name].append(timed_ms(calls[name]))
    report = {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "checkpoint": str(checkpoint),
        "checkpoint_mb": round(os.path.getsize(checkpoint) / 2**20, 2),
        "iterations": args.iterations,
        "load_average": os.getloadavg(),
        **{name: summary(values) for name, values in samples.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
