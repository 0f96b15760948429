"""Decoding camera frames and running frames of several cameras through the engine together.

The engine takes batches of one image size, so frames are grouped by size: cameras that share a
resolution share a forward pass, others get their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from openset_perception.depth import DepthBinStats
from openset_perception.engine import Segmenter
from openset_perception.image_codec import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_color, decode_depth
from openset_perception.runtime.frame_buffer import CameraFrame

MIN_IMAGE_SIDE = 32  # the backbones' smallest input


@dataclass(frozen=True)
class DecodedFrame:
    frame: CameraFrame
    image: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray | None  # (H, W) float32 metres, NaN invalid


@dataclass(frozen=True)
class FrameMaps:
    """One frame's slice of the engine's batch result; maps that were not asked for are None."""

    semantic: np.ndarray | None
    anomaly_score: np.ndarray | None
    open_set: np.ndarray | None
    depth_stats: list[DepthBinStats] | None


def decode_frame(
    frame: CameraFrame, with_depth: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS
) -> DecodedFrame:
    """Decode a frame's messages; raise ``ImageDecodeError`` for anything the engine cannot take.

    Images (and depth images) larger than ``max_pixels`` are refused before they are decoded.
    """
    image = decode_color(frame.image_msg, max_pixels)
    if min(image.shape[:2]) < MIN_IMAGE_SIDE:
        raise ImageDecodeError(
            f"image {image.shape[1]}x{image.shape[0]} is smaller than {MIN_IMAGE_SIDE} pixels on a side"
        )
    depth = None
    if with_depth and frame.depth_msg is not None:
        depth = decode_depth(frame.depth_msg, max_pixels)
        if depth.shape != image.shape[:2]:
            raise ImageDecodeError(
                f"depth size {depth.shape[1]}x{depth.shape[0]} does not match "
                f"image size {image.shape[1]}x{image.shape[0]}"
            )
    return DecodedFrame(frame, image, depth)


def group_by_size(frames: Sequence[DecodedFrame]) -> list[list[int]]:
    """Indices of ``frames`` grouped by image size, groups in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, decoded in enumerate(frames):
        groups.setdefault(decoded.image.shape[:2], []).append(index)
    return list(groups.values())


def segment_frames(
    segmenter: Segmenter, frames: Sequence[DecodedFrame], engine_outputs: Sequence[str]
) -> list[FrameMaps]:
    """Run ``frames`` through the engine, one call per image size; results in the order of ``frames``."""
    results: list[FrameMaps | None] = [None] * len(frames)
    for indices in group_by_size(frames):
        images = [frames[i].image for i in indices]
        depth = [frames[i].depth for i in indices]
        with_depth = "depth_report" in engine_outputs and any(d is not None for d in depth)
        batch = segmenter.segment(images, depth=depth if with_depth else None, outputs=engine_outputs)
        for position, index in enumerate(indices):
            results[index] = FrameMaps(
                semantic=_row(batch.semantic, position),
                anomaly_score=_row(batch.anomaly_score, position),
                open_set=_row(batch.open_set, position),
                depth_stats=batch.depth_report[position] if batch.depth_report is not None else None,
            )
    return [r for r in results if r is not None]


def _row(maps: np.ndarray | None, position: int) -> np.ndarray | None:
    return None if maps is None else maps[position]
