#!/usr/bin/env python3
"""Time the node path of two checkouts interleaved: "today's" code against this one, per runtime.

One worker process per variant (a source checkout and a runtime) builds the engine and the node
path of ``openset_perception.benchmark`` from its own checkout; the driver asks them in turn, in an
order that rotates every iteration, to run one node step each, so load from other processes on a
shared machine hits every variant alike. Reports median node-path and stage times, the
non-network share and, per iteration, paired speed-ups over the first variant.

    scripts/paired_node_path.py --baseline /path/to/main/checkout \\
        --checkpoint models/streets_swiftnet_small.safetensors --runtime torch,onnxruntime
    scripts/paired_node_path.py --baseline /path/to/main --backbone swiftnet_rn18 --iterations 15
    scripts/paired_node_path.py --baseline /path/to/main --runtime torch,onnxruntime,torch:bf16

A variant is a runtime, optionally with a precision (``torch:bf16``: bfloat16 on a CPU with AVX512-BF16
or AMX). A baseline checkout predating ``--runtime`` runs its only runtime, torch, in fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
STAGES = ("decode + encode", "preprocess", "network", "scoring", "postprocess", "depth")


def worker(args: argparse.Namespace) -> None:
    """Build one variant, then answer each line on stdin with one timed node step as JSON."""
    import torch

    from openset_perception import benchmark

    torch.set_num_threads(args.threads)
    kwargs = dict(
        backbone=args.backbone,
        height=args.height,
        width=args.width,
        batch=args.batch,
        device="cpu",
        checkpoint=args.checkpoint,
        num_classes=args.num_classes,
    )
    if args.runtime != "baseline":
        runtime, _, precision = args.runtime.partition(":")
        kwargs["runtime"] = runtime
        kwargs["precision"] = precision or "fp32"
    config = benchmark.BenchmarkConfig(**kwargs)
    segmenter = benchmark.build_segmenter(config)
    paths = benchmark.InferencePaths(
        segmenter, benchmark.synthetic_inputs(config.batch, config.height, config.width, config.seed)
    )
    paths.set_threshold()
    print(json.dumps({"ready": True}), flush=True)
    for _ in sys.stdin:
        elapsed_ms, output = benchmark.timed_call(paths.node, segmenter.device)
        stages = dict(output.timings_ms)
        stages["decode + encode"] = elapsed_ms - sum(output.timings_ms.values())
        print(json.dumps({"ms": elapsed_ms, "stages": stages}), flush=True)


def start(source: Path, runtime: str, args: argparse.Namespace) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": str(args.threads)}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--runtime", runtime]
    command += ["--backbone", args.backbone, "--size", f"{args.height}x{args.width}"]
    command += ["--batch", str(args.batch), "--threads", str(args.threads)]
    command += ["--num-classes", str(args.num_classes)]
    if args.checkpoint:
        command += ["--checkpoint", args.checkpoint]
    process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line or not json.loads(line).get("ready"):
        raise SystemExit(f"worker {source} {runtime} failed to start")
    return process


def step(process: subprocess.Popen) -> dict:
    process.stdin.write("run\n")
    process.stdin.flush()
    return json.loads(process.stdout.readline())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", type=Path, help="checkout of today's code (its torch path is timed)")
    parser.add_argument(
        "--runtime",
        default="torch,onnxruntime",
        help="this checkout's variants, comma-separated: a runtime, optionally :precision (torch:bf16)",
    )
    parser.add_argument("--backbone", default="swiftnet_rn18")
    parser.add_argument("--checkpoint", help="checkpoint; default random weights (19 classes)")
    parser.add_argument("--size", default="1024x2048")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", help="write the samples and the summary as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.height, args.width = (int(v) for v in args.size.split("x"))
    if args.checkpoint:
        args.checkpoint = str(Path(args.checkpoint).resolve())
        from openset_perception.checkpoint import read_model_card

        args.backbone = read_model_card(args.checkpoint).architecture.backbone
    if args.worker:
        worker(args)
        return 0

    variants = [("today (baseline) torch", args.baseline, "baseline")] if args.baseline else []
    variants += [(f"this checkout {r}", REPO, r) for r in args.runtime.split(",")]
    processes = [start(source, runtime, args) for _, source, runtime in variants]
    samples: list[list[dict]] = [[] for _ in variants]
    load_start = os.getloadavg()[0]
    for iteration in range(args.warmup + args.iterations):
        order = list(range(len(variants)))
        offset = iteration % len(order)
        for index in order[offset:] + order[:offset]:
            result = step(processes[index])
            if iteration >= args.warmup:
                samples[index].append(result)
        print(f"iteration {iteration + 1}/{args.warmup + args.iterations}", file=sys.stderr, flush=True)
    load_end = os.getloadavg()[0]
    for process in processes:
        process.stdin.close()
        process.wait()

    node = [np.array([s["ms"] for s in runs]) for runs in samples]
    network = [np.array([s["stages"]["network"] for s in runs]) for runs in samples]
    names = [name for name, _, _ in variants]
    header = ["", *names]
    rows = [["node path ms (median)", *(f"{np.median(n):.1f}" for n in node)]]
    for stage in STAGES:
        values = [np.median([s["stages"].get(stage, 0.0) for s in runs]) for runs in samples]
        rows.append([f"{stage} ms", *(f"{v:.1f}" for v in values)])
    rows.append(
        [
            "non-network share",
            *(f"{100 * np.median((n - w) / n):.1f} %" for n, w in zip(node, network, strict=True)),
        ]
    )
    rows.append([f"speed-up over {names[0]} (paired)", *(f"{np.median(node[0] / n):.2f}x" for n in node)])
    print(
        f"\n{Path(args.checkpoint).name if args.checkpoint else args.backbone} {args.height}x{args.width} "
        f"batch {args.batch}, {args.threads} threads, "
        f"{args.iterations} interleaved iterations; 1-minute load {load_start:.2f} -> {load_end:.2f}\n"
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        summary = {"variants": names, "samples": samples, "load": [load_start, load_end], "args": vars(args)}
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
