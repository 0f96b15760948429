"""RealNVP (Dinh et al., 2017) as used for synthetic outliers in the RNVP paper (VISAPP 2021).

Multi-scale architecture: every scale but the last applies 3 checkerboard couplings, a squeeze,
3 channel-wise couplings and factors out half of the channels; the last scale applies 4 checkerboard
couplings. Masks alternate between couplings. Departures from the paper: ActNorm (data-dependent
initialisation) before every coupling instead of batch normalisation, so training and sampling work
with batches of one; the coupling networks are plain residual stacks without normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from openset_perception.flows.base import Latents, NormalizingFlow
from openset_perception.flows.coupling import (
    ChannelCoupling,
    CheckerboardCoupling,
    CouplingNetFactory,
    ResNetCouplingNet,
)
from openset_perception.flows.layers import ActNorm, FlowSequence, InvertibleLayer, Squeeze, split_channels

IMAGE_CHANNELS = 3


@dataclass(frozen=True)
class RealNVPConfig:
    """RealNVP hyper-parameters; the defaults train on 64x64 CPU crops in minutes.

    ``num_scales`` - 1 squeezes, so inputs must be multiples of 2 ** (num_scales - 1). The RNVP paper
    uses 3 residual blocks of 32 channels and downsamples three times (``num_scales`` = 4).
    """

    num_scales: int = 4
    hidden_channels: int = 32
    num_blocks: int = 2
    logit_margin: float = 0.05

    def __post_init__(self) -> None:
        if self.num_scales < 1 or self.hidden_channels < 1 or self.num_blocks < 0:
            raise ValueError(f"invalid RealNVP config: {self}")


def _checkerboard_stack(channels: int, count: int, make_net: CouplingNetFactory) -> list[InvertibleLayer]:
    layers: list[InvertibleLayer] = []
    for index in range(count):
        layers += [ActNorm(channels), CheckerboardCoupling(channels, make_net, parity=index % 2)]
    return layers


def _channel_stack(channels: int, count: int, make_net: CouplingNetFactory) -> list[InvertibleLayer]:
    layers: list[InvertibleLayer] = []
    for index in range(count):
        layers += [ActNorm(channels), ChannelCoupling(channels, make_net, swap=index % 2 == 1)]
    return layers


class RealNVP(NormalizingFlow):
    """Multi-scale RealNVP over the logit-space data of 3-channel images."""

    kind = "realnvp"

    def __init__(self, config: RealNVPConfig | None = None) -> None:
        config = config or RealNVPConfig()
        super().__init__(size_multiple=2 ** (config.num_scales - 1), logit_margin=config.logit_margin)
        self.config = config
        make_net = partial(
            ResNetCouplingNet, hidden_channels=config.hidden_channels, num_blocks=config.num_blocks
        )
        channels = IMAGE_CHANNELS
        scales = []
        for _ in range(config.num_scales - 1):
            layers = _checkerboard_stack(channels, 3, make_net)
            channels *= 4
            layers += [Squeeze(), *_channel_stack(channels, 3, make_net)]
            scales.append(FlowSequence(layers))
            channels, _ = split_channels(channels)
        self.scales = nn.ModuleList(scales)
        self.final = FlowSequence(_checkerboard_stack(channels, 4, make_net))

    def forward(self, x: Tensor) -> tuple[Latents, Tensor]:
        latents: Latents = []
        logdet = x.new_zeros(x.shape[0])
        for scale in self.scales:
            x, scale_logdet = scale(x)
            kept, _ = split_channels(x.shape[1])
            latents.append(x[:, kept:])
            x = x[:, :kept]
            logdet = logdet + scale_logdet
        x, final_logdet = self.final(x)
        latents.append(x)
        return latents, logdet + final_logdet

    def inverse(self, latents: Latents) -> Tensor:
        x = self.final.inverse(latents[-1])
        for scale, factored_out in zip(reversed(self.scales), reversed(latents[:-1]), strict=True):
            x = scale.inverse(torch.cat([x, factored_out], dim=1))
        return x

    def latent_shapes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        self.check_size(height, width)
        channels, shapes = IMAGE_CHANNELS, []
        for _ in self.scales:
            channels, height, width = channels * 4, height // 2, width // 2
            channels, factored_out = split_channels(channels)
            shapes.append((factored_out, height, width))
        shapes.append((channels, height, width))
        return shapes
