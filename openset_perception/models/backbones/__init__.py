"""Dense feature extractors; see docs/ARCHITECTURE.md for the FeatureNet contract."""

from openset_perception.models.backbones.base import DenseFeatures, FeatureNet
from openset_perception.models.backbones.deeplab import (
    DeepLabV3Plus,
    deeplabv3plus_r50,
    deeplabv3plus_r101,
    deeplabv3plus_wrn38,
)
from openset_perception.models.backbones.ladder import LadderNet
from openset_perception.models.backbones.ldn import ldn121, ldn121_reference
from openset_perception.models.backbones.swiftnet import swiftnet_rn18, swiftnet_rn18_reference
from openset_perception.models.backbones.swiftnet_pyramid import swiftnet_rn18_pyramid

__all__ = [
    "DeepLabV3Plus",
    "DenseFeatures",
    "FeatureNet",
    "LadderNet",
    "deeplabv3plus_r50",
    "deeplabv3plus_r101",
    "deeplabv3plus_wrn38",
    "ldn121",
    "ldn121_reference",
    "swiftnet_rn18",
    "swiftnet_rn18_pyramid",
    "swiftnet_rn18_reference",
]
