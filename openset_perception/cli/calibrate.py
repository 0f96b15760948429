"""``openset-perception calibrate``: store the open-set threshold at a target TPR in a checkpoint."""

from __future__ import annotations

import argparse

from openset_perception.cli.evaluate import add_input_arguments, open_inputs


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="choose the open-set threshold on held-out data and write it into a checkpoint",
        description="Run the checkpoint over a calibration dataset with anomaly labels (an anomaly mask "
        "or semantic label K), pick the anomaly-score threshold at which at least --tpr of the anomaly "
        "pixels are flagged (the first operating point by descending score with TPR >= --tpr), and write "
        "a copy of the checkpoint whose model card holds the threshold, the target TPR and the "
        "calibration metrics. Pixels with score >= threshold are then labelled unknown.",
    )
    add_input_arguments(parser)
    parser.add_argument(
        "--tpr", type=float, default=0.95, help="share of anomaly pixels to flag, in (0, 1]; default 0.95"
    )
    parser.add_argument(
        "--out",
        required=True,
        help="calibrated checkpoint to write (may equal --checkpoint to update it in place, atomically)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from openset_perception.cli.main import UserError
    from openset_perception.evaluation.calibrate import (
        CalibrationError,
        calibrate_threshold,
        write_calibrated_checkpoint,
    )

    if not 0.0 < args.tpr <= 1.0:
        raise UserError(f"--tpr must be in (0, 1], got {args.tpr}")
    segmenter, dataset = open_inputs(args)
    try:
        threshold, metrics = calibrate_threshold(
            segmenter,
            dataset,
            tpr=args.tpr,
            max_frames=args.frames,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
    except CalibrationError as error:
        raise UserError(str(error)) from error
    data = {
        "dataset": args.dataset,
        "root": str(args.root),
        "split": args.split,
        "frames": args.frames,
    }
    write_calibrated_checkpoint(
        args.checkpoint,
        args.out,
        threshold,
        args.tpr,
        metrics,
        score_method=segmenter.score_method,
        data={k: v for k, v in data.items() if v is not None},
    )
    print(
        f"threshold {threshold:.6g} ({segmenter.score_method}): TPR {100 * metrics['tpr']:.2f}%, "
        f"FPR {100 * metrics['fpr']:.2f}% on {metrics['frames']} frames; wrote {args.out}"
    )
    return 0
