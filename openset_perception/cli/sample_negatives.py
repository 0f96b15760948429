"""``openset-perception sample-negatives``: a grid of flow-generated negatives for inspection."""

from __future__ import annotations

import argparse
from pathlib import Path

from openset_perception.cli.options import add_deprecated_alias


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sample-negatives",
        help="draw synthetic negatives from a trained flow into a PNG grid",
        description="Samples --count patches at several sizes from a flow checkpoint (flow.safetensors, "
        "written by training with negatives.source: flow) and writes them as one image grid.",
    )
    parser.add_argument("--checkpoint", required=True, help="flow checkpoint (run dir/flow.safetensors)")
    parser.add_argument("--count", type=int, default=64, help="number of patches")
    add_deprecated_alias(parser, "--n", "--count", type=int)
    parser.add_argument("--out", default="negatives_grid.png", help="output PNG")
    parser.add_argument("--sizes", default="32,48,64", help="comma-separated patch sides in px")
    parser.add_argument("--temperature", type=float, default=1.0, help="latent temperature (< 1: smoother)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np
    import torch

    from openset_perception.atomic import atomic_write_png
    from openset_perception.cli.main import UserError
    from openset_perception.training.flow_negatives import load_flow
    from openset_perception.visualize import contact_sheet

    flow = load_flow(args.checkpoint)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s % flow.size_multiple]
    if bad:
        raise UserError(f"--sizes {bad} are not multiples of the flow's size multiple {flow.size_multiple}")
    torch.manual_seed(args.seed)
    per_row = int(np.ceil(np.sqrt(args.count)))
    tiles = []
    with torch.no_grad():
        for i in range(args.count):
            side = sizes[i % len(sizes)]
            image = flow.to_image(flow.sample(1, side, side, temperature=args.temperature))[0]
            tiles.append((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    rows = [tiles[i : i + per_row] for i in range(0, len(tiles), per_row)]
    sheet = contact_sheet(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_png(out, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.count} negatives ({', '.join(map(str, sizes))} px) to {out}")
    return 0
