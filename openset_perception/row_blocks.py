"""Per-pixel operations on large CPU maps, applied a block of rows at a time.

On a CPU, a full-resolution temporary of a 2 MP frame (19 x 1024 x 2048 float32 = 160 MB) is a fresh
allocation every frame, and its page faults cost more than the arithmetic done in it: logsumexp over
the classes took 188 ms whole and 73 ms in blocks of rows, the inlier head 53 ms vs 21 ms (one
thread, measured for issue 2). Row blocks keep the temporaries small and reused. Every operation
routed here acts on each pixel independently, so results equal the whole-map ones up to float
rounding (a block's reduction may vectorise in another order).

Blocks are used only where they help and cannot hurt: CPU tensors, no autograd graph, and not while
torch.compile, torch.export or the ONNX exporter traces (a traced loop would bake in the size).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

BLOCK_ELEMENTS = 1 << 20  # 4 MB of float32 per input block: small enough to stay out of mmap


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
