"""Ladder-style DenseNet-121 (LDN-121): ours and the LDN / DenseHybrid authors' reference.

``ldn121``: the stride 4/8/16 skips are the outputs of the transition layers' 1x1 convolutions, taken
before their average pooling (128/256/512 channels): already compressed, so the skip projections stay
cheap; Conv-BN-ReLU decoder.

``ldn121_reference``: the authors' network (DenseHybrid ``models/ladder_densenet.py``), so that their
published checkpoints run unchanged: a 2x2 max-pool stem, 3x3/stride-2 average-pool transitions that
ignore the padding, skips taken from the dense blocks before the transitions (256/512/1024 channels),
no final norm, and a BN-ReLU-Conv decoder (SPP 512 with levels of 128, upsamplings 256/256/128).
"""

import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from openset_perception.models.backbones.ladder import LadderNet

DENSENET121_SKIP_CHANNELS = (128, 256, 512, 1024)
LDN_DECODER_CHANNELS = 128
DENSENET121_BLOCK_CHANNELS = (256, 512, 1024, 1024)
REFERENCE_SPP_CHANNELS = 512
REFERENCE_UPSAMPLE_CHANNELS = (256, 256, 128)


class DenseNetEncoder(nn.Module):
    """torchvision DenseNet ``features`` returning the stride 4, 8, 16 skips and the stride-32 output.

    ``raw_outputs``: hand over the dense blocks' outputs as they are (skips before the transitions,
    the last block without ``norm5``), for a decoder whose units start with BN-ReLU.
    """

    def __init__(self, features: nn.Sequential, raw_outputs: bool = False) -> None:
        super().__init__()
        self.features = features
        self.raw_outputs = raw_outputs

    def forward(self, x: Tensor) -> list[Tensor]:
        f = self.features
        x = f.pool0(f.relu0(f.norm0(f.conv0(x))))
        outputs = []
        for block, transition in (
            (f.denseblock1, f.transition1),
            (f.denseblock2, f.transition2),
            (f.denseblock3, f.transition3),
        ):
            x = block(x)
            if self.raw_outputs:
                outputs.append(x)
                x = transition(x)
            else:
                x = transition.conv(transition.relu(transition.norm(x)))
                outputs.append(x)
                x = transition.pool(x)
        x = f.denseblock4(x)
        # torchvision applies this ReLU outside ``features``.
        outputs.append(x if self.raw_outputs else F.relu(f.norm5(x)))
        return outputs


def _densenet121_features(pretrained: bool) -> nn.Sequential:
    weights = torchvision.models.DenseNet121_Weights.IMAGENET1K_V1 if pretrained else None
    return torchvision.models.densenet121(weights=weights).features


def ldn121(pretrained: bool = False, decoder_channels: int = LDN_DECODER_CHANNELS) -> LadderNet:
    encoder = DenseNetEncoder(_densenet121_features(pretrained))
    return LadderNet(encoder, DENSENET121_SKIP_CHANNELS, decoder_channels, (decoder_channels,) * 3)


def ldn121_reference(pretrained: bool = False) -> LadderNet:
    """The authors' LDN-121; ``pretrained`` loads the same ImageNet DenseNet-121 they start from."""
    features = _densenet121_features(pretrained)
    features.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
    for transition in (features.transition1, features.transition2, features.transition3):
        transition.pool = nn.AvgPool2d(kernel_size=3, stride=2, padding=1, count_include_pad=False)
    del features.norm5
    return LadderNet(
        DenseNetEncoder(features, raw_outputs=True),
        DENSENET121_BLOCK_CHANNELS,
        REFERENCE_SPP_CHANNELS,
        REFERENCE_UPSAMPLE_CHANNELS,
        preactivation=True,
    )
