"""The interface every backbone implements (docs/ARCHITECTURE.md, "Backbones")."""

from typing import NamedTuple

from torch import Tensor, nn


class DenseFeatures(NamedTuple):
    prelogits: Tensor  # (B, C, h, w): the features the classifier and the inlier-posterior head read
    probe_features: list[Tensor]  # MOoSe probe inputs, detached from the graph; [] without probes


class FeatureNet(nn.Module):
    """Dense feature extractor: ``forward(x, with_probes=True) -> DenseFeatures``.

    Subclasses keep their ImageNet-pretrainable part in ``self.encoder``; everything else is decoder.
    ``with_probes=False`` skips building the probe inputs when nobody reads them.
    """

    encoder: nn.Module
    prelogit_channels: int
    probe_channels: list[int]
    output_stride: int
    pad_multiple: int

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        encoder_ids = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in encoder_ids]
