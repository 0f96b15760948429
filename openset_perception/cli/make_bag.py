"""``openset-perception make-bag``: a dataset as a rosbag2 bag of camera, depth and ground-truth topics."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from openset_perception.cli.options import add_deprecated_alias, add_size_argument

if TYPE_CHECKING:
    from openset_perception.data.sample import Dataset


GENERATED_FRAMES = 50  # scenes make-bag renders for synthetic_streets without --root and --frames


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-bag",
        help="convert a dataset into a rosbag2 bag (image, depth, camera_info, ground truth)",
        description="Writes one camera's frames as <cam>/image (rgb8) or <cam>/image/compressed (JPEG), "
        "<cam>/depth (32FC1 metres, where the dataset has depth), <cam>/camera_info and the ground truth "
        "<cam>/gt/anomaly (mono8: 0 inlier, 1 anomaly, 255 ignore) and <cam>/gt/semantic (mono8 train "
        "ids, K = unknown), all messages of a frame with the same header stamp. No ROS installation "
        "is needed; the bag opens with 'ros2 bag info' and plays with 'ros2 bag play'.",
    )
    parser.add_argument(
        "--dataset",
        required=True,
        metavar="NAME",
        help="dataset reader name, e.g. folder, synthetic_streets, fishyscapes_laf, lostandfound, "
        "streethazards, smiyc_anomaly; an unknown name lists the available ones",
    )
    parser.add_argument(
        "--root", help="dataset root folder (synthetic_streets without --root renders frames directly)"
    )
    parser.add_argument("--split", help="dataset split (e.g. val, test); default: the reader's default")
    parser.add_argument("--out", required=True, help="bag folder to create (must not exist)")
    parser.add_argument("--format", choices=("mcap", "sqlite3"), default="mcap", help="storage; default mcap")
    parser.add_argument("--rate", type=float, default=10.0, metavar="HZ", help="frame rate of the stamps")
    parser.add_argument("--camera", default="camera", help="camera name (topic prefix); default 'camera'")
    parser.add_argument(
        "--compressed", action="store_true", help="JPEG images on <cam>/image/compressed instead of rgb8"
    )
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality with --compressed")
    parser.add_argument(
        "--frames",
        type=int,
        help=f"write the first N frames; default: all of a dataset, {GENERATED_FRAMES} generated scenes",
    )
    add_deprecated_alias(parser, "--max-frames", "--frames", type=int)
    streets = parser.add_argument_group("synthetic_streets without --root (frames rendered on the fly)")
    add_size_argument(streets, (256, 512), "frame size")
    streets.add_argument("--seed", type=int, default=0, help="seed of the generated scenes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _open_dataset(args: argparse.Namespace) -> Dataset:
    from openset_perception.cli.main import UserError

    if args.root is None:
        if args.dataset != "synthetic_streets":
            raise UserError(f"--root is required for dataset '{args.dataset}'")
        from openset_perception.data.synthetic_streets import SyntheticStreets, split_stream

        try:
            return SyntheticStreets(
                GENERATED_FRAMES if args.frames is None else args.frames,
                seed=args.seed,
                height=args.size[0],
                width=args.size[1],
                anomalies=True,
                stream=split_stream(args.split or "test"),
            )
        except ValueError as error:
            raise UserError(str(error)) from error
    from openset_perception.data.registry import DATASET_NAMES, open_dataset

    if args.dataset not in DATASET_NAMES:
        raise UserError(f"unknown dataset '{args.dataset}'; choose one of {', '.join(DATASET_NAMES)}")
    try:
        return open_dataset(args.dataset, Path(args.root), split=args.split)
    except ValueError as error:
        raise UserError(f"cannot open dataset '{args.dataset}' at {args.root}: {error}") from error


def run(args: argparse.Namespace) -> int:
    from openset_perception.bags.writer import write_dataset_bag
    from openset_perception.cli.main import UserError

    if args.frames is not None and args.frames < 1:
        raise UserError(f"--frames must be at least 1, got {args.frames}")
    if not args.rate > 0:
        raise UserError(f"--rate must be > 0, got {args.rate}")
    if not 0 <= args.jpeg_quality <= 100:
        raise UserError(f"--jpeg-quality must be in 0..100, got {args.jpeg_quality}")
    if Path(args.out).exists():
        raise UserError(f"{args.out} already exists; choose a new bag folder")
    dataset = _open_dataset(args)
    written = write_dataset_bag(
        dataset,
        args.out,
        camera=args.camera,
        storage=args.format,
        rate_hz=args.rate,
        compressed=args.compressed,
        jpeg_quality=args.jpeg_quality,
        max_frames=args.frames,
        progress=not args.no_progress,
    )
    frames = max(written.counts.values(), default=0)
    skipped = f", {len(written.skipped)} unreadable frames left out" if written.skipped else ""
    topics = ", ".join(sorted(written.counts))
    print(f"wrote {frames} frames to {args.out} ({args.format}{skipped}); topics: {topics}")
    return 0
