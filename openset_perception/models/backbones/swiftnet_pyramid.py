"""Pyramidal SwiftNet-RN18 (the SwiftNet authors' ``resnet_pyramid``): one ResNet-18 over an image pyramid.

The encoder runs on the image at scales 1, 1/2 and 1/4 (bicubic) with shared convolutions and one set
of batch-normalisation statistics per scale (the downsampling shortcuts share theirs). Every stage
output, taken before its last ReLU, gets a 1x1 projection to 128 channels; projections with the same
effective stride (stage j at scale 1/2^l has stride 4 * 2^(j + l)) are summed, giving six levels from
stride 4 to 128, which five BN-ReLU-Conv3x3 blends fuse coarse to fine.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from openset_perception.models.backbones.base import DenseFeatures, FeatureNet
from openset_perception.models.backbones.resnet import RESNET18_STAGE_CHANNELS
from openset_perception.models.blocks import BNReLUConv, resize_to

PYRAMID_LEVELS = 3
DECODER_CHANNELS = 128
STEM_CHANNELS = 64


def _init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class ScaleBasicBlock(nn.Module):
    """ResNet basic block whose two batch normalisations are chosen by the pyramid scale."""

    def __init__(self, in_channels: int, channels: int, stride: int, levels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(levels))
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(levels))
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: Tensor, level: int) -> Tensor:
        """The block's output before its final ReLU."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2[level](self.conv2(F.relu(self.bn1[level](self.conv1(x)))))
        return out + identity


class PyramidResNet18(nn.Module):
    """ResNet-18 trunk applied per pyramid scale; ``forward(x, level)`` -> the four pre-ReLU stage outputs."""

    def __init__(self, levels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.ModuleList(nn.BatchNorm2d(STEM_CHANNELS) for _ in range(levels))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = STEM_CHANNELS
        for index, channels in enumerate(RESNET18_STAGE_CHANNELS):
            stride = 1 if index == 0 else 2
            blocks = [ScaleBasicBlock(in_channels, channels, stride, levels)]
            blocks.append(ScaleBasicBlock(channels, channels, 1, levels))
            stage = nn.ModuleList(blocks)
            setattr(self, f"layer{index + 1}", stage)
            in_channels = channels
        self.stage_channels = list(RESNET18_STAGE_CHANNELS)
        _init_convs(self)

    def forward(self, x: Tensor, level: int) -> list[Tensor]:
        x = self.maxpool(F.relu(self.bn1[level](self.conv1(x))))
        outputs = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                out = block(x, level)
                x = F.relu(out)
            outputs.append(out)
        return outputs


class SwiftNetPyramid(FeatureNet):
    """Pyramidal SwiftNet (output stride 4, 128 pre-logit channels, BN-ReLU-Conv1x1 classifier)."""

    classifier_preactivation = True

    def __init__(self, levels: int = PYRAMID_LEVELS, channels: int = DECODER_CHANNELS) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"pyramid levels must be at least 1, got {levels}")
        self.levels = levels
        self.encoder = PyramidResNet18(levels)
        # Coarse to fine, as in the authors' ``upsample_bottlenecks``: stages 4, 3, 2, 1.
        self.skip_projections = nn.ModuleList(
            nn.Conv2d(c, channels, kernel_size=1, bias=False) for c in reversed(self.encoder.stage_channels)
        )
        self.num_strides = len(self.encoder.stage_channels) + levels - 1
        self.blends = nn.ModuleList(
            BNReLUConv(channels, channels, kernel_size=3) for _ in range(self.num_strides - 1)
        )
        _init_convs(self.skip_projections)
        _init_convs(self.blends)
        self.prelogit_channels = channels
        self.probe_channels = []
        self.output_stride = 4
        # Every scale's stride-32 map then has an exact size, so the summed levels align.
        self.pad_multiple = 32 * 2 ** (levels - 1)

    def forward(self, x: Tensor, with_probes: bool = True) -> DenseFeatures:
        # by_stride[s]: projections of effective stride 4 * 2^s, summed over scales in the authors' order.
        by_stride: list[Tensor | None] = [None] * self.num_strides
        for level in range(self.levels):
            image = x if level == 0 else F.interpolate(x, scale_factor=0.5**level, mode="bicubic")
            stages = self.encoder(image, level)
            projections = reversed(self.skip_projections)
            for stage, (features, projection) in enumerate(zip(stages, projections, strict=True)):
                projected = projection(features)
                stride = stage + level
                current = by_stride[stride]
                if current is None:
                    by_stride[stride] = projected
                else:  # sizes differ only for inputs that are not a multiple of pad_multiple
                    by_stride[stride] = current + resize_to(projected, current.shape[-2:])
        x = by_stride[-1]
        for skip, blend in zip(reversed(by_stride[:-1]), self.blends, strict=True):
            x = blend(resize_to(x, skip.shape[-2:]) + skip)
        return DenseFeatures(x, [])


def swiftnet_rn18_pyramid(pretrained: bool = False, levels: int = PYRAMID_LEVELS) -> SwiftNetPyramid:
    """The SwiftNet authors' pyramidal RN18 (rn18_pyramid); weights come only from ``import-weights``."""
    if pretrained:
        raise ValueError("swiftnet_rn18_pyramid has no ImageNet weights here; import the authors' checkpoint")
    return SwiftNetPyramid(levels)
