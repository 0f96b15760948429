"""``openset-perception evaluate``: metrics and a report of a checkpoint on a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from openset_perception.cli.component_options import add_component_arguments, component_options
from openset_perception.cli.main import accumulator_mode, add_engine_arguments, add_metric_arguments
from openset_perception.cli.options import add_deprecated_alias

if TYPE_CHECKING:
    from openset_perception.data.sample import Dataset
    from openset_perception.engine import Segmenter
    from openset_perception.evaluation.label_map import LabelMap


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """Checkpoint, dataset and engine options shared by ``evaluate`` and ``calibrate``."""
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors)")
    parser.add_argument(
        "--dataset",
        required=True,
        metavar="NAME",
        help="dataset reader name, e.g. 'folder' for the generic layout written by make-streets; "
        "an unknown name lists the available ones",
    )
    parser.add_argument("--root", required=True, help="dataset root folder")
    parser.add_argument("--split", help="dataset split (e.g. val, test); default: the reader's default")
    add_engine_arguments(parser)
    parser.add_argument(
        "--batch-size", type=int, default=1, help="frames per forward pass (consecutive same-size frames)"
    )
    parser.add_argument("--frames", type=int, help="use only the first N frames")
    add_deprecated_alias(parser, "--max-frames", "--frames", type=int)
    parser.add_argument(
        "--score-method",
        metavar="METHOD",
        help="anomaly score instead of the card's, e.g. densehybrid, generative, discriminative, msp, "
        "max_logit, entropy, energy or moose_msp / moose_entropy / moose_max_logit (models with probes)",
    )


def open_inputs(args: argparse.Namespace) -> tuple[Segmenter, Dataset]:
    """Load the checkpoint and open the dataset, turning bad input into one-line user errors."""
    from openset_perception.checkpoint import read_model_card
    from openset_perception.cli.main import UserError, segmenter_from_arguments

    for name, value in (("--batch-size", args.batch_size), ("--frames", args.frames)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    read_model_card(args.checkpoint)  # a missing or broken checkpoint fails before the dataset is opened
    root = Path(args.root)
    if not root.exists():
        hint = (
            f"; generate the procedural scenes first: openset-perception make-streets --out {root}"
            if args.dataset == "synthetic_streets"
            else ""
        )
        raise FileNotFoundError(f"dataset root {root} does not exist{hint}")
    from openset_perception.data.registry import DATASET_NAMES, open_dataset

    if args.dataset not in DATASET_NAMES:
        raise UserError(f"unknown dataset '{args.dataset}'; choose one of {', '.join(DATASET_NAMES)}")
    try:
        dataset = open_dataset(args.dataset, root, split=args.split)
    except ValueError as error:
        raise UserError(f"cannot open dataset '{args.dataset}' at {root}: {error}") from error
    return segmenter_from_arguments(args), dataset


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint on a dataset (anomaly AP / FPR95, mIoU, open-mIoU, latency)",
        description="Run the inference engine over a dataset and write OUT/metrics.json, OUT/report.md "
        "and PR / ROC / per-distance plots. Anomaly metrics (AP, AUROC, FPR at 95% TPR and other operating "
        "points, best F1) pool all labelled pixels of the dataset (or average per image, --protocol); "
        "mIoU needs semantic labels, open-mIoU labels that mark unknown pixels "
        "(class K or an anomaly mask), per-distance metrics a depth map. Frames that cannot be "
        "read are skipped and listed in the report.",
    )
    add_input_arguments(parser)
    parser.add_argument("--out", help="output folder (default: eval/<checkpoint name>_<dataset>[_<split>])")
    parser.add_argument(
        "--save-scores",
        action="store_true",
        help="also write every frame's float32 anomaly score map to OUT/scores/<frame>.npy",
    )
    add_metric_arguments(parser, "the dataset")
    add_label_map_argument(parser)
    add_component_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def add_label_map_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--label-map",
        metavar="FILE",
        help="YAML mapping the data's semantic ids to the model's class ids (K = unknown, 255 = ignore; "
        "ids not listed are ignored); without it, frames whose labels are not the model's keep only "
        "their anomaly metrics",
    )


def read_label_map(args: argparse.Namespace) -> LabelMap | None:
    """The validated ``--label-map`` for the checkpoint's classes, before anything is run or written."""
    from openset_perception.checkpoint import read_model_card
    from openset_perception.evaluation.label_map import load_label_map

    if not args.label_map:
        return None
    return load_label_map(args.label_map, read_model_card(args.checkpoint).num_classes)


def run(args: argparse.Namespace) -> int:
    from openset_perception.evaluation.evaluate import evaluate_dataset, summary_line

    label_map = read_label_map(args)
    segmenter, dataset = open_inputs(args)
    components = component_options(args, segmenter.card.threshold)
    split = [args.split] if args.split else []
    default_out = Path("eval") / "_".join([Path(args.checkpoint).stem, args.dataset, *split])
    out_dir = Path(args.out) if args.out else default_out
    title = " ".join([Path(args.checkpoint).name, "on", args.dataset, *split])
    metrics = evaluate_dataset(
        segmenter,
        dataset,
        out_dir,
        batch_size=args.batch_size,
        max_frames=args.frames,
        save_scores=args.save_scores,
        mode=accumulator_mode(args),
        protocol=args.protocol,
        two_fold=args.two_fold,
        progress=not args.no_progress,
        title=f"Evaluation: {title} ({segmenter.score_method})",
        label_map=label_map,
        components=components,
    )
    print(summary_line(metrics, out_dir))
    return 0
