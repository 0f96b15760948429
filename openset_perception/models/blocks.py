"""Building blocks shared by the ladder-style backbones (SwiftNet, LDN) and DeepLabV3+."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def resize_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinearly resize ``x`` to the spatial ``size`` (align_corners=False); a no-op when it already fits."""
    target = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == target:
        return x
    return F.interpolate(x, size=target, mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Sequential):
    """Conv -> BatchNorm -> ReLU with 'same' padding.

    ``batch_norm=False`` gives Conv(bias) -> ReLU; pooled branches use it because batch
    normalisation over a 1x1 map is undefined for a training batch of one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        dilation: int = 1,
        batch_norm: bool = True,
    ) -> None:
        conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            bias=not batch_norm,
        )
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        layers: list[nn.Module] = [conv]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def aspect_grid(rows: int, height: int, width: int) -> tuple[int, int]:
    """Pooling grid with ``rows`` rows and as many columns as keep the cells roughly square."""
    return rows, max(1, round(rows * width / height))


class SpatialPyramidPooling(nn.Module):
    """SwiftNet-style SPP: 1x1 bottleneck, average pooling to several grids, concat, 1x1 fusion."""

    def __init__(
        self,
        in_channels: int,
        bottleneck_channels: int,
        level_channels: int,
        out_channels: int,
        grid_rows: Sequence[int] = (8, 4, 2, 1),
    ) -> None:
        super().__init__()
        self.grid_rows = tuple(grid_rows)
        self.bottleneck = ConvBNReLU(in_channels, bottleneck_channels, kernel_size=1)
        self.levels = nn.ModuleList(
            ConvBNReLU(bottleneck_channels, level_channels, kernel_size=1, batch_norm=False)
            for _ in self.grid_rows
        )
        self.fuse = ConvBNReLU(
            bottleneck_channels + level_channels * len(self.grid_rows), out_channels, kernel_size=1
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.bottleneck(x)
        height, width = x.shape[-2:]
        pyramid = [x]
        for rows, level in zip(self.grid_rows, self.levels, strict=True):
            pooled = F.adaptive_avg_pool2d(x, aspect_grid(rows, height, width))
            pyramid.append(resize_to(level(pooled), (height, width)))
        return self.fuse(torch.cat(pyramid, dim=1))


class LadderUpsample(nn.Module):
    """Upsample to the skip's exact size, add the 1x1-projected skip, blend with a 3x3 conv."""

    def __init__(self, skip_channels: int, channels: int) -> None:
        super().__init__()
        self.skip_projection = ConvBNReLU(skip_channels, channels, kernel_size=1)
        self.blend = ConvBNReLU(channels, channels, kernel_size=3)

    def forward(self, coarse: Tensor, skip: Tensor) -> Tensor:
        return self.blend(resize_to(coarse, skip.shape[-2:]) + self.skip_projection(skip))
