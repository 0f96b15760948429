"""Building blocks shared by the ladder-style backbones (SwiftNet, LDN) and DeepLabV3+."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def resize_to(x: Tensor, size: Sequence[int], align_corners: bool = False) -> Tensor:
    """Bilinearly resize ``x`` to the spatial ``size``; a no-op when it already fits.

    ``align_corners=True`` only for networks trained with it (NVIDIA's DeepLabV3+ on WideResNet-38).
    """
    target = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == target:
        return x
    return F.interpolate(x, size=target, mode="bilinear", align_corners=align_corners)


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


class BNReLUConv(nn.Sequential):
    """Pre-activation unit BatchNorm -> ReLU -> Conv ('same' padding), as in DenseNet.

    The ladder decoders of the LDN and SwiftNet authors (their ``_BNReluConv``) are built from it;
    their ``norm`` / ``conv`` children are our indices 0 / 2.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = False) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias),
        )


def conv_unit(preactivation: bool) -> type[ConvBNReLU] | type[BNReLUConv]:
    return BNReLUConv if preactivation else ConvBNReLU


def aspect_grid(rows: int, height: int, width: int) -> tuple[int, int]:
    """Pooling grid with ``rows`` rows and as many columns as keep the cells roughly square.

    The aspect ratio is computed first, as in the LDN and SwiftNet authors' code, so that a tie in
    rounding goes the same way and imported models pool over exactly their grid.
    """
    return rows, max(1, round(width / height * rows))


class SpatialPyramidPooling(nn.Module):
    """SwiftNet-style SPP: 1x1 bottleneck, average pooling to several grids, concat, 1x1 fusion.

    ``preactivation=True`` builds every unit as BN-ReLU-Conv, the authors' form (their levels keep the
    batch normalisation); the default is Conv-BN-ReLU with Conv-ReLU levels.
    """

    def __init__(
        self,
        in_channels: int,
        bottleneck_channels: int,
        level_channels: int,
        out_channels: int,
        grid_rows: Sequence[int] = (8, 4, 2, 1),
        preactivation: bool = False,
    ) -> None:
        super().__init__()
        self.grid_rows = tuple(grid_rows)
        unit = conv_unit(preactivation)
        self.bottleneck = unit(in_channels, bottleneck_channels, kernel_size=1)
        self.levels = nn.ModuleList(
            BNReLUConv(bottleneck_channels, level_channels, kernel_size=1)
            if preactivation
            else ConvBNReLU(bottleneck_channels, level_channels, kernel_size=1, batch_norm=False)
            for _ in self.grid_rows
        )
        fused_channels = bottleneck_channels + level_channels * len(self.grid_rows)
        self.fuse = unit(fused_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bottleneck(x)
        height, width = x.shape[-2:]
        pyramid = [x]
        for rows, level in zip(self.grid_rows, self.levels, strict=True):
            pooled = F.adaptive_avg_pool2d(x, aspect_grid(rows, height, width))
            pyramid.append(resize_to(level(pooled), (height, width)))
        return self.fuse(torch.cat(pyramid, dim=1))


class LadderUpsample(nn.Module):
    """Upsample to the skip's exact size, add the 1x1-projected skip, blend with a 3x3 conv.

    ``channels`` is the width of the coarse input (the skip is projected to it), ``out_channels``
    that of the blend (default ``channels``); ``preactivation`` as in ``SpatialPyramidPooling``.
    """

    def __init__(
        self, skip_channels: int, channels: int, out_channels: int | None = None, preactivation: bool = False
    ) -> None:
        super().__init__()
        unit = conv_unit(preactivation)
        self.skip_projection = unit(skip_channels, channels, kernel_size=1)
        self.blend = unit(channels, channels if out_channels is None else out_channels, kernel_size=3)

    def forward(self, coarse: Tensor, skip: Tensor) -> Tensor:
        return self.blend(resize_to(coarse, skip.shape[-2:]) + self.skip_projection(skip))
