"""Ladder-style DenseNet-121 (LDN-121).

The stride 4/8/16 skips are the outputs of the transition layers' 1x1 convolutions, taken before
their average pooling (128/256/512 channels): already compressed, so the skip projections stay cheap.
"""

import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from openset_perception.models.backbones.ladder import LadderNet

DENSENET121_SKIP_CHANNELS = (128, 256, 512, 1024)
LDN_DECODER_CHANNELS = 128


class DenseNetEncoder(nn.Module):
    """torchvision DenseNet ``features`` returning the stride 4, 8, 16 skips and the stride-32 output."""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: Tensor) -> list[Tensor]:
        f = self.features
        x = f.pool0(f.relu0(f.norm0(f.conv0(x))))
        outputs = []
        for block, transition in (
            (f.denseblock1, f.transition1),
            (f.denseblock2, f.transition2),
            (f.denseblock3, f.transition3),
        ):
            x = transition.conv(transition.relu(transition.norm(block(x))))
            outputs.append(x)
            x = transition.pool(x)
        # torchvision applies this ReLU outside ``features``.
        outputs.append(F.relu(f.norm5(f.denseblock4(x))))
        return outputs


def ldn121(pretrained: bool = False, decoder_channels: int = LDN_DECODER_CHANNELS) -> LadderNet:
    weights = torchvision.models.DenseNet121_Weights.IMAGENET1K_V1 if pretrained else None
    densenet = torchvision.models.densenet121(weights=weights)
    return LadderNet(DenseNetEncoder(densenet.features), DENSENET121_SKIP_CHANNELS, decoder_channels)
