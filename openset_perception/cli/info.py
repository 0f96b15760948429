"""``openset-perception info``: print a checkpoint's model card."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show a checkpoint's model card",
        description="Print the model card stored in a checkpoint's header (architecture, classes, "
        "normalisation, score method, calibrated threshold, training metrics) without loading the weights.",
    )
    parser.add_argument("checkpoint", help="a .safetensors checkpoint")
    parser.add_argument("--json", action="store_true", help="print the raw card as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from openset_perception.checkpoint import read_model_card

    card = read_model_card(args.checkpoint)
    if args.json:
        print(json.dumps(card.to_dict(), indent=2))
        return 0
    arch = card.architecture
    threshold = (
        "not calibrated" if card.threshold is None else f"{card.threshold:.4f} (TPR {card.threshold_tpr})"
    )
    print(f"checkpoint:   {args.checkpoint}")
    probes = " + MOoSe probes" if arch.moose_probes else ""
    print(f"architecture: {arch.backbone} {arch.backbone_kwargs or ''}{probes}")
    print(f"classes ({card.num_classes}): {', '.join(card.class_names)}")
    norm = card.normalization
    print(f"input:        mean {norm.mean}, std {norm.std}, resize {card.input_size}")
    print(f"score:        {card.score_method} (T = {card.score_temperature}), threshold {threshold}")
    if not card.inlier_head_trained:
        print("inlier head:  untrained (closed-set checkpoint): densehybrid/discriminative scores refused")
    if card.source:
        source = card.source
        print(f"imported:     {source.get('publisher')} {source.get('file')} (sha256 {source.get('sha256')})")
    if card.description:
        print(f"description:  {card.description}")
    validation = (card.metrics or {}).get("validation")
    if validation:
        print("validation:   " + ", ".join(f"{k} {v:.4f}" for k, v in validation.items() if v is not None))
    return 0
