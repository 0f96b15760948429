"""``openset-perception info``: print what a checkpoint holds (a model's card, or a flow's settings)."""

from __future__ import annotations

import argparse
import json

# Metric values that are shares (printed in percent); everything else is printed as it is.
_FRACTIONS = ("ap", "auroc", "fpr95", "miou", "open_miou", "tpr", "fpr", "target_tpr")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show a checkpoint's model card (or a flow checkpoint's settings)",
        description="Print the model card stored in a checkpoint's header (architecture, classes, "
        "normalisation, score method, calibrated threshold, every recorded metric) without loading the "
        "weights. Flow checkpoints (flow.safetensors of a synthetic-negatives run) show their kind, "
        "settings and size.",
    )
    parser.add_argument("checkpoint", help="a .safetensors checkpoint")
    parser.add_argument("--json", action="store_true", help="print the raw card as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from openset_perception.checkpoint import read_model_card
    from openset_perception.training.flow_negatives import read_flow_settings

    flow = read_flow_settings(args.checkpoint)
    if flow is not None:
        return _print_flow(args, flow)
    card = read_model_card(args.checkpoint)
    if args.json:
        print(json.dumps(card.to_dict(), indent=2))
        return 0
    arch = card.architecture
    threshold = (
        "not calibrated"
        if card.threshold is None
        else f"{card.threshold:.6g} (TPR {_percent(card.threshold_tpr)})"
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
    for section, values in (card.metrics or {}).items():
        print(f"{section + ':':<13} {_metric_line(values)}")
    return 0


def _print_flow(args: argparse.Namespace, flow: dict) -> int:
    if args.json:
        print(json.dumps(flow, indent=2))
        return 0
    print(f"checkpoint:   {args.checkpoint}")
    print(f"flow:         {flow['kind']} {flow['kwargs'] or ''}")
    print(f"parameters:   {flow['parameters']:,} in {flow['tensors']} tensors")
    return 0


def _metric_line(values: object) -> str:
    """One line for a metrics section: shares in percent, lists and nested tables summarised."""
    if not isinstance(values, dict):
        return str(values)
    parts = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            parts.append(f"{key} {_short(value)}")
        elif key in _FRACTIONS:
            parts.append(f"{key} {_percent(value)}")
        else:
            parts.append(f"{key} {value:.6g}")
    return ", ".join(parts)


def _short(value: object) -> str:
    if isinstance(value, list):
        return f"[{len(value)} entries]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return str(value)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"
