"""Every subcommand's --help states the default of each option that has one."""

from __future__ import annotations

import argparse

import pytest

from openset_perception.cli.main import build_parser


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_help_states_every_default(command: str) -> None:
    subparser = _subparsers()[command]
    text = " ".join(subparser.format_help().split())
    for action in subparser._actions:
        default = action.default
        nothing = any(default is none for none in (None, False, argparse.SUPPRESS)) or default == []
        if not action.option_strings or nothing:
            continue
        if "default" in (action.help or ""):
            continue  # the option's own help words its default
        shown = ",".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
        assert f"(default: {shown})" in text, f"{command} {action.option_strings[0]}: default not in --help"


def test_defaults_are_added_once() -> None:
    text = " ".join(_subparsers()["make-streets"].format_help().split())
    assert "number of training frames (no anomalies) (default: 200)" in text
    assert "--seed SEED random seed (default: 0)" in text
    calibrate = " ".join(_subparsers()["calibrate"].format_help().split())
    assert "default 0.95 (default:" not in calibrate
