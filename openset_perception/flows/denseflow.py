"""DenseFlow (Grcic et al.; thesis chapter 3.4): a multi-scale Glow with cross-unit coupling.

Each block starts with a squeeze and stacks DenseFlow units. A unit applies glow-like modules
(ActNorm, invertible 1x1 convolution, affine coupling with a densely connected coupling network)
and then, except for the block's last unit, a cross-unit coupling h_i: it appends ``growth`` noise
channels sigma * e + mu, e ~ N(0, I), with (mu, sigma) computed from the inputs of all earlier units
of the block (the stochastic skip connections). Between blocks half of the channels are factored out
(squeeze-and-drop). The log-likelihood is the single-sample bound (3.21):
log p(x) >= log N(z) + log |det J| - log N(e), where J is the Jacobian of (x, e) -> z.

Simplified with respect to the thesis: no Nystrom self-attention in the coupling networks, uniform
instead of variational dequantization, and a small default size (DenseFlow-74-10 is far larger).
Sampling never needs the noise: its channels are dropped on the way back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from openset_perception.flows.base import Latents, NormalizingFlow, standard_normal_log_prob
from openset_perception.flows.coupling import (
    ChannelCoupling,
    CouplingNetFactory,
    DenseCouplingNet,
    ResNetCouplingNet,
)
from openset_perception.flows.layers import ActNorm, FlowSequence, InvertibleConv1x1, split_channels

IMAGE_CHANNELS = 3


@dataclass(frozen=True)
class DenseFlowConfig:
    """DenseFlow hyper-parameters; the defaults train on 64x64 CPU crops in minutes.

    ``units_per_block[b]`` units of ``modules_per_unit[b]`` glow-like modules form block b; every
    unit but a block's last adds ``growth`` noise channels. Inputs must be multiples of
    2 ** len(units_per_block). The thesis' DenseFlow-45-6 is units (5, 3, 1), modules (3, 5, 15),
    growth 6, coupling networks of width 48 with 7 dense layers.
    """

    units_per_block: tuple[int, ...] = (3, 2, 1)
    modules_per_unit: tuple[int, ...] = (2, 2, 4)
    growth: int = 4
    coupling_width: int = 32
    dense_layers: int = 3
    dense_growth: int = 16
    cross_unit_width: int = 32
    logit_margin: float = 0.05

    def __post_init__(self) -> None:
        # YAML gives lists; tuples keep the config hashable and comparable.
        object.__setattr__(self, "units_per_block", tuple(self.units_per_block))
        object.__setattr__(self, "modules_per_unit", tuple(self.modules_per_unit))
        if (
            not self.units_per_block
            or len(self.units_per_block) != len(self.modules_per_unit)
            or min(self.units_per_block) < 1
            or min(self.modules_per_unit) < 1
            or self.growth < 1
        ):
            raise ValueError(f"invalid DenseFlow config: {self}")


class CrossUnitCoupling(nn.Module):
    """h_i: z -> [z, sigma * e + mu] with (mu, log sigma) = g_i(context); log-det = sum(log sigma).

    log sigma is tanh-bounded like the coupling scales, and g_i starts at zero (sigma = 1, mu = 0).
    """

    def __init__(self, context_channels: int, growth: int, width: int) -> None:
        super().__init__()
        self.net = ResNetCouplingNet(context_channels, 2 * growth, hidden_channels=width, num_blocks=1)
        self.scale = nn.Parameter(torch.ones(1, growth, 1, 1))

    def forward(self, z: Tensor, context: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        raw_log_sigma, mu = self.net(context).chunk(2, dim=1)
        log_sigma = self.scale * torch.tanh(raw_log_sigma)
        augmented = torch.cat([z, torch.exp(log_sigma) * noise + mu], dim=1)
        return augmented, log_sigma.flatten(1).sum(dim=1)


def _glow_module(channels: int, make_net: CouplingNetFactory) -> FlowSequence:
    return FlowSequence([ActNorm(channels), InvertibleConv1x1(channels), ChannelCoupling(channels, make_net)])


class DenseFlowUnit(nn.Module):
    """Glow-like modules followed (optionally) by a cross-unit coupling."""

    def __init__(
        self,
        channels: int,
        num_modules: int,
        make_net: CouplingNetFactory,
        cross_unit: CrossUnitCoupling | None,
    ) -> None:
        super().__init__()
        self.steps = FlowSequence([_glow_module(channels, make_net) for _ in range(num_modules)])
        self.cross_unit = cross_unit


class DenseFlow(NormalizingFlow):
    """DenseFlow over the logit-space data of 3-channel images; ``log_prob`` is a lower bound."""

    kind = "denseflow"

    def __init__(self, config: DenseFlowConfig | None = None) -> None:
        config = config or DenseFlowConfig()
        num_blocks = len(config.units_per_block)
        super().__init__(size_multiple=2**num_blocks, logit_margin=config.logit_margin)
        self.config = config
        self.growth = config.growth
        make_net = partial(
            DenseCouplingNet,
            width=config.coupling_width,
            num_layers=config.dense_layers,
            growth=config.dense_growth,
        )
        channels = IMAGE_CHANNELS
        blocks = []
        for num_units, num_modules in zip(config.units_per_block, config.modules_per_unit, strict=True):
            channels *= 4
            units, context_channels = [], 0
            for index in range(num_units):
                context_channels += channels
                cross_unit = None
                if index < num_units - 1:
                    cross_unit = CrossUnitCoupling(context_channels, self.growth, config.cross_unit_width)
                units.append(DenseFlowUnit(channels, num_modules, make_net, cross_unit))
                channels += self.growth if cross_unit is not None else 0
            blocks.append(nn.ModuleList(units))
            channels, _ = split_channels(channels)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> tuple[Latents, Tensor]:
        """Data -> latents with freshly drawn noise; log-det includes -log N(noise) (the bound's term)."""
        noise = [
            torch.randn(x.shape[0], *shape, device=x.device, dtype=x.dtype)
            for shape in self.noise_shapes(x.shape[2], x.shape[3])
        ]
        latents, logdet = self.forward_augmented(x, noise)
        return latents, logdet - standard_normal_log_prob(noise)

    def forward_augmented(self, x: Tensor, noise: list[Tensor]) -> tuple[Latents, Tensor]:
        """The bijection (x, noise) -> latents and its exact log |det J| (B,); noise per ``noise_shapes``."""
        expected_noise = len(self.noise_shapes(x.shape[2], x.shape[3]))
        if len(noise) != expected_noise:
            raise ValueError(f"expected {expected_noise} noise tensors, got {len(noise)}")
        remaining_noise = iter(noise)
        latents: Latents = []
        logdet = x.new_zeros(x.shape[0])
        for block_index, block in enumerate(self.blocks):
            x = F.pixel_unshuffle(x, 2)
            unit_inputs = [x]
            for unit in block:
                x, steps_logdet = unit.steps(x)
                logdet = logdet + steps_logdet
                if unit.cross_unit is not None:
                    context = torch.cat(unit_inputs, dim=1)
                    x, cross_logdet = unit.cross_unit(x, context, next(remaining_noise))
                    logdet = logdet + cross_logdet
                    unit_inputs.append(x)
            if block_index < len(self.blocks) - 1:
                kept, _ = split_channels(x.shape[1])
                latents.append(x[:, kept:])
                x = x[:, :kept]
        latents.append(x)
        return latents, logdet

    def inverse(self, latents: Latents) -> Tensor:
        x = latents[-1]
        for block_index in reversed(range(len(self.blocks))):
            if block_index < len(self.blocks) - 1:
                x = torch.cat([x, latents[block_index]], dim=1)
            for unit in reversed(self.blocks[block_index]):
                if unit.cross_unit is not None:
                    x = x[:, : -self.growth]
                x = unit.steps.inverse(x)
            x = F.pixel_shuffle(x, 2)
        return x

    def _block_geometry(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """(channels after the block, its height, its width, its number of cross-unit couplings)."""
        self.check_size(height, width)
        channels, geometry = IMAGE_CHANNELS, []
        for num_units in self.config.units_per_block:
            height, width = height // 2, width // 2
            channels = 4 * channels + self.growth * (num_units - 1)
            geometry.append((channels, height, width, num_units - 1))
            channels, _ = split_channels(channels)
        return geometry

    def noise_shapes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """(C, h, w) of the noise each cross-unit coupling consumes, in forward order."""
        return [
            (self.growth, block_height, block_width)
            for _, block_height, block_width, couplings in self._block_geometry(height, width)
            for _ in range(couplings)
        ]

    def latent_shapes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        geometry = self._block_geometry(height, width)
        shapes = []
        for channels, block_height, block_width, _ in geometry[:-1]:
            _, factored_out = split_channels(channels)
            shapes.append((factored_out, block_height, block_width))
        channels, block_height, block_width, _ = geometry[-1]
        shapes.append((channels, block_height, block_width))
        return shapes
