"""``--threshold`` and ``--component-track``: the component-level metrics' options of evaluate, eval-bag and
eval-live (imported by those commands; not a subcommand itself)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openset_perception.component_metrics import ComponentOptions


def add_component_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threshold",
        default="best-f1",
        metavar="T",
        help="pixel threshold of the component-level metrics: best-f1 (default, the SegmentMeIfYouCan "
        "protocol: the threshold with the best pixel-level F1 over the data), card (the model card's "
        "calibrated threshold) or a number",
    )
    parser.add_argument(
        "--component-track",
        choices=("anomaly", "obstacle"),
        default="anomaly",
        help="SegmentMeIfYouCan size limits: anomaly (segments under 500 px dropped, instances under "
        "100 px void; default) or obstacle (50 / 10 px)",
    )


def component_options(args: argparse.Namespace, card_threshold: float | None) -> ComponentOptions:
    """The options ``args`` ask for; a bad ``--threshold`` is a one-line user error."""
    from openset_perception.cli.main import UserError
    from openset_perception.component_metrics import parse_component_options

    try:
        return parse_component_options(args.threshold, args.component_track, card_threshold)
    except ValueError as error:
        raise UserError(str(error)) from None
