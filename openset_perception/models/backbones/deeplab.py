"""DeepLabV3+ on a dilated ResNet-50/101 (output stride 16), with MOoSe probe inputs, and NVIDIA's
DeepLabV3+ on a Wide ResNet-38 (output stride 8) as DenseHybrid uses it.
"""

from collections.abc import Callable, Sequence

import torch
import torchvision
from torch import Tensor, nn

from openset_perception.models.backbones.base import DenseFeatures, FeatureNet
from openset_perception.models.backbones.resnet import ResNetEncoder
from openset_perception.models.backbones.wide_resnet import WideResNet38Encoder
from openset_perception.models.blocks import ConvBNReLU, resize_to

ASPP_CHANNELS = 256
ASPP_RATES = (6, 12, 18)
LOW_LEVEL_CHANNELS = 48
DECODER_CHANNELS = 256
# NVIDIA's WRN-38 runs the ASPP at output stride 8, with the rates doubled.
WRN38_ASPP_RATES = (12, 24, 36)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch, atrous 3x3 branches, an image-pooling branch.

    ``nvidia``: the image-pooling branch keeps its batch normalisation and the projection is a plain
    1x1 convolution (NVIDIA's ``img_conv`` and ``bot_aspp``).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int = ASPP_CHANNELS,
        rates: Sequence[int] = ASPP_RATES,
        nvidia: bool = False,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_channels, channels, kernel_size=1)]
            + [ConvBNReLU(in_channels, channels, kernel_size=3, dilation=rate) for rate in rates]
        )
        self.image_pooling = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), ConvBNReLU(in_channels, channels, kernel_size=1, batch_norm=nvidia)
        )
        concatenated = channels * (len(rates) + 2)
        self.projection = (
            nn.Conv2d(concatenated, channels, kernel_size=1, bias=False)
            if nvidia
            else ConvBNReLU(concatenated, channels, kernel_size=1)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        """Return the projected output, the non-pooling branch outputs and the (B, C, 1, 1) pooled branch."""
        branch_outputs = [branch(x) for branch in self.branches]
        pooled = self.image_pooling(x)
        broadcast = pooled.expand(-1, -1, *x.shape[-2:])
        return self.projection(torch.cat([*branch_outputs, broadcast], dim=1)), branch_outputs, pooled


class DeepLabV3Plus(FeatureNet):
    """DeepLabV3+; pre-logits are the 256-channel decoder features at the low-level features' stride.

    MOoSe probe input per non-pooling ASPP branch (all detached, at the low-level size):
    concat(branch output upsampled, image-pooling output broadcast, 48-channel low-level projection).

    ``nvidia``: NVIDIA semantic-segmentation's DeepLabV3+ (DenseHybrid's ``DeepWV3Plus[TH]``): the
    ASPP as above, a plain 1x1 low-level projection, align_corners=True upsampling, and the inlier
    head reading the decoder's input (upsampled context and low-level projection), as their
    ``logits_ood`` does.
    """

    def __init__(
        self,
        encoder: nn.Module,
        low_level_stride: int = 4,
        aspp_rates: Sequence[int] = ASPP_RATES,
        pad_multiple: int = 16,
        nvidia: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        low_level_in, *_, deepest = encoder.stage_channels
        self.aspp = ASPP(deepest, rates=aspp_rates, nvidia=nvidia)
        self.low_level_projection = (
            nn.Conv2d(low_level_in, LOW_LEVEL_CHANNELS, kernel_size=1, bias=False)
            if nvidia
            else ConvBNReLU(low_level_in, LOW_LEVEL_CHANNELS, kernel_size=1)
        )
        self.fusion = nn.Sequential(
            ConvBNReLU(ASPP_CHANNELS + LOW_LEVEL_CHANNELS, DECODER_CHANNELS),
            ConvBNReLU(DECODER_CHANNELS, DECODER_CHANNELS),
        )
        self.prelogit_channels = DECODER_CHANNELS
        probe_in = 2 * ASPP_CHANNELS + LOW_LEVEL_CHANNELS
        self.probe_channels = [probe_in] * len(self.aspp.branches)
        self.output_stride = low_level_stride
        self.pad_multiple = pad_multiple
        self.nvidia = nvidia
        self.align_corners = nvidia
        self.inlier_channels = ASPP_CHANNELS + LOW_LEVEL_CHANNELS if nvidia else None

    def forward(self, x: Tensor, with_probes: bool = True) -> DenseFeatures:
        low_level, _, _, deepest = self.encoder(x)
        context, branch_outputs, pooled = self.aspp(deepest)
        low_level = self.low_level_projection(low_level)
        size = low_level.shape[-2:]
        decoder_input = torch.cat([resize_to(context, size, self.align_corners), low_level], dim=1)
        prelogits = self.fusion(decoder_input)
        probe_features = []
        if with_probes:
            shared = torch.cat([pooled.detach().expand(-1, -1, *size), low_level.detach()], dim=1)
            probe_features = [
                torch.cat([resize_to(branch.detach(), size, self.align_corners), shared], dim=1)
                for branch in branch_outputs
            ]
        return DenseFeatures(prelogits, probe_features, decoder_input if self.nvidia else None)


def _deeplabv3plus(
    resnet_builder: Callable[..., torchvision.models.ResNet], weights: torchvision.models.WeightsEnum | None
) -> DeepLabV3Plus:
    resnet = resnet_builder(weights=weights, replace_stride_with_dilation=[False, False, True])
    return DeepLabV3Plus(ResNetEncoder.from_torchvision(resnet))


def deeplabv3plus_r50(pretrained: bool = False) -> DeepLabV3Plus:
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V1 if pretrained else None
    return _deeplabv3plus(torchvision.models.resnet50, weights)


def deeplabv3plus_r101(pretrained: bool = False) -> DeepLabV3Plus:
    weights = torchvision.models.ResNet101_Weights.IMAGENET1K_V1 if pretrained else None
    return _deeplabv3plus(torchvision.models.resnet101, weights)


def deeplabv3plus_wrn38(pretrained: bool = False) -> DeepLabV3Plus:
    """NVIDIA's DeepLabV3+ on WRN-38 (decoder at stride 2); weights come from ``import-weights`` only."""
    if pretrained:
        raise ValueError(
            "torchvision has no ImageNet weights for WRN-38; import a published checkpoint with "
            "`openset-perception import-weights --format densehybrid-wrn38` instead"
        )
    return DeepLabV3Plus(
        WideResNet38Encoder(), low_level_stride=2, aspp_rates=WRN38_ASPP_RATES, pad_multiple=8, nvidia=True
    )
