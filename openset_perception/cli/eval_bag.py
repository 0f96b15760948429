"""``openset-perception eval-bag``: metrics and latency of a checkpoint on a recorded rosbag2 bag."""

from __future__ import annotations

import argparse
from pathlib import Path

from openset_perception.cli.component_options import add_component_arguments, component_options
from openset_perception.cli.evaluate import add_label_map_argument, read_label_map
from openset_perception.cli.main import accumulator_mode, add_engine_arguments, add_metric_arguments

# Exit status when the bag was damaged: the report covers what could be read (2 is a usage error).
EXIT_DAMAGED_BAG = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-bag",
        help="evaluate a checkpoint on a rosbag2 bag (no ROS needed): metrics, latency, output bag",
        description="Reads <cam>/image or <cam>/image/compressed, <cam>/depth and the ground truth "
        "<cam>/gt/anomaly and <cam>/gt/semantic of every camera, pairs them by header stamp within "
        "--slop like the node's synchroniser, runs the engine in batches and writes OUT/metrics.json, "
        "OUT/report.md and plots: anomaly AP / AUROC / FPR95 (overall and per distance where depth "
        "exists), mIoU / open-mIoU where labels allow, latency per stage including the evaluation's "
        "own overhead, and the frames skipped and why. Frames without ground truth count for latency "
        "only. A damaged bag is evaluated up to the damage, its report written, and the exit status is 3 "
        "(0: an intact bag, 2: unusable input).",
    )
    parser.add_argument("bag", help="bag folder (with metadata.yaml) or a single .mcap / .db3 file")
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors)")
    parser.add_argument(
        "--camera",
        dest="cameras",
        action="append",
        metavar="NAME",
        help="camera to evaluate (repeatable); default: every camera with an image topic",
    )
    parser.add_argument("--out", help="output folder (default: eval/<checkpoint name>_<bag name>)")
    parser.add_argument("--batch-size", type=int, default=1, help="frames per forward pass")
    parser.add_argument(
        "--slop", type=float, default=0.05, metavar="S", help="pairing tolerance in seconds; default 0.05"
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=16,
        help="frames held per camera while waiting for their depth / ground truth; default 16",
    )
    parser.add_argument(
        "--write-outputs",
        nargs="?",
        const="",
        metavar="BAG",
        help="also write the node's output topics (same headers) to a new bag, by default OUT/outputs",
    )
    add_engine_arguments(parser)
    parser.add_argument("--score-method", metavar="METHOD", help="anomaly score instead of the card's")
    add_metric_arguments(parser, "the bag")
    add_label_map_argument(parser)
    add_component_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from openset_perception.bags.evaluate import evaluate_bag
    from openset_perception.checkpoint import read_model_card
    from openset_perception.cli.main import UserError, segmenter_from_arguments
    from openset_perception.evaluation.evaluate import summary_line

    for name, value in (("--batch-size", args.batch_size), ("--queue-size", args.queue_size)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if not 0 <= args.slop <= 10:
        raise UserError(f"--slop must be in [0, 10] seconds, got {args.slop}")
    read_model_card(args.checkpoint)  # a missing or broken checkpoint fails before anything is read
    label_map = read_label_map(args)
    bag = Path(args.bag)
    if not bag.exists():
        raise FileNotFoundError(f"bag not found: {bag}")
    out_dir = Path(args.out) if args.out else Path("eval") / f"{Path(args.checkpoint).stem}_{bag.stem}"
    outputs_bag = None
    if args.write_outputs is not None:
        outputs_bag = Path(args.write_outputs) if args.write_outputs else out_dir / "outputs"
        if outputs_bag.exists():
            raise UserError(f"{outputs_bag} already exists; bags are never overwritten")
    segmenter = segmenter_from_arguments(args)
    components = component_options(args, segmenter.card.threshold)
    try:
        metrics = evaluate_bag(
            segmenter,
            bag,
            out_dir,
            cameras=args.cameras,
            batch_size=args.batch_size,
            slop_s=args.slop,
            queue_size=args.queue_size,
            mode=accumulator_mode(args),
            protocol=args.protocol,
            two_fold=args.two_fold,
            write_outputs=outputs_bag,
            progress=not args.no_progress,
            components=components,
            title=f"Bag evaluation: {Path(args.checkpoint).name} on {bag.name} ({segmenter.score_method})",
            label_map=label_map,
        )
    except ValueError as error:
        raise UserError(str(error)) from error
    print(summary_line(metrics, out_dir))
    if outputs_bag is not None:
        print(f"node outputs: {outputs_bag}")
    problems = metrics["bag"]["problems"]
    if problems:
        print(f"the bag is damaged, evaluated up to the damage: {problems[-1]}")
        return EXIT_DAMAGED_BAG
    return 0
