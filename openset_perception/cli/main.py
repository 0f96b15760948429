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

from openset_perception import __version__

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


# The engine's PRECISIONS, spelt out so that building the parser does not import torch.
PRECISION_CHOICES = ("fp32", "fp16", "bf16")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--precision``, as every command that runs the engine takes them."""
    parser.add_argument(
        "--device", default="auto", help="torch device: auto (CUDA when available), cpu, cuda, cuda:1, ..."
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISION_CHOICES,
        help="inference precision (fp16 falls back to fp32 on the CPU, as in the engine); default fp32",
    )


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
    return parser


def _user_error_types() -> tuple[type[BaseException], ...]:
    from openset_perception.checkpoint import CheckpointError
    from openset_perception.config import ConfigError

    return (UserError, FileNotFoundError, NotADirectoryError, CheckpointError, ConfigError)


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
