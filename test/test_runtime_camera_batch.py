"""Decoding frames from ROS messages (rosbags classes) and batching cameras of several sizes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from openset_perception.engine import FrameResult, Segmenter
from openset_perception.image_codec import (
    ImageDecodeError,
    numpy_to_compressed,
    numpy_to_image,
    rosbags_factories,
)
from openset_perception.runtime.camera_batch import DecodedFrame, decode_frame, group_by_size, segment_frames
from openset_perception.runtime.frame_buffer import CameraFrame

FACTORIES = rosbags_factories(get_typestore(Stores.ROS2_JAZZY))


def camera_frame(camera: str, image_msg: Any, depth_msg: Any = None) -> CameraFrame:
    header = FACTORIES.header(1_500_000_000, f"{camera}_optical")
    return CameraFrame(camera, header, 1.5, time.monotonic(), image_msg, depth_msg)


def rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_decodes_rgb_and_millimetre_depth() -> None:
    image = rgb(40, 48)
    millimetres = np.full((40, 48), 2500, dtype=np.uint16)
    millimetres[0, :5] = 0
    decoded = decode_frame(
        camera_frame(
            "front",
            numpy_to_image(image, "rgb8", msg_factory=FACTORIES.image),
            numpy_to_image(millimetres, "16UC1", msg_factory=FACTORIES.image),
        )
    )
    np.testing.assert_array_equal(decoded.image, image)
    assert decoded.depth.dtype == np.float32
    assert np.isnan(decoded.depth[0, :5]).all()
    np.testing.assert_allclose(decoded.depth[1:], 2.5)


def test_decodes_padded_bgr_and_float_depth_and_jpeg() -> None:
    image = rgb(36, 40, seed=1)
    bgr = image[..., ::-1]
    padded = np.zeros((36, 40 * 3 + 8), dtype=np.uint8)
    padded[:, : 40 * 3] = bgr.reshape(36, -1)
    msg = FACTORIES.image(
        height=36, width=40, encoding="bgr8", is_bigendian=0, step=128, data=padded.reshape(-1)
    )
    metres = np.full((36, 40), 7.25, dtype=np.float32)
    metres[3, 3] = np.inf
    depth_msg = numpy_to_image(metres, "32FC1", msg_factory=FACTORIES.image)
    decoded = decode_frame(camera_frame("front", msg, depth_msg))
    np.testing.assert_array_equal(decoded.image, image)
    assert np.isnan(decoded.depth[3, 3]) and decoded.depth[0, 0] == np.float32(7.25)

    flat = np.full((36, 40, 3), 90, dtype=np.uint8)
    jpeg = numpy_to_compressed(flat, "jpeg", msg_factory=FACTORIES.compressed_image)
    assert np.abs(decode_frame(camera_frame("front", jpeg)).image.astype(int) - 90).max() <= 2


def test_depth_is_skipped_when_not_wanted() -> None:
    image_msg = numpy_to_image(rgb(32, 32), "rgb8", msg_factory=FACTORIES.image)
    broken_depth = FACTORIES.image(height=32, width=32, encoding="16UC1", is_bigendian=0, step=64, data=b"")
    assert decode_frame(camera_frame("a", image_msg, broken_depth), with_depth=False).depth is None
    with pytest.raises(ImageDecodeError, match="data length"):
        decode_frame(camera_frame("a", image_msg, broken_depth))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (dict(height=32, width=32, encoding="yuv422", step=64, data=bytes(2048)), "unsupported encoding"),
        (dict(height=32, width=32, encoding="rgb8", step=96, data=bytes(100)), "data length"),
        (dict(height=0, width=0, encoding="rgb8", step=0, data=b""), "zero-sized"),
        (dict(height=16, width=64, encoding="rgb8", step=192, data=bytes(192 * 16)), "smaller than 32"),
        (dict(height=32, width=32, encoding="32FC1", step=128, data=bytes(4096)), "not a colour"),
    ],
)
def test_bad_images_raise_decode_errors(fields: dict, match: str) -> None:
    msg = FACTORIES.image(is_bigendian=0, **fields)
    with pytest.raises(ImageDecodeError, match=match):
        decode_frame(camera_frame("a", msg))


def test_depth_of_another_size_is_rejected() -> None:
    image_msg = numpy_to_image(rgb(40, 48), "rgb8", msg_factory=FACTORIES.image)
    depth_msg = numpy_to_image(np.ones((40, 40), np.float32), "32FC1", msg_factory=FACTORIES.image)
    with pytest.raises(ImageDecodeError, match="depth size 40x40 does not match image size 48x40"):
        decode_frame(camera_frame("a", image_msg, depth_msg))


def decoded(camera: str, height: int, width: int, seed: int, depth: bool = False) -> DecodedFrame:
    depth_map = np.full((height, width), 4.0 + seed, dtype=np.float32) if depth else None
    return DecodedFrame(camera_frame(camera, None), rgb(height, width, seed), depth_map)


def test_groups_frames_by_size_in_order_of_appearance() -> None:
    frames = [
        decoded("a", 64, 96, 0),
        decoded("b", 48, 64, 1),
        decoded("c", 64, 96, 2),
        decoded("d", 48, 64, 3),
    ]
    assert group_by_size(frames) == [[0, 2], [1, 3]]


class RecordingSegmenter:
    """Stands in for the engine: maps derived from each image, calls recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, tuple[int, int], bool, tuple[str, ...]]] = []

    def segment(self, images, depth=None, outputs=()) -> FrameResult:
        self.calls.append((len(images), images[0].shape[:2], depth is not None, tuple(outputs)))
        stack = np.stack(images)
        reports = [None if d is None else [float(d[0, 0])] for d in depth] if depth is not None else None
        return FrameResult(stack[..., 0], stack[..., 1].astype(np.float32), stack[..., 2], reports)


def test_one_engine_call_per_size_and_results_back_in_input_order() -> None:
    frames = [
        decoded("a", 64, 96, 0, depth=True),
        decoded("b", 48, 64, 1, depth=True),
        decoded("c", 64, 96, 2),
    ]
    engine = RecordingSegmenter()
    maps = segment_frames(engine, frames, ("semantic", "anomaly_score", "open_set", "depth_report"))
    assert sorted(engine.calls) == sorted(
        [
            (2, (64, 96), True, ("semantic", "anomaly_score", "open_set", "depth_report")),
            (1, (48, 64), True, ("semantic", "anomaly_score", "open_set", "depth_report")),
        ]
    )
    for item, frame_maps in zip(frames, maps, strict=True):
        np.testing.assert_array_equal(frame_maps.semantic, item.image[..., 0])
        np.testing.assert_array_equal(frame_maps.open_set, item.image[..., 2])
        expected_depth = None if item.depth is None else [float(item.depth[0, 0])]
        assert frame_maps.depth_stats == expected_depth

    engine.calls.clear()
    segment_frames(engine, frames, ("semantic",))
    assert all(not with_depth for _, _, with_depth, _ in engine.calls)  # no depth sent when not reported


def test_batched_cameras_equal_single_frame_engine_calls(tiny_checkpoint: Path) -> None:
    segmenter = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")
    frames = [decoded("a", 40, 56, 0, depth=True), decoded("b", 33, 47, 1), decoded("c", 40, 56, 2)]
    maps = segment_frames(segmenter, frames, ("semantic", "anomaly_score", "open_set", "depth_report"))
    for item, frame_maps in zip(frames, maps, strict=True):
        depth = None if item.depth is None else [item.depth]
        single = segmenter.segment([item.image], depth=depth)
        np.testing.assert_array_equal(frame_maps.semantic, single.semantic[0])
        np.testing.assert_allclose(frame_maps.anomaly_score, single.anomaly_score[0], rtol=1e-4, atol=1e-4)
        assert frame_maps.anomaly_score.shape == item.image.shape[:2]
        if item.depth is None:
            assert frame_maps.depth_stats is None
        else:
            assert [s.valid_pixels for s in frame_maps.depth_stats] == [
                s.valid_pixels for s in single.depth_report[0]
            ]
