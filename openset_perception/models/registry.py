"""Backbone name -> builder."""

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

import torch
from pydantic import ConfigDict, TypeAdapter, ValidationError

from openset_perception.models.backbones import (
    FeatureNet,
    deeplabv3plus_r50,
    deeplabv3plus_r101,
    deeplabv3plus_wrn38,
    ldn121,
    ldn121_reference,
    swiftnet_rn18,
    swiftnet_rn18_pyramid,
    swiftnet_rn18_reference,
)

_BUILDERS: dict[str, Callable[..., FeatureNet]] = {
    "swiftnet_rn18": swiftnet_rn18,
    "swiftnet_rn18_reference": swiftnet_rn18_reference,
    "swiftnet_rn18_pyramid": swiftnet_rn18_pyramid,
    "ldn121": ldn121,
    "ldn121_reference": ldn121_reference,
    "deeplabv3plus_r50": deeplabv3plus_r50,
    "deeplabv3plus_r101": deeplabv3plus_r101,
    "deeplabv3plus_wrn38": deeplabv3plus_wrn38,
}
BACKBONE_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def check_backbone_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONE_NAMES)}")


def build_backbone(name: str, pretrained: bool = False, **kwargs: Any) -> FeatureNet:
    """Build a backbone by name; ``pretrained=True`` loads torchvision ImageNet weights (downloads them)."""
    check_backbone_name(name)
    return _BUILDERS[name](pretrained=pretrained, **kwargs)


def check_backbone_kwargs(name: str, kwargs: Mapping[str, Any]) -> int:
    """Raise ValueError naming the key when ``kwargs`` do not fit backbone ``name``'s builder; return
    the number of parameters the backbone would have (for callers that bound its size).

    Keys must be parameters of the builder (``pretrained`` aside), values must have the annotated
    types exactly (no bool for an int, no string for a number), and the builder's own range checks
    must pass; it runs on the meta device, so nothing is allocated however large the widths.
    """
    check_backbone_name(name)
    builder = _BUILDERS[name]
    options = [option for option in inspect.signature(builder).parameters if option != "pretrained"]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        valid = ", ".join(options) or "none"
        raise ValueError(f"backbone '{name}' has no option {', '.join(map(repr, unknown))}; options: {valid}")
    hints = typing.get_type_hints(builder)
    strict = ConfigDict(strict=True)
    for key, value in kwargs.items():
        try:
            TypeAdapter(hints.get(key, Any), config=strict).validate_python(value)
        except ValidationError as error:
            raise ValueError(f"{key}: {error.errors()[0]['msg']} (got {value!r})") from None
    try:
        with torch.device("meta"):
            backbone = builder(**kwargs)
    except (ValueError, TypeError, RuntimeError) as error:
        raise ValueError(f"backbone '{name}' rejects {dict(kwargs)}: {error}") from None
    return sum(parameter.numel() for parameter in backbone.parameters())
