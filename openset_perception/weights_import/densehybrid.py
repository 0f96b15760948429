"""The DenseHybrid authors' checkpoints (github.com/matejgrcic/DenseHybrid, README "Weights").

LDN-121: ``models/ladder_densenet.py`` ``LadderDenseNet`` (closed-set) and ``LadderDenseNetTH`` (with
the two-channel ``logits_ood`` head), run as our ``ldn121_reference`` backbone; the authors feed
``ToTensor()`` images, plain RGB in [0, 1]. Their ladder modules also hold ``logits_aux`` heads that
the forward pass computes and throws away; the import leaves them out.

WRN-38: ``models/deeplabv3/deeplabv3.py`` ``DeepWV3Plus`` (NVIDIA's Cityscapes model) and
``DeepWV3PlusTH`` (fine-tuned with ``logits_ood``), run as our ``deeplabv3plus_wrn38``. They normalise
inside the network with the ImageNet mean/std; here that is the model card's normalisation. Their
concatenations are ordered differently from ours (ASPP: image pooling first; decoder: low-level
first), so the import permutes the input channels of the layers that read them.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from openset_perception.models.backbones.deeplab import ASPP_CHANNELS, LOW_LEVEL_CHANNELS
from openset_perception.preprocess import Normalization
from openset_perception.weights_import.base import (
    Dataset,
    StateDict,
    WeightFormat,
    fold_two_channel_ood_head,
    register,
)
from openset_perception.weights_import.keymap import bn_relu_conv_rules, rename_prefixes

PUBLISHER = "matejgrcic/DenseHybrid"
PLAIN_RGB = Normalization(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
LDN_UPSAMPLINGS = 3
SPP_LEVELS = 4


def _spp_rules() -> list[tuple[str, str]]:
    rules = bn_relu_conv_rules("spp.spp.spp.spp_bn", "backbone.spp.bottleneck")
    for i in range(SPP_LEVELS):
        rules += bn_relu_conv_rules(f"spp.spp.spp.spp{i}", f"backbone.spp.levels.{i}")
    return rules + bn_relu_conv_rules("spp.spp.spp.spp_fuse", "backbone.spp.fuse")


def _ladder_rules() -> list[tuple[str, str]]:
    rules = []
    for i in range(LDN_UPSAMPLINGS):
        theirs, ours = f"upsample.upsample_layers.upsample_{i}", f"backbone.upsampling.{i}"
        rules += bn_relu_conv_rules(f"{theirs}.bottleneck", f"{ours}.skip_projection")
        rules += bn_relu_conv_rules(f"{theirs}.blend_conv", f"{ours}.blend")
    return rules


LDN_RULES = [
    ("backbone.features.", "backbone.encoder.features."),
    *_spp_rules(),
    *_ladder_rules(),
    *bn_relu_conv_rules("logits", "classifier"),
]
# The ladder modules' ``logits_aux`` heads, which the authors' forward pass computes and throws away.
LDN_UNUSED = tuple(f"upsample.upsample_layers.upsample_{i}.logits_aux." for i in range(LDN_UPSAMPLINGS))
OOD_HEAD = "logits_ood"


def fold_ood_head(state: StateDict, theirs: str) -> StateDict:
    """The authors' ``_BNReluConv`` two-channel head ``theirs`` as our one-channel ``ood_head``."""
    weight, bias = fold_two_channel_ood_head(state[f"{theirs}.conv.weight"], state[f"{theirs}.conv.bias"])
    norm = f"{theirs}.norm."
    head = {f"ood_head.0.{key[len(norm) :]}": value for key, value in state.items() if key.startswith(norm)}
    return head | {"ood_head.2.weight": weight, "ood_head.2.bias": bias}


def map_ldn121(state: StateDict, has_inlier_head: bool) -> StateDict:
    """``LadderDenseNetTH`` (``has_inlier_head``) or ``LadderDenseNet`` -> ``ldn121_reference``.

    Without a head, ``logits_ood`` keys stay under the authors' names, so that a file of the other kind
    is reported as having unexpected keys.
    """
    head_prefix = f"{OOD_HEAD}." if has_inlier_head else None
    kept = {
        key: value
        for key, value in state.items()
        if not key.startswith(LDN_UNUSED) and not (head_prefix and key.startswith(head_prefix))
    }
    mapped = rename_prefixes(kept, LDN_RULES)
    return (mapped | fold_ood_head(state, OOD_HEAD)) if has_inlier_head else mapped


def _ldn121_format(
    name: str, source_file: str, num_classes: int, dataset: Dataset, has_inlier_head: bool
) -> None:
    register(
        WeightFormat(
            name=name,
            publisher=PUBLISHER,
            source_file=source_file,
            backbone="ldn121_reference",
            backbone_kwargs={},
            num_classes=num_classes,
            dataset=dataset,
            normalization=PLAIN_RGB,
            has_inlier_head=has_inlier_head,
            map_state_dict=partial(map_ldn121, has_inlier_head=has_inlier_head),
        )
    )


_ldn121_format(
    "densehybrid-ldn121", "Fine-tuned LDN-121 semseg model (SMIYC submission)", 19, "cityscapes", True
)
_ldn121_format(
    "densehybrid-ldn121-streethazards",
    "Fine-tuned LDN-121 semseg model on StreetHazards",
    12,
    "streethazards",
    True,
)
_ldn121_format(
    "densehybrid-ldn121-streethazards-closed",
    "Trained LDN-121 semseg model on StreetHazards",
    12,
    "streethazards",
    False,
)


NVIDIA_ASPP_BRANCHES = 4  # 1x1 and three atrous branches, after their image-pooling branch
WRN38_RULES = [
    *((f"mod{i}.", f"backbone.encoder.mod{i}.") for i in range(1, 8)),
    *((f"aspp.features.{i}.", f"backbone.aspp.branches.{i}.") for i in range(NVIDIA_ASPP_BRANCHES)),
    ("aspp.img_conv.", "backbone.aspp.image_pooling.1."),
    ("bot_fine.", "backbone.low_level_projection."),
    ("final.0.", "backbone.fusion.0.0."),
    ("final.1.", "backbone.fusion.0.1."),
    ("final.3.", "backbone.fusion.1.0."),
    ("final.4.", "backbone.fusion.1.1."),
    ("final.6.", "classifier."),
]


def _move_first_channels_last(tensor: Tensor, count: int, dim: int) -> Tensor:
    """Their concatenation [first ``count`` channels, rest] as ours [rest, first]."""
    first, rest = torch.split(tensor, [count, tensor.shape[dim] - count], dim=dim)
    return torch.cat([rest, first], dim=dim)


def map_wrn38(state: StateDict, has_inlier_head: bool) -> StateDict:
    """``DeepWV3PlusTH`` (``has_inlier_head``) or ``DeepWV3Plus`` -> ``deeplabv3plus_wrn38``."""
    head_prefix = f"{OOD_HEAD}." if has_inlier_head else None
    kept = {k: v for k, v in state.items() if not (head_prefix and k.startswith(head_prefix))}
    mapped = rename_prefixes(kept, WRN38_RULES)
    # ASPP output [image pooling, branches...] and decoder input [low level, context] reordered.
    mapped["backbone.aspp.projection.weight"] = _move_first_channels_last(
        state["bot_aspp.weight"], ASPP_CHANNELS, dim=1
    )
    del mapped["bot_aspp.weight"]
    mapped["backbone.fusion.0.0.weight"] = _move_first_channels_last(
        state["final.0.weight"], LOW_LEVEL_CHANNELS, dim=1
    )
    # Their classifier convolution has no bias; ours is zero.
    mapped["classifier.bias"] = torch.zeros(state["final.6.weight"].shape[0])
    if not has_inlier_head:
        return mapped
    # Their head reads the decoder input too: reorder its normalisation and weights the same way.
    head = {
        key: _move_first_channels_last(value, LOW_LEVEL_CHANNELS, dim=0 if ".norm." in key else 1)
        if value.dim() > 0 and not key.endswith("conv.bias")
        else value
        for key, value in state.items()
        if key.startswith(head_prefix)
    }
    return mapped | fold_ood_head(head, OOD_HEAD)


def _wrn38_format(name: str, source_file: str, has_inlier_head: bool) -> None:
    register(
        WeightFormat(
            name=name,
            publisher=PUBLISHER,
            source_file=source_file,
            backbone="deeplabv3plus_wrn38",
            backbone_kwargs={},
            num_classes=19,
            dataset="cityscapes",
            normalization=Normalization(),  # ImageNet mean/std, on the [0, 1] scale
            has_inlier_head=has_inlier_head,
            map_state_dict=partial(map_wrn38, has_inlier_head=has_inlier_head),
        )
    )


_wrn38_format("densehybrid-wrn38", "Fine-tuned DeepLabV3+ (for Fishyscapes)", True)
_wrn38_format("densehybrid-wrn38-closed", "DeepLabV3+ trained on Cityscapes by NVIDIA", False)
