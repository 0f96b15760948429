"""Ladder-style feature net: four-stage encoder, SPP on the last stage, three ladder upsamplings."""

from collections.abc import Sequence

from torch import Tensor, nn

from openset_perception.models.backbones.base import DenseFeatures, FeatureNet
from openset_perception.models.blocks import LadderUpsample, SpatialPyramidPooling


class LadderNet(FeatureNet):
    """Shared by SwiftNet and LDN; ``encoder(x)`` must return features at strides 4, 8, 16 and 32.

    ``spp_channels``: SPP bottleneck and output width, shared equally by the levels, one per entry of
    ``spp_grid_rows``;
    ``upsample_channels``: output widths of the three upsamplings, coarse to fine (the last is the
    pre-logit width). ``preactivation=True`` gives the authors' BN-ReLU-Conv decoder, which reads raw
    encoder features, and a BN-ReLU-1x1 classifier (their ``logits``).
    """

    def __init__(
        self,
        encoder: nn.Module,
        stage_channels: Sequence[int],
        spp_channels: int,
        upsample_channels: Sequence[int],
        preactivation: bool = False,
        spp_grid_rows: Sequence[int] = (8, 4, 2, 1),
    ) -> None:
        super().__init__()
        if len(stage_channels) != 4:
            raise ValueError(f"expected 4 encoder stages, got {len(stage_channels)}")
        if len(upsample_channels) != 3:
            raise ValueError(f"expected 3 upsampling widths, got {len(upsample_channels)}")
        if spp_channels < len(spp_grid_rows):
            raise ValueError(f"spp_channels must be at least {len(spp_grid_rows)}, got {spp_channels}")
        self.encoder = encoder
        self.spp = SpatialPyramidPooling(
            stage_channels[3],
            bottleneck_channels=spp_channels,
            level_channels=spp_channels // len(spp_grid_rows),
            out_channels=spp_channels,
            grid_rows=spp_grid_rows,
            preactivation=preactivation,
        )
        # Coarse to fine: skips at strides 16, 8, 4.
        in_channels = [spp_channels, *upsample_channels[:-1]]
        self.upsampling = nn.ModuleList(
            LadderUpsample(skip_channels, channels, out_channels, preactivation=preactivation)
            for skip_channels, channels, out_channels in zip(
                reversed(stage_channels[:3]), in_channels, upsample_channels, strict=True
            )
        )
        self.prelogit_channels = upsample_channels[-1]
        self.probe_channels = []
        self.output_stride = 4
        self.pad_multiple = 32
        self.classifier_preactivation = preactivation

    def forward(self, x: Tensor, with_probes: bool = True) -> DenseFeatures:
        *skips, deepest = self.encoder(x)
        features = self.spp(deepest)
        for upsample, skip in zip(self.upsampling, reversed(skips), strict=True):
            features = upsample(features, skip)
        return DenseFeatures(features, [])
