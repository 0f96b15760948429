"""Per-pixel operations on large CPU maps, applied a block of rows at a time.

On a CPU, a full-resolution temporary of a 2 MP frame (19 x 1024 x 2048 float32 = 160 MB) is a fresh
allocation every frame, and its page faults cost more than the arithmetic done in it: logsumexp over
the classes took 188 ms whole and 73 ms in blocks of rows, the inlier head 53 ms vs 21 ms (one
thread, measured for issue 2). Row blocks keep the temporaries small and reused. Every operation
routed here acts on each pixel independently, so results equal the whole-map ones up to float
rounding (a block's reduction may vectorise in another order).

``upsampled_in_row_blocks`` goes one step further for maps at the network's output stride: each
block of output rows is upsampled from the few input rows it needs, so the full-resolution maps
(the K x H x W logits) never exist at all.

Blocks are used only where they help and cannot hurt: CPU tensors, no autograd graph, and not while
torch.compile, torch.export or the ONNX exporter traces (a traced loop would bake in the size).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

BLOCK_ELEMENTS = 1 << 20  # 4 MB of float32 per input block: small enough to stay out of mmap
SMALL_OUTPUT_KERNEL_LIMIT = 128  # upsample_bilinear2d on a CPU: H + W <= 128 takes a vectorised kernel


def tracing() -> bool:
    return (
        torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or torch.onnx.is_in_onnx_export()
    )


MapOrMaps = torch.Tensor | tuple[torch.Tensor, ...]


def in_row_blocks(fn: Callable[..., MapOrMaps], *maps: torch.Tensor) -> MapOrMaps:
    """``fn(*maps)`` for (..., H, W) maps of one height, computed over blocks of rows (dim -2).

    ``fn`` must act on each row independently and return a (..., H, W') map or a tuple of them
    (several results of one pass over the inputs, while a block is still in cache).
    """
    # Tracing first: the size checks below would turn symbolic shapes into guards.
    if tracing():
        return fn(*maps)
    first = maps[0]
    rows = first.shape[-2] if first.dim() >= 2 else 0
    per_row = max(m.numel() // max(rows, 1) for m in maps)
    rows_per_block = max(1, BLOCK_ELEMENTS // max(per_row, 1))
    if (
        first.dim() < 3
        or first.device.type != "cpu"
        or rows <= rows_per_block
        or (torch.is_grad_enabled() and any(m.requires_grad for m in maps))
    ):
        return fn(*maps)
    blocks = [
        fn(*(m[..., start : start + rows_per_block, :] for m in maps))
        for start in range(0, rows, rows_per_block)
    ]
    if isinstance(blocks[0], tuple):
        return tuple(torch.cat(parts, dim=-2) for parts in zip(*blocks, strict=True))
    return torch.cat(blocks, dim=-2)


def upsampled_in_row_blocks(
    fn: Callable[..., MapOrMaps], maps: Sequence[torch.Tensor], size: tuple[int, int], crop: tuple[int, int]
) -> MapOrMaps:
    """``fn(*(u[..., :crop_h, :crop_w]))`` for the ``maps`` (..., h, w) bilinearly upsampled to ``size``.

    Equal bit for bit to upsampling whole and then calling ``fn`` in row blocks, when ``size`` is a
    power-of-two multiple of the maps' height (the network's output stride of a padded input): then
    the upsampling of a slice of input rows computes exactly the source positions and weights the
    whole map would, so each block upsamples only the input rows under it, plus one row of margin on
    either side for the bilinear neighbours. Any other geometry (and tracing, autograd, CUDA)
    upsamples whole.
    """
    height, width = size
    crop_height, crop_width = crop
    in_rows = maps[0].shape[-2]
    factor = height // in_rows
    same_rows = all(m.shape[-2] == in_rows for m in maps)
    exact = same_rows and factor >= 1 and height == factor * in_rows and factor & (factor - 1) == 0
    # PyTorch picks another bilinear kernel for outputs of height + width <= 128 and for
    # channels-last maps; a block must meet the kernel the whole map would.
    exact = exact and width > SMALL_OUTPUT_KERNEL_LIMIT and all(m.is_contiguous() for m in maps)
    per_row = sum(m[..., 0, 0].numel() for m in maps) * width  # elements of one upsampled row
    rows_per_block = max(factor, BLOCK_ELEMENTS // max(per_row, 1) // factor * factor)
    if (
        tracing()
        or not exact
        or maps[0].device.type != "cpu"
        or crop_height <= rows_per_block
        or (torch.is_grad_enabled() and any(m.requires_grad for m in maps))
    ):
        return fn(*(_upsample(m, size)[..., :crop_height, :crop_width] for m in maps))
    blocks = []
    for start in range(0, crop_height, rows_per_block):
        stop = min(start + rows_per_block, crop_height)
        first = max(start // factor - 1, 0)
        last = min(-(-stop // factor) + 1, in_rows)
        offset = start - first * factor
        blocks.append(
            fn(
                *(
                    _upsample(m[..., first:last, :], ((last - first) * factor, width))[
                        ..., offset : offset + stop - start, :crop_width
                    ]
                    for m in maps
                )
            )
        )
    if isinstance(blocks[0], tuple):
        return tuple(torch.cat(parts, dim=-2) for parts in zip(*blocks, strict=True))
    return torch.cat(blocks, dim=-2)


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
