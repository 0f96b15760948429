"""Visualisation colours against the palette / blend formula / matplotlib, and grid geometry."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps

from openset_perception.visualize import (
    colorize_labels,
    colormap_lut,
    contact_sheet,
    heatmap,
    overlay,
    title_band_height,
)

PALETTE = np.array([(128, 64, 128), (70, 130, 180), (0, 0, 142)], dtype=np.uint8)
UNKNOWN = (0, 255, 255)


def test_colorize_labels_maps_classes_unknown_and_ignore() -> None:
    labels = np.array([[0, 1, 2], [3, 255, 1]], dtype=np.uint8)
    colours = colorize_labels(labels, PALETTE, unknown_color=UNKNOWN)
    expected = np.array(
        [[PALETTE[0], PALETTE[1], PALETTE[2]], [UNKNOWN, (0, 0, 0), PALETTE[1]]], dtype=np.uint8
    )
    np.testing.assert_array_equal(colours, expected)
    # Wider integer dtypes give the same picture.
    np.testing.assert_array_equal(colorize_labels(labels.astype(np.int64), PALETTE, UNKNOWN), expected)


@pytest.mark.parametrize("bad_label", [4, 254, -1, 256])
def test_colorize_labels_rejects_labels_outside_palette(bad_label: int) -> None:
    labels = np.array([[0, bad_label]], dtype=np.int64)
    with pytest.raises(ValueError, match="outside"):
        colorize_labels(labels, PALETTE)


def test_overlay_blends_known_keeps_ignore_and_highlights_unknown() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, size=(20, 24)).astype(np.uint8)
    labels[0, :] = 255
    labels[8:12, 10:14] = 3  # unknown square
    alpha = 0.3
    result = overlay(image, labels, PALETTE, alpha=alpha, unknown_color=UNKNOWN, outline_color=(1, 2, 3))

    expected_blend = np.rint((1 - alpha) * image + alpha * PALETTE[np.minimum(labels, 2)].astype(float))
    far = np.ones((20, 24), dtype=bool)
    far[6:14, 8:16] = False  # the unknown square grown by the 2-pixel outline
    known = far & (labels != 255)
    assert np.abs(result[known].astype(int) - expected_blend[known]).max() <= 1
    np.testing.assert_array_equal(result[0], image[0])
    np.testing.assert_array_equal(result[8:12, 10:14], np.broadcast_to(UNKNOWN, (4, 4, 3)))
    ring = np.zeros((20, 24), dtype=bool)
    ring[6:14, 8:16] = True
    ring[8:12, 10:14] = False
    np.testing.assert_array_equal(result[ring], np.broadcast_to((1, 2, 3), (ring.sum(), 3)))


def test_overlay_with_alpha_one_shows_pure_palette() -> None:
    image = np.full((4, 4, 3), 200, dtype=np.uint8)
    labels = np.array([[0, 1, 2, 0]] * 4, dtype=np.uint8)
    np.testing.assert_array_equal(overlay(image, labels, PALETTE, alpha=1.0), PALETTE[labels])


def test_colormap_lut_is_matplotlib_sampled_at_256_levels() -> None:
    lut = colormap_lut("viridis")
    reference = colormaps["viridis"](np.linspace(0.0, 1.0, 256))[:, :3]
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert np.abs(lut / 255.0 - reference).max() <= 0.5 / 255.0 + 1e-9


def test_heatmap_fixed_range_and_clamping() -> None:
    vmin, vmax = -2.0, 6.0
    levels = np.array([0, 1, 64, 127, 200, 254, 255])
    values = vmin + levels / 255.0 * (vmax - vmin)
    scores = np.array([np.concatenate([values, [vmin - 5.0, vmax + 5.0, -np.inf, np.inf, np.nan]])])
    rgb = heatmap(scores.astype(np.float32), vmin, vmax, cmap="magma", nan_color=(9, 8, 7))
    lut = colormap_lut("magma")
    np.testing.assert_array_equal(rgb[0, : len(levels)], lut[levels])
    np.testing.assert_array_equal(rgb[0, len(levels) :], [lut[0], lut[255], lut[0], lut[255], (9, 8, 7)])
    assert tuple(lut[0]) != tuple(lut[255])


def test_heatmap_accepts_float64_and_integers_alike() -> None:
    scores = np.array([[0, 4, 10]])
    expected = colormap_lut()[[0, 102, 255]]
    for dtype in (np.int32, np.float64, np.float32):
        np.testing.assert_array_equal(heatmap(scores.astype(dtype), 0.0, 10.0)[0], expected)


def test_heatmap_rejects_empty_range() -> None:
    with pytest.raises(ValueError, match="vmax must exceed vmin"):
        heatmap(np.zeros((2, 2), np.float32), 1.0, 1.0)


def test_contact_sheet_geometry_and_placement() -> None:
    a = np.full((10, 20, 3), 50, dtype=np.uint8)
    b = np.full((6, 8), 90, dtype=np.uint8)  # mono tile
    c = np.full((12, 5, 3), 130, dtype=np.uint8)
    margin = 3
    sheet = contact_sheet([[a, b], [c]], margin=margin, background=(0, 0, 0))
    # Columns: max(20, 5) and 8 wide; rows: max(10, 6) and 12 tall.
    assert sheet.shape == (margin + 10 + margin + 12 + margin, margin + 20 + margin + 8 + margin, 3)
    np.testing.assert_array_equal(sheet[3:13, 3:23], a)
    np.testing.assert_array_equal(sheet[3:9, 26:34], np.full((6, 8, 3), 90))
    np.testing.assert_array_equal(sheet[16:28, 3:8], c)
    assert not sheet[9:13, 26:34].any()  # below the short tile b: background
    assert not sheet[16:28, 8:23].any()  # beside the narrow tile c: background


def test_contact_sheet_titles_add_a_band_with_text() -> None:
    tile = np.zeros((16, 60, 3), dtype=np.uint8)
    band = title_band_height(0.4)
    sheet = contact_sheet([[tile, tile]], titles=[["score", ""]], margin=2, background=(0, 0, 0))
    assert sheet.shape == (2 + band + 16 + 2, 2 + 60 + 2 + 60 + 2, 3)
    assert sheet[2 : 2 + band, 2:62].any()  # text drawn above the first tile
    assert not sheet[2 : 2 + band, 64:124].any()  # empty title draws nothing
    with pytest.raises(ValueError, match="same shape"):
        contact_sheet([[tile, tile]], titles=[["only one"]])
