"""ResNet encoders returning the outputs of all four residual stages."""

from collections.abc import Sequence

import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

RESNET18_STAGE_CHANNELS = (64, 128, 256, 512)


def _last_batch_norm_channels(stage: nn.Module) -> int:
    norms = [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
    return norms[-1].num_features


class ResNetEncoder(nn.Module):
    """Stem and four stages; parameter names match torchvision's ResNet without ``fc``."""

    def __init__(self, stem_conv: nn.Conv2d, stem_bn: nn.BatchNorm2d, stages: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(stages) != 4:
            raise ValueError(f"a ResNet encoder has 4 stages, got {len(stages)}")
        self.conv1 = stem_conv
        self.bn1 = stem_bn
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.stage_channels = [_last_batch_norm_channels(stage) for stage in stages]

    @classmethod
    def from_torchvision(cls, resnet: torchvision.models.ResNet) -> "ResNetEncoder":
        return cls(resnet.conv1, resnet.bn1, [resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4])

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        stage_outputs = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            stage_outputs.append(x)
        return stage_outputs


def _basic_stage(in_channels: int, out_channels: int, stride: int, blocks: int = 2) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )
    layers = [BasicBlock(in_channels, out_channels, stride, downsample)]
    layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def scaled_channels(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def resnet18_encoder(width: float = 1.0) -> ResNetEncoder:
    """ResNet-18 topology with every channel count scaled by ``width``, initialised like torchvision's."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    channels = [scaled_channels(c, width) for c in RESNET18_STAGE_CHANNELS]
    stem_conv = nn.Conv2d(3, channels[0], kernel_size=7, stride=2, padding=3, bias=False)
    stages = []
    in_channels = channels[0]
    for index, out_channels in enumerate(channels):
        stages.append(_basic_stage(in_channels, out_channels, stride=1 if index == 0 else 2))
        in_channels = out_channels
    encoder = ResNetEncoder(stem_conv, nn.BatchNorm2d(channels[0]), stages)
    for module in encoder.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return encoder
