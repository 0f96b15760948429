"""``openset-perception import-weights``: turn a published checkpoint into our safetensors format."""

from __future__ import annotations

import argparse

from openset_perception.cli.main import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-weights",
        help="import a published DenseHybrid / SwiftNet checkpoint",
        description="Read a published torch.save(state_dict) file (tensors only: pickled code is refused), "
        "map the authors' keys to ours and write a .safetensors checkpoint with a model card (classes, "
        "palette, normalisation, score method, source file and its sha256). No threshold is set: run "
        "`openset-perception calibrate` on your own data.",
    )
    parser.add_argument(
        "--format",
        required=True,
        help="the checkpoint's layout, e.g. swiftnet-rn18 (an unknown name lists them all)",
    )
    parser.add_argument("weights", help="the downloaded file (e.g. rn18_single_scale/model_best.pt)")
    parser.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from openset_perception.weights_import import WeightImportError, import_weights

    try:
        summary = import_weights(args.format, args.weights, args.out)
    except WeightImportError as error:
        raise UserError(str(error)) from None
    card = summary.card
    source = card.source
    head = "trained" if card.inlier_head_trained else "untrained (closed-set checkpoint)"
    print(f"imported:     {source['publisher']} {source['file']} as {summary.format}")
    print(f"sha256:       {summary.sha256}")
    size = f"{summary.parameters:,} parameters, {summary.tensors} tensors"
    print(f"architecture: {card.architecture.backbone}, {size}")
    print(f"classes:      {card.num_classes} ({source['dataset']})")
    print(f"input:        RGB mean {card.normalization.mean}, std {card.normalization.std} (0-1 scale)")
    print(f"inlier head:  {head}; score method {card.score_method}")
    print(f"written:      {summary.output} (no threshold: run `openset-perception calibrate` to set one)")
    return 0
