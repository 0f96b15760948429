"""Colour renderings of label maps and score maps, and grids of them (all vectorised)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import cv2
import numpy as np
from matplotlib import colormaps

IGNORE_LABEL = 255
# Cyan: no Cityscapes class colour is near it (magenta would be confused with sidewalk).
UNKNOWN_COLOR: tuple[int, int, int] = (0, 255, 255)
Color = tuple[int, int, int]

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _apply_lut(indices: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``lut[indices]`` for (H, W) uint8 indices and a (256, 3) uint8 table, via OpenCV's fast path."""
    # applyColorMap with a user table copies table rows verbatim (no BGR swap) and is several
    # times faster than numpy fancy indexing on megapixel images.
    return cv2.applyColorMap(np.ascontiguousarray(indices), np.ascontiguousarray(lut[:, None, :]))


def _filled(height: int, width: int, color: Color) -> np.ndarray:
    """(H, W, 3) uint8 of one colour; filling a row first avoids numpy's slow 3-element broadcast."""
    row = np.empty((width, 3), dtype=np.uint8)
    row[:] = color
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = row
    return image


def _label_indices(labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "ui":
        raise ValueError(
            f"labels must be an (H, W) integer array, got {labels.dtype} with shape {labels.shape}"
        )
    outside = (labels > num_classes) & (labels != IGNORE_LABEL)
    if labels.dtype.kind == "i":
        outside |= labels < 0
    if outside.any():
        raise ValueError(f"labels hold values outside 0..{num_classes} and {IGNORE_LABEL}")
    return labels.astype(np.uint8, copy=False)


def _label_lut(palette: np.ndarray, unknown_color: Color, ignore_color: Color) -> np.ndarray:
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"palette must be (K, 3), got shape {palette.shape}")
    if len(palette) >= IGNORE_LABEL:
        raise ValueError(f"palette must have fewer than {IGNORE_LABEL} classes")
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = palette
    lut[len(palette)] = unknown_color
    lut[IGNORE_LABEL] = ignore_color
    return lut


def colorize_labels(
    labels: np.ndarray,
    palette: np.ndarray | Sequence[Color],
    unknown_color: Color = UNKNOWN_COLOR,
    ignore_color: Color = (0, 0, 0),
) -> np.ndarray:
    """(H, W, 3) uint8 RGB: class k -> ``palette[k]``, K = len(palette) -> unknown, 255 -> ignore colour."""
    palette = np.asarray(palette, dtype=np.uint8)
    lut = _label_lut(palette, unknown_color, ignore_color)
    return _apply_lut(_label_indices(labels, len(palette)), lut)


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    palette: np.ndarray | Sequence[Color],
    alpha: float = 0.5,
    unknown_color: Color = UNKNOWN_COLOR,
    outline_color: Color = (255, 255, 255),
    outline_width: int = 2,
) -> np.ndarray:
    """Palette colours blended over an RGB image, unknown pixels solid with an outline around them.

    Known pixels become ``round((1 - alpha) * image + alpha * palette[label])``; ignore pixels (255)
    keep the image; unknown pixels (label K) take ``unknown_color`` and the ``outline_width`` pixels
    just outside each unknown region take ``outline_color``.
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.dtype} with shape {image.shape}")
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    palette = np.asarray(palette, dtype=np.uint8)
    colours = colorize_labels(labels, palette, unknown_color)
    blended = cv2.addWeighted(image, 1.0 - alpha, colours, alpha, 0.0)
    # Masked copies go through cv2.copyTo: boolean-mask assignment in numpy is ~20x slower at 2 MP.
    ignored = (labels == IGNORE_LABEL).view(np.uint8)
    blended = cv2.copyTo(image, ignored, blended)
    unknown = (labels == len(palette)).view(np.uint8)
    if unknown.any():
        if outline_width > 0:
            kernel = np.ones((2 * outline_width + 1, 2 * outline_width + 1), dtype=np.uint8)
            outline = _filled(*image.shape[:2], outline_color)
            blended = cv2.copyTo(outline, cv2.dilate(unknown, kernel), blended)
        blended = cv2.copyTo(colours, unknown, blended)
    return blended


@functools.lru_cache(maxsize=16)
def colormap_lut(name: str = "inferno") -> np.ndarray:
    """(256, 3) uint8 RGB table sampled from a matplotlib colormap (read-only, cached)."""
    rgba = colormaps[name].resampled(256)(np.arange(256))
    lut = np.rint(rgba[:, :3] * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def heatmap(
    scores: np.ndarray,
    vmin: float,
    vmax: float,
    cmap: str = "inferno",
    nan_color: Color = (0, 0, 0),
) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a score map over the fixed range [vmin, vmax].

    A score s maps to table entry ``round(255 * (s - vmin) / (vmax - vmin))`` clamped to 0..255, so
    colours mean the same thing in every frame; NaN pixels take ``nan_color``.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (H, W), got shape {scores.shape}")
    if not vmax > vmin:
        raise ValueError(f"vmax must exceed vmin, got vmin={vmin}, vmax={vmax}")
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float32)
    scale = 255.0 / (vmax - vmin)
    # One saturating, rounding pass: OpenCV computes scores * scale - vmin * scale into uint8.
    indices = cv2.addWeighted(scores, scale, scores, 0.0, -vmin * scale, dtype=cv2.CV_8U)
    finite = np.isfinite(scores)
    nan_mask = None
    if not finite.all():
        # Saturation sends every non-finite value to 0; put +inf at the top and mark NaN.
        indices[scores == np.inf] = 255
        nan_mask = np.isnan(scores)
    rgb = _apply_lut(indices, colormap_lut(cmap))
    if nan_mask is not None:
        rgb[nan_mask] = nan_color
    return rgb


def _as_rgb_tile(tile: np.ndarray) -> np.ndarray:
    tile = np.asarray(tile)
    if tile.dtype != np.uint8:
        raise ValueError(f"tiles must be uint8, got {tile.dtype}")
    if tile.ndim == 2:
        return np.repeat(tile[..., None], 3, axis=2)
    if tile.ndim == 3 and tile.shape[2] == 3:
        return tile
    raise ValueError(f"tiles must be (H, W) or (H, W, 3), got shape {tile.shape}")


def title_band_height(font_scale: float = 0.4) -> int:
    """Height in pixels of the title strip ``contact_sheet`` puts above each tile."""
    (_, text_height), baseline = cv2.getTextSize("Hg", _FONT, font_scale, 1)
    return text_height + baseline + 4


def contact_sheet(
    rows: list[list[np.ndarray]],
    titles: list[list[str]] | None = None,
    margin: int = 4,
    background: Color = (32, 32, 32),
    text_color: Color = (255, 255, 255),
    font_scale: float = 0.4,
) -> np.ndarray:
    """Tiles in a grid, each top-left aligned in its cell, with an optional title strip above it.

    Column c is as wide as its widest tile, row r as tall as its tallest tile plus
    ``title_band_height(font_scale)`` when titles are given; ``margin`` pixels separate cells and
    surround the grid. Rows may have different lengths. Mono tiles are shown grey.
    """
    if not rows or any(len(row) == 0 for row in rows):
        raise ValueError("contact_sheet needs at least one tile in every row")
    if titles is not None and [len(t) for t in titles] != [len(row) for row in rows]:
        raise ValueError("titles must have the same shape as rows")
    tiles = [[_as_rgb_tile(tile) for tile in row] for row in rows]
    num_columns = max(len(row) for row in tiles)
    column_widths = [max(row[c].shape[1] for row in tiles if c < len(row)) for c in range(num_columns)]
    band = title_band_height(font_scale) if titles is not None else 0
    row_heights = [band + max(tile.shape[0] for tile in row) for row in tiles]
    column_x = np.cumsum([margin] + [w + margin for w in column_widths])
    row_y = np.cumsum([margin] + [h + margin for h in row_heights])
    sheet = _filled(row_y[-1], column_x[-1], background)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            x, y = column_x[c], row_y[r]
            if titles is not None and titles[r][c]:
                sheet[y : y + band, x : x + column_widths[c]] = _title_strip(
                    titles[r][c], column_widths[c], band, background, text_color, font_scale
                )
            height, width = tile.shape[:2]
            sheet[y + band : y + band + height, x : x + width] = tile
    return sheet


def _title_strip(
    text: str, width: int, height: int, background: Color, text_color: Color, font_scale: float
) -> np.ndarray:
    # Drawn on its own strip so text longer than the cell is clipped instead of spilling over.
    strip = _filled(height, width, background)
    (_, text_height), _ = cv2.getTextSize(text, _FONT, font_scale, 1)
    cv2.putText(strip, text, (2, 2 + text_height), _FONT, font_scale, text_color, 1, cv2.LINE_AA)
    return strip
