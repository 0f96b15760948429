"""Wide ResNet-38 (variant A2, dilated to output stride 8): the encoder of NVIDIA's DeepLabV3+.

The network of Wu et al., "Wider or Deeper", as NVIDIA's semantic-segmentation code builds it
(``wider_resnet38_a2(dilation=True)``, from mapillary/inplace_abn) and DenseHybrid fine-tunes it:
pre-activation residual blocks (BN-ReLU shared by the shortcut projection and the residual branch),
max-pooling after the stem and the first module, a strided fourth module, dilation 2 and 4 after
it. Module and parameter names follow theirs, so their checkpoints map by prefix.
"""

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

# Per module mod2..mod7: blocks, channels of the block's convolutions, dilation, dropout.
WRN38_MODULES = (
    (3, (128, 128), 1, 0.0),
    (3, (256, 256), 1, 0.0),
    (6, (512, 512), 1, 0.0),
    (3, (512, 1024), 2, 0.0),
    (1, (512, 1024, 2048), 4, 0.3),
    (1, (1024, 2048, 4096), 4, 0.5),
)
WRN38_STEM_CHANNELS = 64
STRIDED_MODULE = 4  # mod4's first block halves the resolution (output stride 4 -> 8)


def _bn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class IdentityResidualBlock(nn.Module):
    """Pre-activation residual block: two 3x3 convolutions, or 1x1-3x3-1x1 with three channel counts."""

    def __init__(
        self, in_channels: int, channels: Sequence[int], stride: int, dilation: int, dropout: float
    ) -> None:
        super().__init__()
        self.bn1 = _bn_relu(in_channels)
        if len(channels) == 2:
            layers = [
                ("conv1", nn.Conv2d(in_channels, channels[0], 3, stride, dilation, dilation, bias=False)),
                ("bn2", _bn_relu(channels[0])),
                ("conv2", nn.Conv2d(channels[0], channels[1], 3, 1, dilation, dilation, bias=False)),
            ]
        else:
            layers = [
                ("conv1", nn.Conv2d(in_channels, channels[0], 1, stride, bias=False)),
                ("bn2", _bn_relu(channels[0])),
                ("conv2", nn.Conv2d(channels[0], channels[1], 3, 1, dilation, dilation, bias=False)),
                ("bn3", _bn_relu(channels[1])),
                ("conv3", nn.Conv2d(channels[1], channels[2], 1, bias=False)),
            ]
        if dropout > 0:
            # Before the last convolution, as in the original (channel dropout: their nn.Dropout2d).
            layers.insert(len(layers) - 1, ("dropout", nn.Dropout2d(dropout)))
        self.convs = nn.Sequential(OrderedDict(layers))
        self.proj_conv = (
            nn.Conv2d(in_channels, channels[-1], 1, stride, bias=False)
            if stride != 1 or in_channels != channels[-1]
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        activated = self.bn1(x)
        shortcut = x if self.proj_conv is None else self.proj_conv(activated)
        return self.convs(activated) + shortcut


class WideResNet38Encoder(nn.Module):
    """Returns the outputs of mod2 (stride 2), mod3 (4), mod5 (8) and mod7 (8, the 4096-channel end)."""

    def __init__(self) -> None:
        super().__init__()
        self.mod1 = nn.Sequential(
            OrderedDict([("conv1", nn.Conv2d(3, WRN38_STEM_CHANNELS, 3, padding=1, bias=False))])
        )
        self.pool2 = nn.MaxPool2d(3, stride=2, padding=1)
        self.pool3 = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = WRN38_STEM_CHANNELS
        for index, (blocks, channels, dilation, dropout) in enumerate(WRN38_MODULES, start=2):
            module = []
            for block in range(blocks):
                stride = 2 if index == STRIDED_MODULE and block == 0 else 1
                unit = IdentityResidualBlock(in_channels, channels, stride, dilation, dropout)
                module.append((f"block{block + 1}", unit))
                in_channels = channels[-1]
            self.add_module(f"mod{index}", nn.Sequential(OrderedDict(module)))
        self.stage_channels = [WRN38_MODULES[i][1][-1] for i in (0, 1, 3, 5)]

    def forward(self, x: Tensor) -> list[Tensor]:
        mod2 = self.mod2(self.pool2(self.mod1(x)))
        mod3 = self.mod3(self.pool3(mod2))
        mod5 = self.mod5(self.mod4(mod3))
        mod7 = self.mod7(self.mod6(mod5))
        return [mod2, mod3, mod5, mod7]
