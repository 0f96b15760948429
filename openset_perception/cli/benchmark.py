"""``openset-perception benchmark``: latency, throughput, FLOPs and memory of the inference paths."""

from __future__ import annotations

import argparse
import json
import re
import shlex

from openset_perception.cli.main import add_engine_arguments

SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)$")


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' -> (H, W); an argparse type."""
    match = SIZE_PATTERN.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 1024x2048, got '{text}'")
    return int(match.group(1)), int(match.group(2))


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
    parser.add_argument(
        "--size", type=parse_size, default=(1024, 2048), help="input HEIGHTxWIDTH; default 1024x2048"
    )
    parser.add_argument("--batch", type=int, default=1, help="frames per forward pass (cameras); default 1")
    add_engine_arguments(parser, several_runtimes=True)
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks")
    parser.add_argument("--iterations", type=int, default=100, help="timed iterations per path; default 100")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations first; default 10")
    parser.add_argument("--checkpoint", help="time this checkpoint instead of random weights")
    parser.add_argument(
        "--width", type=float, help="channel scale of swiftnet_rn18 with random weights (e.g. 0.5)"
    )
    parser.add_argument(
        "--num-classes", type=int, default=19, help="classes of the random-weight model; default 19"
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads (torch.set_num_threads)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
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
    words += ["--size", f"{args.size[0]}x{args.size[1]}", "--batch", str(args.batch)]
    words += ["--device", args.device, "--precision", args.precision, "--runtime", ",".join(args.runtime)]
    if args.execution_provider != "auto":
        words += ["--execution-provider", args.execution_provider]
    words += ["--iterations", str(args.iterations), "--warmup", str(args.warmup)]
    if args.compile:
        words.append("--compile")
    for option, value in (
        ("--checkpoint", args.checkpoint),
        ("--width", args.width),
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
        BenchmarkConfig,
        append_markdown,
        markdown_table,
        run_interleaved,
        runtime_comparison_table,
        runtime_groups,
        summary_line,
    )
    from openset_perception.cli.main import UserError

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    backbones = backbone_names(args)
    try:
        configs = [
            [
                BenchmarkConfig(
                    backbone=backbone,
                    height=args.size[0],
                    width=args.size[1],
                    batch=args.batch,
                    device=args.device,
                    precision=args.precision,
                    compile=args.compile,
                    iterations=args.iterations,
                    warmup=args.warmup,
                    checkpoint=args.checkpoint,
                    model_width=args.width,
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
    if args.json:
        atomic_write_text(args.json, json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    if args.append_markdown:
        append_markdown(args.append_markdown, results, command_line(args, backbones))
    return 0
