"""OpenSetSegmenter: backbone + closed-set classifier + inlier-posterior head (+ optional MOoSe probes)."""

from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from openset_perception.models.blocks import BNReLUConv, ConvBNReLU, resize_to
from openset_perception.models.registry import build_backbone, check_backbone_name
from openset_perception.row_blocks import in_row_blocks

PROBE_CHANNELS = 256


class SegmenterOutput(NamedTuple):
    logits: Tensor  # (B, K, H, W)
    ood_logit: Tensor  # (B, 1, H, W): g(z), P(d_in | x) = sigmoid(g)
    probe_logits: list[Tensor]  # one (B, K, H, W) map per MOoSe probe; [] without probes


def _is_int_at_least(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass(frozen=True)
class ArchitectureSpec:
    """Everything needed to rebuild the network; stored as a plain dict in the model card."""

    backbone: str
    num_classes: int
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    moose_probes: bool = False
    probe_depth: int = 3

    def __post_init__(self) -> None:
        check_backbone_name(self.backbone)
        if not _is_int_at_least(self.num_classes, 1):
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        if not _is_int_at_least(self.probe_depth, 0):
            raise ValueError(f"probe_depth must be a non-negative integer, got {self.probe_depth!r}")
        if not isinstance(self.moose_probes, bool):
            raise ValueError(f"moose_probes must be a bool, got {self.moose_probes!r}")
        if not isinstance(self.backbone_kwargs, Mapping):
            raise ValueError(f"backbone_kwargs must be a mapping, got {self.backbone_kwargs!r}")
        # A private copy: the caller's dict may change later, the spec must not.
        object.__setattr__(self, "backbone_kwargs", dict(self.backbone_kwargs))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ArchitectureSpec":
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown ArchitectureSpec keys {unknown}; valid keys: {known}")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ValueError(f"ArchitectureSpec is missing required keys {missing}")
        return cls(**data)


class ProbeHead(nn.Sequential):
    """MOoSe probe: 1x1 to 256 (BN, ReLU), ``depth`` x [3x3 conv, BN, ReLU], 1x1 classifier."""

    def __init__(self, in_channels: int, num_classes: int, depth: int) -> None:
        super().__init__(
            ConvBNReLU(in_channels, PROBE_CHANNELS, kernel_size=1),
            *(ConvBNReLU(PROBE_CHANNELS, PROBE_CHANNELS, kernel_size=3) for _ in range(depth)),
            nn.Conv2d(PROBE_CHANNELS, num_classes, kernel_size=1),
        )


class PreactivatedHead(BNReLUConv):
    """BN-ReLU-Conv1x1 on features z: the inlier-posterior logit g(z), (B, 1, H, W), and for backbones
    with ``classifier_preactivation`` the class logits.

    In inference the normalisation is one multiply-add per element and the 1x1 convolution a matrix
    product over the channels: on a CPU 10 ms instead of 25 ms for the three modules in turn for the
    one-channel head (128 x 256 x 512, issue 2's overhead budget). Training runs the modules as they
    are, since batch normalisation then needs the batch statistics.
    """

    def __init__(self, in_channels: int, out_channels: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, bias=True)

    def forward(self, z: Tensor) -> Tensor:
        norm, _, conv = self
        if self.training or not norm.track_running_stats:
            return super().forward(z)
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        shift = norm.bias - norm.running_mean * scale
        hidden = torch.addcmul(shift.view(1, -1, 1, 1), z, scale.view(1, -1, 1, 1)).relu_()
        if not hidden.is_contiguous():  # channels_last (CUDA): flattening would copy; cuDNN is fast here
            return nn.functional.conv2d(hidden, conv.weight, conv.bias)
        batch, _, height, width = hidden.shape
        out_channels = conv.out_channels
        g = torch.matmul(conv.weight.view(out_channels, -1), hidden.flatten(2)) + conv.bias.view(1, -1, 1)
        return g.view(batch, out_channels, height, width)


class OpenSetSegmenter(nn.Module):
    """Class logits s, inlier-posterior logit g(z) and MOoSe probe logits from one forward pass.

    ``classifier`` and ``ood_head`` both read the pre-logits z. Probes read detached features, so
    no gradient from a probe loss reaches the backbone, the classifier or the inlier head.
    """

    def __init__(self, spec: ArchitectureSpec, pretrained: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = build_backbone(spec.backbone, pretrained=pretrained, **spec.backbone_kwargs)
        channels = self.backbone.prelogit_channels
        self.classifier: nn.Module = (
            PreactivatedHead(channels, spec.num_classes)
            if self.backbone.classifier_preactivation
            else nn.Conv2d(channels, spec.num_classes, kernel_size=1)
        )
        inlier_channels = self.backbone.inlier_channels
        self.ood_head = PreactivatedHead(channels if inlier_channels is None else inlier_channels)
        if spec.moose_probes and not self.backbone.probe_channels:
            raise ValueError(f"backbone {spec.backbone!r} has no spatial-pyramid branches for MOoSe probes")
        probe_inputs = self.backbone.probe_channels if spec.moose_probes else []
        self.probes = nn.ModuleList(
            ProbeHead(in_channels, spec.num_classes, spec.probe_depth) for in_channels in probe_inputs
        )

    def forward(self, x: Tensor, upsample: bool = True) -> SegmenterOutput:
        """``upsample=False`` returns the maps at the backbone's output stride."""
        features = self.backbone(x, with_probes=len(self.probes) > 0)
        logits = self.classifier(features.prelogits)
        inlier_features = features.prelogits if features.inlier_features is None else features.inlier_features
        # Batch statistics in training need the whole map; in inference the head acts per pixel.
        if self.training:
            ood_logit = self.ood_head(inlier_features)
        else:
            ood_logit = in_row_blocks(self.ood_head, inlier_features)
        probe_logits = [probe(f) for probe, f in zip(self.probes, features.probe_features, strict=True)]
        if upsample:
            size = x.shape[-2:]
            logits = self.upsample(logits, size)
            ood_logit = self.upsample(ood_logit, size)
            probe_logits = [self.upsample(p, size) for p in probe_logits]
        return SegmenterOutput(logits, ood_logit, probe_logits)

    def upsample(self, x: Tensor, size: Sequence[int]) -> Tensor:
        """A head's map at the input ``size``, interpolated as the backbone was trained."""
        return resize_to(x, size, align_corners=self.backbone.align_corners)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return self.backbone.encoder_parameters()

    def decoder_parameters(self) -> list[nn.Parameter]:
        heads = [*self.classifier.parameters(), *self.ood_head.parameters()]
        return self.backbone.decoder_parameters() + heads

    def probe_parameters(self) -> list[nn.Parameter]:
        return list(self.probes.parameters())


def build_model(spec: ArchitectureSpec, pretrained: bool = False) -> OpenSetSegmenter:
    return OpenSetSegmenter(spec, pretrained=pretrained)
