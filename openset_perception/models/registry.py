"""Backbone name -> builder."""

from collections.abc import Callable
from typing import Any

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
