"""SwiftNet with a (width-scalable) ResNet-18 encoder: the vehicle default backbone."""

import torchvision

from openset_perception.models.backbones.ladder import LadderNet
from openset_perception.models.backbones.resnet import ResNetEncoder, resnet18_encoder, scaled_channels

SWIFTNET_DECODER_CHANNELS = 128
# The authors' single-scale SPP: num_levels=3 of their grids (8, 4, 2, 1), i.e. 8, 4 and 2 rows.
REFERENCE_SPP_GRID_ROWS = (8, 4, 2)


def _load_imagenet_weights(encoder: ResNetEncoder) -> None:
    imagenet = torchvision.models.resnet18(weights=torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    state = {k: v for k, v in imagenet.state_dict().items() if not k.startswith("fc.")}
    encoder.load_state_dict(state, strict=True)


def swiftnet_rn18(
    pretrained: bool = False, width: float = 1.0, decoder_channels: int | None = None
) -> LadderNet:
    """SwiftNet-RN18; ``width`` scales every channel count (encoder included), ImageNet weights need 1.0."""
    if pretrained and width != 1.0:
        raise ValueError(f"ImageNet weights exist only for width 1.0, got width={width}")
    encoder = resnet18_encoder(width)
    if pretrained:
        _load_imagenet_weights(encoder)
    if decoder_channels is None:
        decoder_channels = scaled_channels(SWIFTNET_DECODER_CHANNELS, width)
    return LadderNet(encoder, encoder.stage_channels, decoder_channels, (decoder_channels,) * 3)


def swiftnet_rn18_reference(pretrained: bool = False) -> LadderNet:
    """The SwiftNet authors' single-scale RN18 (orsic/swiftnet ``resnet_single_scale``), exactly.

    Differs from ``swiftnet_rn18`` where their published Cityscapes weights need it: every decoder unit
    is BN-ReLU-Conv, the SPP pools over three grids (8, 4, 2 rows; 128 // 3 channels each) and the
    classifier is BN-ReLU-Conv1x1. The ladder reads the stages' outputs after the ReLU: their blocks
    return the sum before it too, but the in-place ReLU has overwritten it by then.
    """
    encoder = resnet18_encoder()
    if pretrained:
        _load_imagenet_weights(encoder)
    channels = SWIFTNET_DECODER_CHANNELS
    return LadderNet(
        encoder,
        encoder.stage_channels,
        channels,
        (channels,) * 3,
        preactivation=True,
        spp_grid_rows=REFERENCE_SPP_GRID_ROWS,
    )
