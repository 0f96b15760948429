"""Output images from engine maps: only what is requested, right dtypes, fixed colours, exact pixels."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from openset_perception.image_codec import image_to_numpy, numpy_to_image, rosbags_factories
from openset_perception.runtime.camera_batch import FrameMaps
from openset_perception.runtime.outputs import (
    IMAGE_OUTPUT_ENCODINGS,
    OUTPUT_NAMES,
    RenderStyle,
    engine_outputs,
    heatmap_range,
    render_image_outputs,
)
from openset_perception.visualize import UNKNOWN_COLOR, colormap_lut

PALETTE = np.array([(128, 64, 128), (70, 130, 180), (0, 0, 142)], dtype=np.uint8)  # K = 3
K = len(PALETTE)


def maps_and_image() -> tuple[FrameMaps, np.ndarray]:
    semantic = np.array([[0, 1, 2, 0], [1, 1, 2, 2], [0, 0, 0, 1]], dtype=np.uint8)
    score = np.array([[-1.0, 0.5, 3.0, -2.0], [0.0, 9.0, -9.0, 1.0], [2.0, -4.0, 0.2, 0.1]], dtype=np.float32)
    open_set = np.where(score >= 1.0, K, semantic).astype(np.uint8)  # threshold 1.0
    image = np.arange(3 * 4 * 3, dtype=np.uint8).reshape(3, 4, 3) * 5
    return FrameMaps(semantic, score, open_set, None), image


def test_engine_outputs_cover_exactly_what_the_requested_outputs_need() -> None:
    assert engine_outputs([]) == ()
    assert engine_outputs(["overlay"]) == ("open_set",)
    assert engine_outputs(["anomaly_mask", "open_set"]) == ("open_set",)
    assert engine_outputs(["anomaly_heatmap", "semantic"]) == ("semantic", "anomaly_score")
    # the depth report lists the unknown objects too, which need the score and the open-set map
    assert engine_outputs(["depth_report"]) == ("anomaly_score", "open_set", "depth_report")
    assert (
        engine_outputs(["unknown_objects"])
        == engine_outputs(["unknown_points"])
        == ("anomaly_score", "open_set")
    )
    assert engine_outputs(OUTPUT_NAMES) == ("semantic", "anomaly_score", "open_set", "depth_report")
    with pytest.raises(ValueError, match="unknown outputs"):
        engine_outputs(["segmentation"])


def test_only_requested_outputs_are_rendered() -> None:
    maps, image = maps_and_image()
    style = RenderStyle(PALETTE)
    assert render_image_outputs(image, maps, set(), style) == {}
    rendered = render_image_outputs(image, maps, {"anomaly_mask", "depth_report"}, style)
    assert set(rendered) == {"anomaly_mask"}
    mask_only = FrameMaps(None, None, maps.open_set, None)  # the mask needs no score map
    assert set(render_image_outputs(image, mask_only, {"anomaly_mask", "overlay"}, style)) == {
        "anomaly_mask",
        "overlay",
    }
    with pytest.raises(ValueError, match="anomaly_heatmap"):
        render_image_outputs(image, mask_only, {"anomaly_heatmap"}, style)


def test_mask_semantic_score_and_open_set_values() -> None:
    maps, image = maps_and_image()
    rendered = render_image_outputs(image, maps, set(IMAGE_OUTPUT_ENCODINGS), RenderStyle(PALETTE))
    expected_mask = np.array([[0, 0, 255, 0], [0, 255, 0, 255], [255, 0, 0, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(rendered["anomaly_mask"], expected_mask)
    np.testing.assert_array_equal(rendered["semantic"], maps.semantic)
    np.testing.assert_array_equal(rendered["open_set"], maps.open_set)
    assert rendered["anomaly_score"].dtype == np.float32 and np.isfinite(rendered["anomaly_score"]).all()


def test_overlay_blends_known_pixels_and_paints_unknown_ones() -> None:
    open_set = np.full((12, 12), 2, dtype=np.uint8)
    open_set[:2, :2] = K
    image = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    maps = FrameMaps(None, None, open_set, None)
    out = render_image_outputs(image, maps, {"overlay"}, RenderStyle(PALETTE, overlay_alpha=0.25))["overlay"]
    assert out.dtype == np.uint8 and out.shape == (12, 12, 3)
    assert tuple(out[1, 1]) == UNKNOWN_COLOR  # unknown
    assert tuple(out[3, 3]) == (255, 255, 255)  # outline, 2 px around the unknown region
    expected = np.rint(0.75 * image[9, 9].astype(float) + 0.25 * PALETTE[2].astype(float))
    np.testing.assert_allclose(out[9, 9], expected, atol=1)


def test_heat_map_uses_a_fixed_range_centred_on_the_threshold() -> None:
    assert heatmap_range(2.0, 10.0) == (-3.0, 7.0)
    assert heatmap_range(float("inf"), 4.0) == (-2.0, 2.0)
    with pytest.raises(ValueError, match="span"):
        heatmap_range(0.0, 0.0)
    lut = colormap_lut("inferno")
    style = RenderStyle(PALETTE, heatmap_range=heatmap_range(1.0, 4.0))  # [-1, 3]
    calm = np.array([[-1.0, 1.0, 3.0, 0.0]], dtype=np.float32)
    wild = np.array([[-1.0, 1.0, 3.0, 500.0]], dtype=np.float32)  # an outlier must not rescale the others
    for scores in (calm, wild):
        heat = render_image_outputs(
            np.zeros((1, 4, 3), np.uint8), FrameMaps(None, scores, None, None), {"anomaly_heatmap"}, style
        )["anomaly_heatmap"]
        np.testing.assert_array_equal(heat[0, :3], lut[[0, 128, 255]])
    assert tuple(heat[0, 3]) == tuple(lut[255])


def test_every_image_output_encodes_with_its_declared_encoding() -> None:
    factories = rosbags_factories(get_typestore(Stores.ROS2_JAZZY))
    maps, image = maps_and_image()
    rendered = render_image_outputs(image, maps, set(IMAGE_OUTPUT_ENCODINGS), RenderStyle(PALETTE))
    assert set(rendered) == set(IMAGE_OUTPUT_ENCODINGS)
    for name, array in rendered.items():
        msg = numpy_to_image(array, IMAGE_OUTPUT_ENCODINGS[name], msg_factory=factories.image)
        assert (msg.height, msg.width) == (3, 4)
        np.testing.assert_array_equal(image_to_numpy(msg), array)
