"""``openset-perception export-onnx``: the network with its anomaly-score head as an ONNX model."""

from __future__ import annotations

import argparse
import logging

from openset_perception.cli.options import add_size_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-onnx",
        help="export a checkpoint (network + anomaly score) to ONNX for deployment runtimes",
        description="Export the engine's dense path (normalisation, padding, network, anomaly score, "
        "argmax) to ONNX: input 'images' (B,3,H,W) uint8 RGB, outputs 'semantic' (B,H,W) uint8 (or "
        "'logits' with --logits) and 'anomaly_score' (B,H,W) float32 (higher = more anomalous; "
        "unknown where score >= the card's threshold). The model card is stored in the ONNX metadata. "
        "H and W are fixed at export (the pyramid pooling grid follows the aspect ratio). Needs the "
        "onnx and onnxscript packages; --verify needs onnxruntime.",
    )
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors)")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    add_size_argument(parser, (1024, 2048), "input size", old_spellings=False)
    parser.add_argument("--dynamic", action="store_true", help="dynamic batch size (1 to 64 frames)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset, at least 18; default 18")
    parser.add_argument("--logits", action="store_true", help="output the logits instead of the labels")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="compare onnxruntime's outputs with PyTorch's on random frames; exit 1 if they differ",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from openset_perception.cli.main import UserError
    from openset_perception.engine import Segmenter
    from openset_perception.onnx_export import OnnxDependencyError, export_onnx, verify_onnx

    if not args.verbose:
        # The exporter's graph passes log every rewrite at INFO level.
        for name in ("onnx_ir", "onnxscript", "torch.onnx"):
            logging.getLogger(name).setLevel(logging.WARNING)
    height, width = args.size
    if min(height, width) < 32:
        raise UserError(f"--size must be at least 32x32, got {height}x{width}")
    segmenter = Segmenter.from_checkpoint(args.checkpoint, device="cpu", precision="fp32")
    try:
        path = export_onnx(
            segmenter,
            args.out,
            height,
            width,
            dynamic_batch=args.dynamic,
            opset=args.opset,
            output_logits=args.logits,
        )
        print(f"wrote {path}")
        if not args.verify:
            return 0
        frames = np.random.default_rng(0).integers(0, 256, (2 if args.dynamic else 1, height, width, 3))
        report = verify_onnx(path, segmenter, frames.astype(np.uint8))
    except (OnnxDependencyError, ValueError) as error:
        raise UserError(str(error)) from error
    labels = (
        f"label agreement {100 * report.label_agreement:.3f} %"
        if report.label_agreement is not None
        else f"max |logit diff| {report.max_logit_abs_diff:.2e}"
    )
    verdict = "matches" if report.passed else "DOES NOT match"
    print(f"onnxruntime {verdict} PyTorch: max |score diff| {report.max_score_abs_diff:.2e}, {labels}")
    return 0 if report.passed else 1
