"""``openset-perception train``: run a training stage from a YAML config."""

from __future__ import annotations

import argparse
import sys

import yaml


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a model from config/train/<name>.yaml",
        description=(
            "Closed-set training, DenseHybrid fine-tuning on mixed-content images (real, procedural or "
            "flow-generated negatives) or MOoSe probe training, as the config's 'stage' says. Writes "
            "<output_dir>/<name>/: last.safetensors and train_state.pt every epoch (also every "
            "save_every_steps steps, and on Ctrl-C/SIGTERM after the current step), validation reports, "
            "TensorBoard logs, and model.safetensors with the calibrated threshold at the end. "
            "Multi-GPU: torchrun --nproc_per_node N $(which openset-perception) train --config ..."
        ),
    )
    parser.add_argument("--config", required=True, help="training config YAML (see config/train/)")
    parser.add_argument("--resume", action="store_true", help="continue from <run dir>/train_state.pt")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set epochs=2 --set optimizer.lr_head=1e-4 (repeatable)",
    )
    parser.set_defaults(func=run)


def parse_overrides(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            from openset_perception.cli.main import UserError

            raise UserError(f"--set expects KEY=VALUE, got '{pair}'")
        overrides[key] = yaml.safe_load(value)
    return overrides


def run(args: argparse.Namespace) -> int:
    from openset_perception.training.config import load_train_config
    from openset_perception.training.trainer import Trainer, TrainingInterrupted

    config = load_train_config(args.config, parse_overrides(args.set))
    try:
        Trainer(config).fit(resume=args.resume)
    except TrainingInterrupted as stopped:
        overrides = [f"--set {pair}" for pair in args.set]
        resume = " ".join(["openset-perception train --config", args.config, *overrides])
        print(f"openset-perception train: {stopped}; continue with: {resume} --resume", file=sys.stderr)
        return 130
    return 0
