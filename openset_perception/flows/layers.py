"""Invertible layers without coupling networks: squeeze, ActNorm, invertible 1x1 convolution.

Every layer maps ``forward(x) -> (y, logdet)`` with ``logdet`` of shape (B,) and ``inverse(y) -> x``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class InvertibleLayer(nn.Module):
    """A bijection on (B, C, H, W) tensors with a tractable log-determinant."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor) -> Tensor:
        raise NotImplementedError


class FlowSequence(InvertibleLayer):
    """Composition of invertible layers; log-determinants add up."""

    def __init__(self, layers: list[InvertibleLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, layer_logdet = layer(x)
            logdet = logdet + layer_logdet
        return x, logdet

    def inverse(self, y: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


class Squeeze(InvertibleLayer):
    """Space-to-channel reshaping (C, H, W) -> (4C, H/2, W/2); a permutation, so log-det 0."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return F.pixel_unshuffle(x, 2), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return F.pixel_shuffle(y, 2)


class ActNorm(InvertibleLayer):
    """Per-channel affine map y = (x + bias) * exp(log_scale) with data-dependent initialisation.

    The first forward pass in training mode sets the parameters so that batch's output has zero mean
    and unit variance per channel (Glow); it works for a batch of one image. The ``initialized``
    buffer travels with the state dict so a loaded model is never re-initialised.
    """

    # Caps the initial scale when a channel is (nearly) constant in the initialising batch.
    _MIN_INIT_STD = 1e-2

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std.clamp_min(self._MIN_INIT_STD)))
        self.initialized.fill_(True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            self._initialize(x)
        y = (x + self.bias) * torch.exp(self.log_scale)
        pixels = x.shape[2] * x.shape[3]
        return y, (pixels * self.log_scale.sum()).expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self.log_scale) - self.bias


class InvertibleConv1x1(InvertibleLayer):
    """Glow's invertible 1x1 convolution in LU form: W = P L (U + diag(sign * exp(log_s))).

    The LU form makes the log-determinant H * W * sum(log_s) and keeps W invertible throughout
    training; it starts as a random rotation.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        rotation, _ = torch.linalg.qr(torch.randn(channels, channels))
        permutation, lower, upper = torch.linalg.lu(rotation)
        diagonal = torch.diagonal(upper)
        self.register_buffer("permutation", permutation)
        self.register_buffer("sign", torch.sign(diagonal))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), diagonal=-1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, diagonal=1))
        self.log_s = nn.Parameter(torch.log(diagonal.abs()))

    def weight(self) -> Tensor:
        """The (C, C) mixing matrix."""
        eye = torch.eye(self.lower.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * torch.exp(self.log_s))
        return self.permutation @ lower @ upper

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        weight = self.weight()
        y = F.conv2d(x, weight[:, :, None, None])
        pixels = x.shape[2] * x.shape[3]
        return y, (pixels * self.log_s.sum()).expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        inverse_weight = torch.linalg.inv(self.weight())
        return F.conv2d(y, inverse_weight[:, :, None, None])


def split_channels(channels: int) -> tuple[int, int]:
    """(kept, factored-out) channel counts when a multi-scale flow resolves half of its dimensions."""
    kept = channels // 2
    return kept, channels - kept
