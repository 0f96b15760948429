#!/usr/bin/env python3
"""The node path's per-pixel stages on a CPU, each against the PyTorch formulation it replaced.

Interleaved medians over ``--iterations`` runs, one line per stage, on synthetic maps of a 2 MP frame
(stride-4 outputs of 8 and 19 classes, a road-like depth ramp with 5 % holes, a uint8 noise frame):

- upsample + argmax + score: ``kernels.upsample_score`` vs ``F.interpolate`` of the whole maps, then
  ``scoring``'s row-block argmax and DenseHybrid score (the engine's path for other geometries), and
  the kernel for the classes alone (what DenseHybrid's score adds on top of a closed-set argmax);
- depth table: ``kernels.depth_table`` vs ``depth.depth_table_on_device`` (the GPU formulation);
- preprocessing: ``normalize_padded`` into a reused buffer, standard vs channels-last layout;
- the network (BatchNorm folded, as the engine runs it), standard vs channels-last weights and input,
  for the shipped model and swiftnet_rn18 (random weights, 19 classes);
- page faults per frame of the whole engine (torch runtime), with and without ``keep_freed_memory``
  (each in a subprocess of its own: glibc's thresholds cannot be set back).

    PYTHONPATH=. .venv/bin/python scripts/bench_cpu_kernels.py --threads 2 --iterations 15
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent


def interleaved(variants: dict[str, Callable[[], object]], iterations: int) -> dict[str, float]:
    for run in variants.values():  # warm-up: compilation, allocations
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(iterations):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: float(np.median(values)) for name, values in times.items()}


def upsample_and_score(classes: int, iterations: int) -> dict[str, float]:
    from openset_perception.kernels.upsample_score import upsampled_classes_and_score
    from openset_perception.models.segmenter import SegmenterOutput
    from openset_perception.scoring import classes_and_anomaly_score

    generator = torch.Generator().manual_seed(classes)
    logits = 4 * torch.randn((1, classes, 256, 512), generator=generator)
    ood = 3 * torch.randn((1, 1, 256, 512), generator=generator)
    size = (1024, 2048)

    def pytorch() -> object:
        up = SegmenterOutput(
            F.interpolate(logits, size=size, mode="bilinear", align_corners=False),
            F.interpolate(ood, size=size, mode="bilinear", align_corners=False),
            [],
        )
        return classes_and_anomaly_score(up, "densehybrid")

    def kernel() -> object:
        return upsampled_classes_and_score(logits, ood, size, size, "densehybrid", 1.0, torch.uint8)

    def kernel_classes_only() -> object:  # what a closed-set segmenter needs: max_logit is the maximum
        return upsampled_classes_and_score(logits, ood, size, size, "max_logit", 1.0, torch.uint8)

    variants = {"pytorch": pytorch, "kernel": kernel, "kernel, classes only": kernel_classes_only}
    return interleaved(variants, iterations)


def depth_table(iterations: int) -> dict[str, float]:
    from openset_perception.benchmark import synthetic_inputs
    from openset_perception.depth import DepthBins, depth_table_on_device
    from openset_perception.kernels.depth_table import depth_table as kernel_table

    depth = synthetic_inputs(1, 1024, 2048).depth_m[0][None]
    scores = np.random.default_rng(0).normal(size=depth.shape).astype(np.float32)
    threshold = float(np.quantile(scores, 0.95))  # 5 % anomalous, as the benchmark sets it
    bins = DepthBins()
    depth_t, scores_t = torch.from_numpy(depth), torch.from_numpy(scores)
    flat_scores, flat_depth = scores.reshape(1, -1), depth.reshape(1, -1)
    return interleaved(
        {
            "pytorch": lambda: depth_table_on_device(scores_t, depth_t, threshold, bins),
            "kernel": lambda: kernel_table(
                flat_scores, flat_depth, bins.edges_m, bins.beyond_last, threshold
            ),
        },
        iterations,
    )


def preprocessing(iterations: int) -> dict[str, float]:
    from openset_perception.preprocess import Normalization, hwc_batch_to_tensor, normalize_padded

    frame = np.random.default_rng(0).integers(0, 256, (1024, 2048, 3), dtype=np.uint8)
    batch = hwc_batch_to_tensor([frame], torch.device("cpu"))
    normalization = Normalization()
    buffers: dict[str, torch.Tensor | None] = {"standard": None, "channels-last": None}
    formats = {"standard": torch.contiguous_format, "channels-last": torch.channels_last}

    def run(name: str) -> Callable[[], object]:
        def step() -> object:
            buffers[name] = normalize_padded(batch, normalization, 32, buffers[name], formats[name])
            return buffers[name]

        return step

    return interleaved({name: run(name) for name in formats}, iterations)


def network_layout(iterations: int) -> dict[str, dict[str, float]]:
    from openset_perception.checkpoint import load_checkpoint
    from openset_perception.models import ArchitectureSpec, build_model
    from openset_perception.models.fold import fold_batchnorm

    torch.manual_seed(0)
    models = {
        "shipped": load_checkpoint(REPO / "models" / "streets_swiftnet_small.safetensors")[0],
        "swiftnet_rn18": build_model(ArchitectureSpec("swiftnet_rn18", 19)),
    }
    x = torch.randn((1, 3, 1024, 2048))
    x_last = x.contiguous(memory_format=torch.channels_last)
    results = {}
    for name, model in models.items():
        model.eval()
        fold_batchnorm(model, torch.zeros((1, 3, 64, 64)))
        channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
        with torch.inference_mode():
            results[name] = interleaved(
                {
                    "standard": lambda m=model: m(x, upsample=False),
                    "channels-last": lambda m=channels_last: m(x_last, upsample=False),
                },
                iterations,
            )
    return results


def page_faults_worker(keep: bool, threads: int, iterations: int) -> None:
    torch.set_num_threads(threads)
    from openset_perception import benchmark, host_memory

    if not keep:  # the engine calls keep_freed_memory for CPU devices: make that call a no-op
        host_memory.keep_freed_memory = lambda: False
        import openset_perception.engine as engine

        engine.keep_freed_memory = host_memory.keep_freed_memory
    from openset_perception.engine import Segmenter

    segmenter = Segmenter.from_checkpoint(
        REPO / "models" / "streets_swiftnet_small.safetensors", device="cpu"
    )
    inputs = benchmark.synthetic_inputs(1, 1024, 2048)
    for _ in range(2):
        segmenter.segment(inputs.frames, inputs.depth_m)
    faults, times = [], []
    for _ in range(iterations):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        segmenter.segment(inputs.frames, inputs.depth_m)
        times.append((time.perf_counter() - start) * 1e3)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"faults_per_frame": float(np.median(faults)), "frame_ms": float(np.median(times))}))


def page_faults(threads: int, iterations: int) -> dict[str, dict[str, float]]:
    results = {}
    for keep in (False, True):
        command = [sys.executable, __file__, "--page-faults-worker", str(int(keep))]
        command += ["--threads", str(threads), "--iterations", str(iterations)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        results["kept" if keep else "returned to the OS"] = json.loads(output.strip().splitlines()[-1])
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--page-faults-worker", type=int, choices=(0, 1), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.page_faults_worker is not None:
        page_faults_worker(bool(args.page_faults_worker), args.threads, args.iterations)
        return 0
    torch.set_num_threads(args.threads)
    print(f"{args.threads} threads, {args.iterations} interleaved iterations, medians in ms, 1024x2048")
    for classes in (8, 19):
        result = upsample_and_score(classes, args.iterations)
        print(f"upsample + argmax + DenseHybrid score, {classes} classes from 256x512: {json.dumps(result)}")
    print(f"depth table (11 edges, 5 % anomalous): {json.dumps(depth_table(args.iterations))}")
    print(
        f"preprocessing (uint8 HWC -> normalised padded float): {json.dumps(preprocessing(args.iterations))}"
    )
    layouts = json.dumps(network_layout(max(3, args.iterations // 3)))
    print(f"network at the output stride, BatchNorm folded: {layouts}")
    faults = json.dumps(page_faults(args.threads, 7))
    print(f"engine frame, shipped model, torch runtime, freed memory: {faults}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
