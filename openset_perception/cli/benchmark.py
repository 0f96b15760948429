"""``openset-perception benchmark``: latency, throughput, FLOPs and memory of the inference paths."""

from __future__ import annotations

import argparse
import json
import shlex

from openset_perception.cli.main import add_engine_arguments
from openset_perception.cli.options import add_deprecated_alias, add_size_argument

# Defaults by device type: a CPU runs a 2 MP frame in seconds, so 100 iterations of 4 paths would take
# 15 minutes or more there.
ITERATIONS = {"cuda": 100, "cpu": 10}
WARMUP = {"cuda": 10, "cpu": 2}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="time closed-set vs DenseHybrid inference, depth binning and the full node path",
        description="Time four paths over the same frames, interleaved within every iteration so load "
        "changes hit all alike, after warm-up and with CUDA synchronisation: (a) closed-set forward + "
        "argmax (backbone + classifier, logits upsampled to full resolution), (b) the engine's "
        "DenseHybrid path (a + inlier head, its upsampling, the score and open-set fusion), (c) b + "
        "depth binning, (d) the full node path (Image message decode -> engine -> message encode, no "
        "DDS). Reports median/p95 ms, FPS, the overhead (b - a) / a, GFLOPs and peak memory. Random "
        "weights unless --checkpoint is given.",
    )
    parser.add_argument(
        "--backbone",
        action="append",
        metavar="NAME",
        help="backbone to time (repeatable, or 'all'); default swiftnet_rn18, or the checkpoint's",
    )
    add_size_argument(parser, (1024, 2048), "input size", old_spellings=False)
    parser.add_argument(
        "--batch-size", type=int, default=1, help="frames per forward pass (cameras); default 1"
    )
    add_deprecated_alias(parser, "--batch", "--batch-size", type=int)
    add_engine_arguments(parser, several_runtimes=True)
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks")
    parser.add_argument(
        "--iterations",
        type=int,
        help=f"timed iterations per path; default {ITERATIONS['cuda']} on a GPU, {ITERATIONS['cpu']} on CPUs",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        help=f"untimed iterations first; default {WARMUP['cuda']} on a GPU, {WARMUP['cpu']} on the CPU",
    )
    parser.add_argument("--checkpoint", help="time this checkpoint instead of random weights")
    parser.add_argument(
        "--model-width", type=float, help="channel scale of swiftnet_rn18 with random weights (e.g. 0.5)"
    )
    add_deprecated_alias(parser, "--width", "--model-width", type=float)
    parser.add_argument(
        "--num-classes", type=int, default=19, help="classes of the random-weight model; default 19"
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads (torch.set_num_threads)")
    parser.add_argument("--out", metavar="FILE", help="also write the results to FILE as JSON")
    add_deprecated_alias(parser, "--json", "--out")
    parser.add_argument(
        "--append-markdown",
        metavar="FILE",
        help="append the run as a Markdown table, e.g. docs/benchmarks.md",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def backbone_names(args: argparse.Namespace) -> list[str]:
    from openset_perception.checkpoint import read_model_card
    from openset_perception.cli.main import UserError
    from openset_perception.models import BACKBONE_NAMES

    requested = args.backbone or []
    if args.checkpoint is not None:
        backbone = read_model_card(args.checkpoint).architecture.backbone
        if any(name != backbone for name in requested):
            raise UserError(f"--checkpoint holds a {backbone}; drop --backbone or name that one")
        return [backbone]
    names: list[str] = []
    for name in requested or ["swiftnet_rn18"]:
        expanded = list(BACKBONE_NAMES) if name == "all" else [name]
        for backbone in expanded:
            if backbone not in BACKBONE_NAMES:
                choices = ", ".join((*BACKBONE_NAMES, "all"))
                raise UserError(f"unknown backbone '{backbone}'; choose from {choices}")
            if backbone not in names:
                names.append(backbone)
    return names


def command_line(args: argparse.Namespace, backbones: list[str]) -> str:
    """The run as an explicit command (every option that shapes the numbers), for the Markdown log."""
    words = ["openset-perception", "benchmark"]
    for backbone in backbones:
        words += ["--backbone", backbone]
    words += ["--size", f"{args.size[0]}x{args.size[1]}", "--batch-size", str(args.batch_size)]
    words += ["--device", args.device, "--precision", args.precision, "--runtime", ",".join(args.runtime)]
    if args.execution_provider != "auto":
        words += ["--execution-provider", args.execution_provider]
    words += ["--iterations", str(args.iterations), "--warmup", str(args.warmup)]
    if args.compile:
        words.append("--compile")
    for option, value in (
        ("--checkpoint", args.checkpoint),
        ("--model-width", args.model_width),
        ("--threads", args.threads),
    ):
        if value is not None:
            words += [option, str(value)]
    if args.checkpoint is None and args.num_classes != 19:
        words += ["--num-classes", str(args.num_classes)]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    import torch

    from openset_perception.atomic import atomic_write_text
    from openset_perception.benchmark import (
        PATHS,
        BenchmarkConfig,
        append_markdown,
        markdown_table,
        run_interleaved,
        runtime_comparison_table,
        runtime_groups,
        summary_line,
    )
    from openset_perception.cli.main import UserError
    from openset_perception.engine import resolve_device

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    backbones = backbone_names(args)
    kind = "cuda" if resolve_device(args.device).type == "cuda" else "cpu"
    args.iterations = ITERATIONS[kind] if args.iterations is None else args.iterations
    args.warmup = WARMUP[kind] if args.warmup is None else args.warmup
    print(
        f"timing {len(PATHS)} paths x {args.iterations} iterations (+{args.warmup} warm-up) per runtime of "
        f"{', '.join(backbones)} at {args.size[0]}x{args.size[1]} on {kind}; the progress bar shows the "
        "time left",
        flush=True,
    )
    try:
        configs = [
            [
                BenchmarkConfig(
                    backbone=backbone,
                    height=args.size[0],
                    width=args.size[1],
                    batch=args.batch_size,
                    device=args.device,
                    precision=args.precision,
                    compile=args.compile,
                    iterations=args.iterations,
                    warmup=args.warmup,
                    checkpoint=args.checkpoint,
                    model_width=args.model_width,
                    num_classes=args.num_classes,
                    runtime=runtime,
                    execution_provider=args.execution_provider,
                )
                for runtime in args.runtime
            ]
            for backbone in backbones
        ]
    except ValueError as error:
        raise UserError(str(error)) from error
    # The runtimes of one backbone run interleaved in one loop; backbones one after the other.
    results = [r for group in configs for r in run_interleaved(group, progress=not args.no_progress)]
    print(markdown_table(results))
    for result in results:
        print(summary_line(result))
    for group in runtime_groups(results):
        print("\n" + runtime_comparison_table(group))
    if args.out:
        atomic_write_text(args.out, json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    if args.append_markdown:
        append_markdown(args.append_markdown, results, command_line(args, backbones))
    return 0
