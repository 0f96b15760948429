"""Affine coupling layers (checkerboard and channel-wise masks) and their coupling networks.

The transformed part becomes x * exp(log_s) + t with log_s = scale * tanh(raw): bounded, so the
inverse never divides by a vanishing scale. Coupling networks end in a zero-initialised convolution,
so every coupling starts as the identity. No batch normalisation anywhere: batches of one are fine.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from openset_perception.flows.layers import InvertibleLayer

# (input channels, output channels) -> network; output channels = 2 x transformed channels.
CouplingNetFactory = Callable[[int, int], nn.Module]


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)


def _zero_conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = _conv3x3(in_channels, out_channels)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), _conv3x3(channels, channels), nn.ReLU(), _conv3x3(channels, channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResNetCouplingNet(nn.Sequential):
    """RealNVP coupling network: 3x3 stem, ``num_blocks`` residual blocks, zero-initialised 3x3 head."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, num_blocks: int) -> None:
        super().__init__(
            _conv3x3(in_channels, hidden_channels),
            *[_ResidualBlock(hidden_channels) for _ in range(num_blocks)],
            nn.ReLU(),
            _zero_conv3x3(hidden_channels, out_channels),
        )


class DenseCouplingNet(nn.Module):
    """DenseFlow's intra-module coupling network: projection to ``width``, then a dense block.

    Each of ``num_layers`` layers reads the concatenation of the projection and all earlier layers'
    outputs and adds ``growth`` channels (DenseNet); a zero-initialised 3x3 head reads everything.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int, num_layers: int, growth: int) -> None:
        super().__init__()
        self.projection = _conv3x3(in_channels, width)
        self.dense_layers = nn.ModuleList(
            nn.Sequential(nn.ReLU(), _conv3x3(width + index * growth, growth)) for index in range(num_layers)
        )
        self.head = nn.Sequential(nn.ReLU(), _zero_conv3x3(width + num_layers * growth, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        features = self.projection(x)
        for layer in self.dense_layers:
            features = torch.cat([features, layer(features)], dim=1)
        return self.head(features)


class _AffineCoupling(InvertibleLayer):
    """Turns a network output into a bounded log-scale and a shift for ``channels`` channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))

    def _affine(self, net_output: Tensor) -> tuple[Tensor, Tensor]:
        raw_log_scale, shift = net_output.chunk(2, dim=1)
        return self.scale * torch.tanh(raw_log_scale), shift


def checkerboard(height: int, width: int, parity: int, like: Tensor) -> Tensor:
    """(1, 1, H, W) mask, 1 where (row + column + parity) is even: the conditioning pixels."""
    rows = torch.arange(height, device=like.device)[:, None]
    columns = torch.arange(width, device=like.device)[None, :]
    return ((rows + columns + parity) % 2 == 0).to(like.dtype)[None, None]


class CheckerboardCoupling(_AffineCoupling):
    """Affine coupling whose conditioning half is a spatial checkerboard (RealNVP).

    The network sees the masked input and the mask itself, so it knows which pixels it predicts.
    """

    def __init__(self, channels: int, make_net: CouplingNetFactory, parity: int) -> None:
        super().__init__(channels)
        self.parity = parity
        self.net = make_net(channels + 1, 2 * channels)

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mask = checkerboard(x.shape[2], x.shape[3], self.parity, x)
        conditioning = x * mask
        log_scale, shift = self._affine(self.net(torch.cat([conditioning, mask.expand_as(x[:, :1])], dim=1)))
        transformed = 1.0 - mask
        return log_scale * transformed, shift * transformed

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._params(x)
        # Conditioning pixels have log_scale = shift = 0, so they pass unchanged.
        y = x * torch.exp(log_scale) + shift
        return y, log_scale.flatten(1).sum(dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        # The conditioning pixels of y equal those of x, so the parameters can be recomputed from y.
        log_scale, shift = self._params(y)
        return (y - shift) * torch.exp(-log_scale)


class ChannelCoupling(_AffineCoupling):
    """Affine coupling conditioned on one half of the channels; ``swap`` picks the second half."""

    def __init__(self, channels: int, make_net: CouplingNetFactory, swap: bool = False) -> None:
        first = channels // 2
        conditioning, transformed = (channels - first, first) if swap else (first, channels - first)
        super().__init__(transformed)
        self.swap = swap
        self.first = first
        self.net = make_net(conditioning, 2 * transformed)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        head, tail = x[:, : self.first], x[:, self.first :]
        return (tail, head) if self.swap else (head, tail)

    def _merge(self, conditioning: Tensor, transformed: Tensor) -> Tensor:
        parts = [transformed, conditioning] if self.swap else [conditioning, transformed]
        return torch.cat(parts, dim=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        conditioning, transformed = self._split(x)
        log_scale, shift = self._affine(self.net(conditioning))
        y = transformed * torch.exp(log_scale) + shift
        return self._merge(conditioning, y), log_scale.flatten(1).sum(dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        conditioning, transformed = self._split(y)
        log_scale, shift = self._affine(self.net(conditioning))
        return self._merge(conditioning, (transformed - shift) * torch.exp(-log_scale))
