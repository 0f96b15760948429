"""Turn uint8 RGB frames into the network's normalised input: the one place normalisation happens.

Training, validation, the engine and the benchmarks all call these functions, so a model always sees
the same input distribution it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean/std in [0, 1] units; mean 0 / std 1 is plain [0, 1] RGB (the LDN reference)."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> Normalization:
        return cls(mean=tuple(float(v) for v in data["mean"]), std=tuple(float(v) for v in data["std"]))


def normalize(
    images: torch.Tensor, normalization: Normalization, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(B,3,H,W) uint8 or [0,1] float -> normalised float tensor of ``dtype`` on the images' device."""
    x = images.to(dtype)
    if images.dtype == torch.uint8:
        x = x / 255.0
    mean = torch.tensor(normalization.mean, device=x.device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(normalization.std, device=x.device, dtype=dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad (the normalised mean colour) bottom/right so H and W are multiples of ``multiple``."""
    height, width = x.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x, (height, width)


def normalize_padded(
    images: torch.Tensor,
    normalization: Normalization,
    multiple: int,
    out: torch.Tensor | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """``pad_to_multiple(normalize(images), multiple)[0]`` in one float32 buffer, bit for bit.

    The frame is converted straight into the padded buffer's top-left and normalised there in
    place, with the same operations in the same order as ``normalize``: one allocation (none when
    ``out``, a zero-padded buffer of the right shape and ``memory_format`` from an earlier call, is
    passed back) instead of five full-size temporaries. ``torch.channels_last`` suits HxWx3 camera
    frames: the conversion copies them in their own order.
    """
    batch, channels, height, width = images.shape
    shape = (batch, channels, height + (-height) % multiple, width + (-width) % multiple)
    if (
        out is None
        or tuple(out.shape) != shape
        or out.device != images.device
        or not out.is_contiguous(memory_format=memory_format)
    ):
        out = torch.zeros(shape, dtype=torch.float32, device=images.device).contiguous(
            memory_format=memory_format
        )
    else:  # a smaller frame of the same padded size may follow a larger one: clear the margins
        out[..., height:, :].zero_()
        out[..., :height, width:].zero_()
    mean = torch.tensor(normalization.mean, device=out.device)
    std = torch.tensor(normalization.std, device=out.device)
    if memory_format == torch.channels_last:
        # Each image row is one run of width x 3 floats here; normalising it against the colour
        # constants repeated along the row keeps the innermost loop long (a (1, 3, 1, 1) broadcast
        # would make it 3 long and cost twice the time). Same operations, same results.
        x = out.permute(0, 2, 3, 1)[:, :height, :width].reshape(batch, height, width * channels)
        x.copy_(images.permute(0, 2, 3, 1).reshape(batch, height, width * channels))
        mean, std = mean.repeat(width), std.repeat(width)
    else:
        x = out[..., :height, :width]
        x.copy_(images)
        mean, std = mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1)
    if images.dtype == torch.uint8:
        x.div_(255.0)
    x.sub_(mean)
    x.div_(std)
    return out


def hwc_batch_to_tensor(frames: Sequence, device: torch.device, pin_memory: bool = False) -> torch.Tensor:
    """Stack HxWx3 uint8 numpy frames into a (B,3,H,W) uint8 tensor on ``device``."""
    import numpy as np

    # One frame needs no stacking copy: a leading axis on the frame itself.
    stacked = np.ascontiguousarray(frames[0])[None] if len(frames) == 1 else np.stack(frames)
    batch = torch.from_numpy(np.ascontiguousarray(stacked))
    if pin_memory and device.type == "cuda":
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True).permute(0, 3, 1, 2)
