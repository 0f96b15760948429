"""SwiftNet with a (width-scalable) ResNet-18 encoder: the vehicle default backbone."""

import torchvision

from openset_perception.models.backbones.ladder import LadderNet
from openset_perception.models.backbones.resnet import resnet18_encoder, scaled_channels

SWIFTNET_DECODER_CHANNELS = 128


def swiftnet_rn18(
    pretrained: bool = False, width: float = 1.0, decoder_channels: int | None = None
) -> LadderNet:
    """SwiftNet-RN18; ``width`` scales every channel count (encoder included), ImageNet weights need 1.0."""
    if pretrained and width != 1.0:
        raise ValueError(f"ImageNet weights exist only for width 1.0, got width={width}")
    encoder = resnet18_encoder(width)
    if pretrained:
        imagenet = torchvision.models.resnet18(weights=torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
        state = {k: v for k, v in imagenet.state_dict().items() if not k.startswith("fc.")}
        encoder.load_state_dict(state, strict=True)
    if decoder_channels is None:
        decoder_channels = scaled_channels(SWIFTNET_DECODER_CHANNELS, width)
    return LadderNet(encoder, encoder.stage_channels, decoder_channels, (decoder_channels,) * 3)
