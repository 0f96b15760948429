"""The SwiftNet authors' Cityscapes checkpoints (github:orsic/swiftnet): ``SemsegModel`` over ResNet-18.

Both are closed-set (no out-of-distribution head). Their input normalisation lives in the state dict
as the buffers ``backbone.img_mean`` / ``backbone.img_std`` on the 0-255 scale; it goes into the model
card (``preprocess.normalize`` applies it), not into the network.
"""

from __future__ import annotations

from openset_perception.preprocess import Normalization
from openset_perception.weights_import.base import StateDict, WeightFormat, WeightImportError, register
from openset_perception.weights_import.keymap import bn_relu_conv_rules, rename_prefixes

PUBLISHER = "orsic/swiftnet"
NORMALIZATION_BUFFERS = ("backbone.img_mean", "backbone.img_std")
# configs/rn18_single_scale.py and rn18_pyramid.py (0-255 scale); the files' buffers take precedence.
CONFIG_MEAN = (73.15, 82.90, 72.3)
CONFIG_STD = (47.67, 48.49, 47.73)
SPP_LEVELS = 3
PYRAMID_BLENDS = 5  # 3 scales x 4 stages give 6 strides (4 to 128), fused by 5 blends


def normalization_from_buffers(state: StateDict) -> Normalization:
    """The trained input normalisation, converted from the 0-255 scale to ours (0-1)."""
    missing = [name for name in NORMALIZATION_BUFFERS if name not in state]
    if missing:
        raise WeightImportError(f"not a SwiftNet state dict: the normalisation buffers {missing} are missing")
    mean, std = (state[name].flatten().tolist() for name in NORMALIZATION_BUFFERS)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise WeightImportError(f"SwiftNet normalisation buffers must hold 3 values (std > 0): {mean}, {std}")
    return Normalization(mean=tuple(m / 255.0 for m in mean), std=tuple(s / 255.0 for s in std))


def _without_normalization(state: StateDict) -> StateDict:
    return {key: value for key, value in state.items() if key not in NORMALIZATION_BUFFERS}


def map_single_scale(state: StateDict) -> StateDict:
    rules = bn_relu_conv_rules("backbone.spp.spp.spp_bn", "backbone.spp.bottleneck")
    for level in range(SPP_LEVELS):
        rules += bn_relu_conv_rules(f"backbone.spp.spp.spp{level}", f"backbone.spp.levels.{level}")
    rules += bn_relu_conv_rules("backbone.spp.spp.spp_fuse", "backbone.spp.fuse")
    for index in range(3):
        theirs, ours = f"backbone.upsample.{index}", f"backbone.upsampling.{index}"
        rules += bn_relu_conv_rules(f"{theirs}.bottleneck", f"{ours}.skip_projection")
        rules += bn_relu_conv_rules(f"{theirs}.blend_conv", f"{ours}.blend")
    rules += bn_relu_conv_rules("logits", "classifier")
    rules.append(("backbone.", "backbone.encoder."))
    return rename_prefixes(_without_normalization(state), rules)


def map_pyramid(state: StateDict) -> StateDict:
    rules = [("backbone.upsample_bottlenecks.", "backbone.skip_projections.")]
    for index in range(PYRAMID_BLENDS):
        theirs = f"backbone.upsample_blends.{index}.blend_conv"
        rules += bn_relu_conv_rules(theirs, f"backbone.blends.{index}")
    rules += bn_relu_conv_rules("logits", "classifier")
    rules.append(("backbone.", "backbone.encoder."))
    return rename_prefixes(_without_normalization(state), rules)


SINGLE_SCALE = register(
    WeightFormat(
        name="swiftnet-rn18",
        publisher=PUBLISHER,
        source_file="rn18_single_scale/model_best.pt",
        backbone="swiftnet_rn18_reference",
        backbone_kwargs={},
        num_classes=19,
        dataset="cityscapes",
        normalization=Normalization(
            mean=tuple(m / 255.0 for m in CONFIG_MEAN), std=tuple(s / 255.0 for s in CONFIG_STD)
        ),
        has_inlier_head=False,
        map_state_dict=map_single_scale,
        read_normalization=normalization_from_buffers,
        description="SwiftNet RN18 single scale, Cityscapes (orsic/swiftnet rn18_single_scale); closed-set",
    )
)
PYRAMID = register(
    WeightFormat(
        name="swiftnet-rn18-pyramid",
        publisher=PUBLISHER,
        source_file="rn18_pyramid/model_best.pt",
        backbone="swiftnet_rn18_pyramid",
        backbone_kwargs={},
        num_classes=19,
        dataset="cityscapes",
        normalization=SINGLE_SCALE.normalization,
        has_inlier_head=False,
        map_state_dict=map_pyramid,
        read_normalization=normalization_from_buffers,
        description="SwiftNet RN18 pyramid (3 scales), Cityscapes (orsic/swiftnet rn18_pyramid); closed-set",
    )
)
