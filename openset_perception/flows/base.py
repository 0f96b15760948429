"""The interface every normalizing flow here implements, plus the image <-> data-space mappings.

Spaces: an *image* is RGB in [0, 1] (or uint8 in [0, 255]); the flow's *data space* is the logit of
the image squeezed into [margin, 1 - margin] (RealNVP's pre-processing), which is unbounded, so
samples never need clamping; the *latents* are a list of tensors, one per scale (finest first),
each with a standard normal prior.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Latents = list[Tensor]

_LOG_2PI = math.log(2.0 * math.pi)
_QUANTIZATION_LEVELS = 256


def standard_normal_log_prob(tensors: Latents) -> Tensor:
    """Sum of log N(t; 0, I) over all entries of every tensor, per sample: (B,)."""
    per_tensor = [(-0.5 * (t.pow(2) + _LOG_2PI)).flatten(1).sum(dim=1) for t in tensors]
    return torch.stack(per_tensor).sum(dim=0)


def dequantize(images: Tensor) -> Tensor:
    """Uniform dequantization of 8-bit images to (0, 1): (levels + U(0, 1)) / 256.

    uint8 input holds the levels; float input is read as an image in [0, 1] and rounded to the
    nearest of the 256 levels first, so both describe the same discrete data.
    """
    if images.dtype == torch.uint8:
        levels = images.float()
    else:
        levels = torch.round(images.clamp(0.0, 1.0) * (_QUANTIZATION_LEVELS - 1))
    return (levels + torch.rand_like(levels)) / _QUANTIZATION_LEVELS


class NormalizingFlow(nn.Module, ABC):
    """Fully convolutional flow on (B, 3, H, W) with H, W multiples of ``size_multiple``.

    Subclasses implement ``forward`` (data -> latents, log-det), ``inverse`` and ``latent_shapes``;
    likelihoods, sampling and the image mappings are shared. Set ``kind`` and ``config`` so a
    checkpoint can rebuild the flow with ``build_flow(flow.kind, **asdict(flow.config))``.
    """

    kind: str = ""

    def __init__(self, size_multiple: int, logit_margin: float) -> None:
        super().__init__()
        if not 0.0 <= logit_margin < 0.5:
            raise ValueError(f"logit_margin must be in [0, 0.5), got {logit_margin}")
        self.size_multiple = size_multiple
        self.logit_margin = logit_margin

    @abstractmethod
    def forward(self, x: Tensor) -> tuple[Latents, Tensor]:
        """Data space (B, 3, H, W) -> (latents, log-det (B,)); log p(x) = log N(latents) + log-det."""

    @abstractmethod
    def inverse(self, latents: Latents) -> Tensor:
        """Latents -> data space (B, 3, H, W); differentiable, no rounding or clamping."""

    @abstractmethod
    def latent_shapes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """(C, h, w) of each latent tensor for an input of ``height`` x ``width``."""

    def check_size(self, height: int, width: int) -> None:
        """Raise ValueError unless both sides are positive multiples of ``size_multiple``."""
        m = self.size_multiple
        if height <= 0 or width <= 0 or height % m or width % m:
            raise ValueError(f"flow input size {height}x{width} is not a positive multiple of {m}")

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density (B,) of data-space ``x`` (a lower bound for flows with noise augmentation)."""
        latents, logdet = self(x)
        return standard_normal_log_prob(latents) + logdet

    def sample(self, n: int, height: int, width: int, temperature: float = 1.0) -> Tensor:
        """``n`` data-space samples (n, 3, height, width), differentiable w.r.t. the parameters."""
        self.check_size(height, width)
        reference = next(self.parameters())
        latents = [
            temperature * torch.randn(n, *shape, device=reference.device, dtype=reference.dtype)
            for shape in self.latent_shapes(height, width)
        ]
        return self.inverse(latents)

    def from_image(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Continuous image in (0, 1) -> (data-space x, log-det (B,) of this mapping)."""
        squeezed = self.logit_margin + (1.0 - 2.0 * self.logit_margin) * image
        x = torch.log(squeezed) - torch.log1p(-squeezed)
        # d logit(p)/du = (1 - 2 margin) / (p (1 - p)); written with softplus of x for stability.
        log_derivative = math.log(1.0 - 2.0 * self.logit_margin) + F.softplus(x) + F.softplus(-x)
        return x, log_derivative.flatten(1).sum(dim=1)

    def to_image(self, x: Tensor) -> Tensor:
        """Data space -> RGB in [0, 1]; inverts ``from_image`` and is differentiable.

        The clamp only bites on values outside the range the margin reserves for real images, where
        the gradient is zero; inside it the gradient is that of the sigmoid.
        """
        image = (torch.sigmoid(x) - self.logit_margin) / (1.0 - 2.0 * self.logit_margin)
        return image.clamp(0.0, 1.0)

    def bits_per_dim(self, images: Tensor) -> Tensor:
        """Negative log-likelihood in bits per dimension (B,) of 8-bit images (uint8, or float in [0, 1]).

        Uses one uniform dequantization sample; log(256) accounts for the dequantization bins, so the
        result bounds the discrete model's code length.
        """
        unit = dequantize(images)
        x, logdet_preprocess = self.from_image(unit.to(next(self.parameters())))
        log_density = self.log_prob(x) + logdet_preprocess
        dims = x[0].numel()
        return (-log_density / dims + math.log(_QUANTIZATION_LEVELS)) / math.log(2.0)
