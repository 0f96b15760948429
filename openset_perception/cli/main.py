"""Entry point of ``openset-perception``; every subcommand lives in its own module.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func=run`` on it. Expected user errors (missing files, bad configs, bad checkpoints) end as one
clear line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import TYPE_CHECKING

from openset_perception import __version__

if TYPE_CHECKING:
    from openset_perception.engine import Segmenter

SUBCOMMANDS = (
    "demo",
    "train",
    "evaluate",
    "calibrate",
    "make_streets",
    "make_bag",
    "eval_bag",
    "eval_live",
    "sample_negatives",
    "benchmark",
    "export_onnx",
    "import_weights",
    "info",
)


class UserError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""


# The engine's PRECISIONS, RUNTIMES and EXECUTION_PROVIDERS, spelt out so that building the parser
# does not import torch.
PRECISION_CHOICES = ("fp32", "fp16", "bf16")
RUNTIME_CHOICES = ("torch", "onnxruntime")
PROVIDER_CHOICES = ("auto", "tensorrt", "cuda", "cpu")


def parse_runtimes(text: str) -> list[str]:
    """'torch,onnxruntime' -> ['torch', 'onnxruntime']; an argparse type."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in RUNTIME_CHOICES]
    if unknown or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"expected distinct runtimes from {', '.join(RUNTIME_CHOICES)} separated by commas, got '{text}'"
        )
    return names


def add_engine_arguments(parser: argparse.ArgumentParser, several_runtimes: bool = False) -> None:
    """``--device``, ``--precision``, ``--runtime`` and ``--execution-provider``, as every command that
    runs the engine takes them; ``several_runtimes``: ``--runtime`` takes a comma-separated list."""
    parser.add_argument(
        "--device", default="auto", help="torch device: auto (CUDA when available), cpu, cuda, cuda:1, ..."
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISION_CHOICES,
        help="inference precision (fp16 falls back to fp32 on the CPU, as in the engine); default fp32",
    )
    runtime_help = "network runtime: torch or onnxruntime (needs the onnxruntime package); default torch"
    if several_runtimes:
        parser.add_argument(
            "--runtime",
            type=parse_runtimes,
            default=["torch"],
            help="runtimes to time, comma-separated, interleaved in one run (e.g. torch,onnxruntime); "
            "default torch",
        )
    else:
        parser.add_argument("--runtime", default="torch", choices=RUNTIME_CHOICES, help=runtime_help)
    parser.add_argument(
        "--execution-provider",
        default="auto",
        choices=PROVIDER_CHOICES,
        help="onnxruntime execution provider; auto: TensorRT, CUDA, CPU as available on a CUDA device, "
        "the CPU on the CPU; default auto",
    )


def segmenter_from_arguments(args: argparse.Namespace) -> Segmenter:
    """The engine for ``args.checkpoint`` with the options ``add_engine_arguments`` added and, when
    given, ``args.score_method`` (one the model cannot compute is a ``UserError``)."""
    from openset_perception.engine import Segmenter

    segmenter = Segmenter.from_checkpoint(
        args.checkpoint,
        device=args.device,
        precision=args.precision,
        runtime=args.runtime,
        execution_provider=args.execution_provider,
    )
    if getattr(args, "score_method", None):
        try:
            segmenter.score_method = args.score_method
        except ValueError as error:
            raise UserError(str(error)) from error
    return segmenter


def add_metric_arguments(parser: argparse.ArgumentParser, grows_with: str) -> None:
    """How anomaly metrics are accumulated and which protocols run, for evaluate / eval-bag / eval-live."""
    accuracy = parser.add_mutually_exclusive_group()
    accuracy.add_argument(
        "--exact",
        action="store_true",
        help="exact anomaly metrics from every labelled pixel (4 bytes a pixel, memory grows with "
        f"{grows_with}); default: constant-memory histograms on the observed score range, within 0.01 "
        "points of exact",
    )
    accuracy.add_argument(
        "--smiyc-compatible",
        action="store_true",
        help="quantise like the SegmentMeIfYouCan evaluator (float16 scores, 768 quantile bins per frame) "
        "to predict its leaderboard numbers",
    )
    parser.add_argument(
        "--protocol",
        choices=("pooled", "per-image"),
        default="pooled",
        help="pooled: anomaly metrics over all pixels (SMIYC, Fishyscapes); per-image: each frame's metrics "
        "averaged over frames with both classes (DenseHybrid on StreetHazards); default pooled",
    )
    parser.add_argument(
        "--two-fold",
        action="store_true",
        help="also the two-fold open-mIoU: frames alternate between two folds, each fold's TPR-95 threshold "
        "is applied to the other and the results averaged (frames wait on disk, 6 bytes a pixel)",
    )


def accumulator_mode(args: argparse.Namespace) -> str:
    """The metric accumulator mode that ``add_metric_arguments``' options select."""
    return "smiyc" if args.smiyc_compatible else "exact" if args.exact else "binned"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that states each option's default, unless the help already does or there is none to state."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or any(default is nothing for nothing in (None, False, argparse.SUPPRESS))
            or isinstance(action, argparse._HelpAction | argparse._VersionAction)
            or not (action.option_strings or action.nargs in ("?", "*"))
        ):
            return text
        if default == []:
            return text
        shown = ",".join(map(str, default)) if isinstance(default, list | tuple) else default
        return f"{text} (default: {shown})".lstrip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openset-perception",
        description="Dense open-set semantic segmentation (DenseHybrid): known classes plus unknown objects.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"openset_perception.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"openset_perception.cli.{name}":
                raise
            continue
        module.register(subparsers)
    for subparser in subparsers.choices.values():
        subparser.formatter_class = DefaultsHelpFormatter
    return parser


def _user_error_types() -> tuple[type[BaseException], ...]:
    from openset_perception.checkpoint import CheckpointError
    from openset_perception.config import ConfigError
    from openset_perception.onnx_runtime import RuntimeDependencyError

    return (
        UserError,
        FileNotFoundError,
        NotADirectoryError,
        CheckpointError,
        ConfigError,
        RuntimeDependencyError,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except _user_error_types() as error:
        if args.verbose:
            raise
        print(f"openset-perception {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"openset-perception {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
