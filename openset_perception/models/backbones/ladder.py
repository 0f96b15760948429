"""Ladder-style feature net: four-stage encoder, SPP on the last stage, three ladder upsamplings."""

from collections.abc import Sequence

from torch import Tensor, nn

from openset_perception.models.backbones.base import DenseFeatures, FeatureNet
from openset_perception.models.blocks import LadderUpsample, SpatialPyramidPooling


class LadderNet(FeatureNet):
    """Shared by SwiftNet and LDN; ``encoder(x)`` must return features at strides 4, 8, 16 and 32."""

    def __init__(self, encoder: nn.Module, stage_channels: Sequence[int], decoder_channels: int) -> None:
        super().__init__()
        if len(stage_channels) != 4:
            raise ValueError(f"expected 4 encoder stages, got {len(stage_channels)}")
        if decoder_channels < 4:
            raise ValueError(f"decoder_channels must be at least 4, got {decoder_channels}")
        self.encoder = encoder
        self.spp = SpatialPyramidPooling(
            stage_channels[3],
            bottleneck_channels=decoder_channels,
            level_channels=decoder_channels // 4,
            out_channels=decoder_channels,
        )
        # Coarse to fine: skips at strides 16, 8, 4.
        self.upsampling = nn.ModuleList(
            LadderUpsample(skip_channels, decoder_channels) for skip_channels in reversed(stage_channels[:3])
        )
        self.prelogit_channels = decoder_channels
        self.probe_channels = []
        self.output_stride = 4
        self.pad_multiple = 32

    def forward(self, x: Tensor, with_probes: bool = True) -> DenseFeatures:
        *skips, deepest = self.encoder(x)
        features = self.spp(deepest)
        for upsample, skip in zip(self.upsampling, reversed(skips), strict=True):
            features = upsample(features, skip)
        return DenseFeatures(features, [])
