"""The interface every backbone implements (docs/ARCHITECTURE.md, "Backbones")."""

from typing import NamedTuple

from torch import Tensor, nn


class DenseFeatures(NamedTuple):
    prelogits: Tensor  # (B, C, h, w): the features the classifier (and by default the inlier head) read
    probe_features: list[Tensor]  # MOoSe probe inputs, detached from the graph; [] without probes
    # What the inlier-posterior head reads where a published architecture feeds it other features than
    # the classifier (NVIDIA's DeepLabV3+: the decoder's input); None: the pre-logits.
    inlier_features: Tensor | None = None


class FeatureNet(nn.Module):
    """Dense feature extractor: ``forward(x, with_probes=True) -> DenseFeatures``.

    Subclasses keep their ImageNet-pretrainable part in ``self.encoder``; everything else is decoder.
    ``with_probes=False`` skips building the probe inputs when nobody reads them.

    The class attributes below describe the heads a backbone's published checkpoints were trained
    with; the defaults are ours.
    """

    encoder: nn.Module
    prelogit_channels: int
    probe_channels: list[int]
    output_stride: int
    pad_multiple: int
    # The classifier is BN-ReLU-Conv1x1 (the LDN and SwiftNet authors' ``logits``) instead of a 1x1 conv.
    classifier_preactivation: bool = False
    # Channels of ``DenseFeatures.inlier_features``; None when the inlier head reads the pre-logits.
    inlier_channels: int | None = None
    # Bilinear upsampling of the heads' maps to the input size with align_corners=True.
    align_corners: bool = False

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        encoder_ids = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in encoder_ids]
