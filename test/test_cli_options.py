"""Shared command-line options: one spelling, with the old ones as warning aliases."""

from __future__ import annotations

import argparse

import pytest

from openset_perception.cli.options import add_deprecated_alias, add_size_argument, parse_size


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_size_argument(parser, (256, 512), "frame size")
    parser.add_argument("--batch-size", type=int, default=1)
    add_deprecated_alias(parser, "--batch", "--batch-size", type=int)
    parser.add_argument("--print-json", action="store_true")
    add_deprecated_alias(parser, "--json", "--print-json", nargs=0)
    return parser


def test_size_is_height_by_width() -> None:
    assert _parser().parse_args(["--size", "64x128"]).size == (64, 128)
    assert _parser().parse_args([]).size == (256, 512)
    assert parse_size(" 1024x2048 ") == (1024, 2048)
    with pytest.raises(SystemExit):
        _parser().parse_args(["--size", "64"])


def test_old_height_and_width_set_one_side_each_and_warn(capsys: pytest.CaptureFixture) -> None:
    assert _parser().parse_args(["--height", "96"]).size == (96, 512)
    assert _parser().parse_args(["--width", "96", "--height", "48"]).size == (48, 96)
    err = capsys.readouterr().err
    assert "--height is deprecated; use --size HEIGHTxWIDTH" in err
    assert "--width is deprecated" in err


def test_deprecated_alias_stores_into_the_new_option(capsys: pytest.CaptureFixture) -> None:
    args = _parser().parse_args(["--batch", "4", "--json"])
    assert (args.batch_size, args.print_json) == (4, True)
    assert "--batch is deprecated; use --batch-size" in capsys.readouterr().err


def test_aliases_are_hidden_from_help() -> None:
    text = _parser().format_help()
    assert "--size HxW" in text
    assert "--height" not in text and "--batch " not in text
