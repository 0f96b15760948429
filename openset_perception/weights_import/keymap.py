"""Renaming the authors' state-dict keys to ours by module prefix."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

PrefixRules = Sequence[tuple[str, str]]


def rename_prefixes(state: dict[str, Tensor], rules: PrefixRules) -> dict[str, Tensor]:
    """Each key with the first matching ``(their_prefix, our_prefix)`` rule's prefix replaced.

    Keys no rule matches pass through unchanged, so the strict check afterwards reports them by the
    authors' name as unexpected.
    """
    renamed: dict[str, Tensor] = {}
    for key, value in state.items():
        for theirs, ours in rules:
            if key.startswith(theirs):
                key = ours + key[len(theirs) :]
                break
        renamed[key] = value
    return renamed


def bn_relu_conv_rules(theirs: str, ours: str) -> list[tuple[str, str]]:
    """The authors' ``_BNReluConv`` (children norm, relu, conv) as our ``BNReLUConv`` (0, 1, 2)."""
    return [(f"{theirs}.norm.", f"{ours}.0."), (f"{theirs}.conv.", f"{ours}.2.")]
