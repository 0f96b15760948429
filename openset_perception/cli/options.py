"""Options that several subcommands share, spelt and parsed one way everywhere.

Renamed options keep working under their old names as hidden, deprecated aliases: they store into
the new option and warn once, naming the new spelling.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)$")


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' -> (H, W); an argparse type."""
    match = SIZE_PATTERN.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 1024x2048, got '{text}'")
    return int(match.group(1)), int(match.group(2))


def warn_deprecated(old: str, new: str) -> None:
    print(f"openset-perception: {old} is deprecated; use {new}", file=sys.stderr)


class DeprecatedAlias(argparse.Action):
    """An old option name: stores its value into the new option's ``dest`` and warns."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str, **kwargs: object) -> None:
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        warn_deprecated(str(option_string), self.new)
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


class _SizeComponent(argparse.Action):
    """``--height`` / ``--width``: set one side of ``--size`` (deprecated spellings)."""

    def __init__(self, option_strings: Sequence[str], dest: str, index: int, **kwargs: object) -> None:
        self.index = index
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        warn_deprecated(str(option_string), "--size HEIGHTxWIDTH")
        size = list(getattr(namespace, self.dest))
        size[self.index] = values
        setattr(namespace, self.dest, tuple(size))


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str, **kwargs: object) -> None:
    """Keep ``old`` working as a hidden alias of the option ``new`` (same type, same destination)."""
    dest = new.lstrip("-").replace("-", "_")
    parser.add_argument(old, dest=dest, action=DeprecatedAlias, new=new, **kwargs)  # type: ignore[arg-type]


def add_size_argument(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    default: tuple[int, int],
    what: str,
    old_spellings: bool = True,
) -> None:
    """``--size HxW`` (``what`` it sizes); ``old_spellings`` keeps ``--height`` / ``--width`` as
    deprecated aliases (for the commands that had them)."""
    parser.add_argument(
        "--size",
        type=parse_size,
        default=default,
        metavar="HxW",
        help=f"{what}, HEIGHTxWIDTH in pixels (default: {default[0]}x{default[1]})",
    )
    for index, name in enumerate(("--height", "--width") if old_spellings else ()):
        parser.add_argument(name, dest="size", type=int, action=_SizeComponent, index=index)  # type: ignore[arg-type]
