"""Network definitions: backbones and the open-set segmenter."""

from openset_perception.models.backbones import DenseFeatures, FeatureNet
from openset_perception.models.registry import BACKBONE_NAMES, build_backbone
from openset_perception.models.segmenter import (
    ArchitectureSpec,
    OpenSetSegmenter,
    PreactivatedHead,
    SegmenterOutput,
    build_model,
)

__all__ = [
    "BACKBONE_NAMES",
    "ArchitectureSpec",
    "DenseFeatures",
    "FeatureNet",
    "OpenSetSegmenter",
    "PreactivatedHead",
    "SegmenterOutput",
    "build_backbone",
    "build_model",
]
