"""``openset-perception demo``: the embedded model on a procedural rosbag, end to end."""

from __future__ import annotations

import argparse

from openset_perception.cli.main import RUNTIME_CHOICES
from openset_perception.cli.options import add_size_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the embedded model on a procedural rosbag with unknown objects",
        description="Builds a short procedural rosbag (images, depth, ground truth) with unknown objects on "
        "the road, runs the model on it through the same engine the ROS node uses, and writes overlay and "
        "heat-map PNGs, a contact sheet, metrics.json and report.md (per-distance results, latency) "
        "to --out. "
        "Re-running replaces the folder.",
    )
    parser.add_argument("--out", default="demo_output", help="output folder (replaced on every run)")
    parser.add_argument("--checkpoint", default=None, help="model to run (default: the embedded model)")
    parser.add_argument("--frames", type=int, default=30, help="frames in the demo bag")
    add_size_argument(parser, (256, 512), "frame size")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the generated scenes")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument(
        "--runtime",
        default="torch",
        choices=RUNTIME_CHOICES,
        help="network runtime: torch or onnxruntime (needs the onnxruntime package); default torch",
    )
    parser.set_defaults(func=run)


def _distance_lines(metrics: dict) -> list[str]:
    lines = []
    for entry in metrics.get("per_distance") or []:
        if entry.get("ap") is not None:
            low, high = entry["range_m"]
            lines.append(
                f"  {low:.0f}-{high:.0f} m: AP {100 * entry['ap']:.1f}%, FPR95 {100 * entry['fpr95']:.2f}%"
            )
    return lines


def run(args: argparse.Namespace) -> int:
    from openset_perception.checkpoint import read_model_card
    from openset_perception.demo import run_demo
    from openset_perception.embedded_model import embedded_model_path
    from openset_perception.evaluation.evaluate import summary_line

    checkpoint = args.checkpoint or embedded_model_path()
    metrics = run_demo(
        args.out,
        checkpoint,
        args.frames,
        args.size[0],
        args.size[1],
        args.seed,
        device=args.device,
        runtime=args.runtime,
    )
    total = (metrics.get("latency_ms") or {}).get("total") or {}
    card = read_model_card(checkpoint).metrics.get("test") or {}
    print(f"\ndemo: {checkpoint} on {args.frames} procedural frames")
    print("  " + summary_line(metrics, args.out))
    print("\n".join(_distance_lines(metrics)))
    if total:
        print(f"  latency per frame (this machine): p50 {total['p50']:.1f} ms, p95 {total['p95']:.1f} ms")
    if card:
        print(
            f"  model card, held-out test split: AP {100 * card['ap']:.2f}%, FPR95 {100 * card['fpr95']:.2f}%"
        )
    print(f"  pictures: {metrics['demo']['contact_sheet']}, {args.out}/frame_*_overlay.png, *_heatmap.png")
    return 0
