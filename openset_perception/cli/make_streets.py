"""``openset-perception make-streets``: write procedural street scenes in the generic folder layout."""

from __future__ import annotations

import argparse

from openset_perception.cli.options import add_size_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-streets",
        help="write a procedural street-scene dataset to disk",
        description="Writes ROOT/train, ROOT/val and ROOT/test in the generic folder layout (images, "
        "semantic train ids, anomaly masks, 16-bit millimetre depth). val/test contain anomalies.",
    )
    parser.add_argument("--out", required=True, help="output root folder")
    parser.add_argument("--train", type=int, default=200, help="number of training frames (no anomalies)")
    parser.add_argument("--val", type=int, default=50, help="number of validation frames (with anomalies)")
    parser.add_argument("--test", type=int, default=50, help="number of test frames (with anomalies)")
    add_size_argument(parser, (256, 512), "frame size")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from openset_perception.data.synthetic_streets import write_synthetic_streets

    splits = {"train": args.train, "val": args.val, "test": args.test}
    write_synthetic_streets(args.out, splits=splits, seed=args.seed, height=args.size[0], width=args.size[1])
    counts = ", ".join(f"{name} {n}" for name, n in splits.items())
    print(f"wrote {sum(splits.values())} procedural frames to {args.out} ({counts})")
    return 0
