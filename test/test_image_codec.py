"""Image codec against messages whose bytes the tests lay out by hand (struct), and round trips."""

from __future__ import annotations

import array
import struct
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from openset_perception.image_codec import (
    ImageDecodeError,
    decode_color,
    decode_depth,
    image_to_numpy,
    numpy_to_compressed,
    numpy_to_image,
    rosbags_factories,
)


@dataclass
class FakeImage:
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any
    header: Any = None


@dataclass
class FakeCompressed:
    format: str
    data: Any
    header: Any = None


def fake_image_factory(**fields: Any) -> FakeImage:
    return FakeImage(**fields)


def fake_compressed_factory(**fields: Any) -> FakeCompressed:
    return FakeCompressed(**fields)


# encoding -> (struct code of one channel value, channels, numpy dtype of the decoded array)
ENCODINGS = {
    "rgb8": ("B", 3, np.uint8),
    "bgr8": ("B", 3, np.uint8),
    "rgba8": ("B", 4, np.uint8),
    "bgra8": ("B", 4, np.uint8),
    "mono8": ("B", 1, np.uint8),
    "8UC1": ("B", 1, np.uint8),
    "8UC3": ("B", 3, np.uint8),
    "8UC4": ("B", 4, np.uint8),
    "mono16": ("H", 1, np.uint16),
    "16UC1": ("H", 1, np.uint16),
    "16SC1": ("h", 1, np.int16),
    "32FC1": ("f", 1, np.float32),
    "64FC1": ("d", 1, np.float64),
}


def random_pixels(encoding: str, height: int, width: int, seed: int = 0) -> np.ndarray:
    _, channels, dtype = ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    if np.issubdtype(dtype, np.floating):
        return rng.uniform(-1e3, 1e3, size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def pack_message(pixels: np.ndarray, encoding: str, padding: int = 0, big_endian: bool = False) -> FakeImage:
    """Lay out the message bytes value by value with struct, independently of the codec's numpy views."""
    code, channels, _ = ENCODINGS[encoding]
    height, width = pixels.shape[:2]
    order = ">" if big_endian else "<"
    rows = []
    for row in pixels.reshape(height, width * channels).tolist():
        rows.append(struct.pack(f"{order}{width * channels}{code}", *row) + bytes([0xA5]) * padding)
    row_bytes = width * channels * struct.calcsize(f"<{code}")
    return FakeImage(height, width, encoding, int(big_endian), row_bytes + padding, b"".join(rows))


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("big_endian", [False, True])
def test_image_to_numpy_decodes_hand_packed_bytes(encoding: str, padding: int, big_endian: bool) -> None:
    pixels = random_pixels(encoding, height=4, width=5)
    decoded = image_to_numpy(pack_message(pixels, encoding, padding, big_endian))
    assert decoded.dtype == pixels.dtype and decoded.dtype.isnative
    assert decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize(
    "container",
    [bytes, bytearray, lambda b: array.array("B", b), list, lambda b: np.frombuffer(b, np.uint8)],
    ids=["bytes", "bytearray", "array", "list", "numpy"],
)
def test_every_data_container_decodes_the_same(container: Any) -> None:
    pixels = random_pixels("16UC1", height=3, width=4, seed=1)
    message = pack_message(pixels, "16UC1", padding=2, big_endian=True)
    message.data = container(message.data)
    np.testing.assert_array_equal(image_to_numpy(message), pixels)


def test_decode_color_reorders_channels_and_expands_mono() -> None:
    rgb = random_pixels("rgb8", height=3, width=4, seed=2)
    alpha = np.full((3, 4, 1), 77, dtype=np.uint8)
    cases = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[..., ::-1], alpha], axis=2),
    }
    for encoding, stored in cases.items():
        decoded = decode_color(pack_message(np.ascontiguousarray(stored), encoding, padding=1))
        assert decoded.shape == (3, 4, 3) and decoded.flags.c_contiguous
        np.testing.assert_array_equal(decoded, rgb, err_msg=encoding)
    mono = rgb[..., 0]
    np.testing.assert_array_equal(decode_color(pack_message(mono, "mono8")), np.stack([mono] * 3, axis=2))
    mono16 = mono.astype(np.uint16) * 256 + 255
    np.testing.assert_array_equal(decode_color(pack_message(mono16, "mono16")), np.stack([mono] * 3, axis=2))


def test_decode_depth_from_millimetres_marks_zero_invalid() -> None:
    millimetres = np.array([[0, 1500, 65535], [1, 0, 20000]], dtype=np.uint16)
    expected = np.array([[np.nan, 1.5, 65.535], [0.001, np.nan, 20.0]], dtype=np.float32)
    for encoding in ("16UC1", "mono16"):
        depth = decode_depth(pack_message(millimetres, encoding, padding=2, big_endian=True))
        assert depth.dtype == np.float32
        np.testing.assert_array_equal(depth, expected)


def test_decode_depth_from_metres_marks_nonfinite_and_nonpositive_invalid() -> None:
    metres = np.array([[1.25, np.nan, np.inf], [-np.inf, -2.0, 0.0], [0.5, 80.0, 3e-3]], dtype=np.float32)
    expected = np.array([[1.25, np.nan, np.nan], [np.nan, np.nan, np.nan], [0.5, 80.0, 3e-3]], np.float32)
    for big_endian in (False, True):
        depth = decode_depth(pack_message(metres, "32FC1", padding=1, big_endian=big_endian))
        np.testing.assert_array_equal(depth, expected)
    np.testing.assert_array_equal(decode_depth(pack_message(metres.astype(np.float64), "64FC1")), expected)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "mono16", "16UC1", "32FC1", "rgba8", "64FC1"])
def test_numpy_to_image_round_trip(encoding: str) -> None:
    pixels = random_pixels(encoding, height=5, width=7, seed=3)
    message = numpy_to_image(pixels, encoding, msg_factory=fake_image_factory)
    bytes_per_value = struct.calcsize(f"<{ENCODINGS[encoding][0]}")
    assert (message.height, message.width, message.encoding) == (5, 7, encoding)
    assert message.is_bigendian == 0
    assert message.step == 7 * ENCODINGS[encoding][1] * bytes_per_value
    assert len(message.data) == message.step * 5
    np.testing.assert_array_equal(image_to_numpy(message), pixels)


def test_numpy_to_image_writes_little_endian_from_big_endian_input() -> None:
    pixels = np.array([[1, 258]], dtype=">u2")
    message = numpy_to_image(pixels, "16UC1", msg_factory=fake_image_factory)
    assert bytes(message.data) == struct.pack("<2H", 1, 258)


def test_numpy_to_image_rejects_mismatched_arrays() -> None:
    with pytest.raises(ValueError, match="needs dtype uint16"):
        numpy_to_image(np.zeros((2, 2), np.int32), "16UC1", msg_factory=fake_image_factory)
    with pytest.raises(ValueError, match="3 channel"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "rgb8", msg_factory=fake_image_factory)


class ArrayOnlyImage:
    """Mimics an rclpy message class: keyword constructor, uint8[] data stored as array.array('B')."""

    def __init__(self, **fields: Any) -> None:
        self.header = fields.pop("header", "default-header")
        assert isinstance(fields["data"], array.array) and fields["data"].typecode == "B"
        for name, value in fields.items():
            setattr(self, name, value)


def test_message_classes_get_array_data_and_default_header() -> None:
    pixels = random_pixels("bgr8", height=2, width=3, seed=4)
    message = numpy_to_image(pixels, "bgr8", msg_factory=ArrayOnlyImage)
    assert message.header == "default-header"
    np.testing.assert_array_equal(image_to_numpy(message), pixels)
    with_header = numpy_to_image(pixels, "bgr8", header="cam", msg_factory=ArrayOnlyImage)
    assert with_header.header == "cam"


def smooth_rgb(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 255 // (width + height)], 2
    ).astype(np.uint8)


def test_png_compressed_round_trip_is_exact() -> None:
    rgb = random_pixels("rgb8", height=9, width=11, seed=5)
    message = numpy_to_compressed(rgb, "png", msg_factory=fake_compressed_factory)
    assert message.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(decode_color(message), rgb)
    mono = rgb[..., 1]
    mono_message = numpy_to_compressed(mono, "png", msg_factory=fake_compressed_factory)
    np.testing.assert_array_equal(decode_color(mono_message), np.stack([mono] * 3, axis=2))


def test_jpeg_compressed_round_trip_is_close() -> None:
    rgb = smooth_rgb(48, 64)
    message = numpy_to_compressed(rgb, "jpeg", msg_factory=fake_compressed_factory, jpeg_quality=95)
    decoded = decode_color(message)
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(int) - rgb.astype(int)).mean() < 2.0
    # A channel swap would cost far more than compression does.
    assert np.abs(decoded.astype(int) - rgb[..., ::-1].astype(int)).mean() > 20.0


def test_compressed_color_from_opencv_written_payload() -> None:
    """A JPEG written by another publisher (cv2 on BGR data) decodes to RGB."""
    rgb = smooth_rgb(32, 40)
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    assert ok
    message = FakeCompressed("bgr8; png compressed bgr8", array.array("B", encoded.tobytes()))
    np.testing.assert_array_equal(decode_color(message), rgb)


def compressed_depth_message(
    encoding: str, quant_a: float, quant_b: float, png_values: np.ndarray
) -> FakeCompressed:
    """Per the documented layout: int32 format (0) + float32 A + float32 B, then a 16-bit PNG."""
    ok, png = cv2.imencode(".png", png_values)
    assert ok
    return FakeCompressed(
        f"{encoding}; compressedDepth png", struct.pack("<iff", 0, quant_a, quant_b) + png.tobytes()
    )


def test_compressed_depth_16uc1_round_trip() -> None:
    millimetres = np.array([[0, 750, 1234], [65535, 1, 0]], dtype=np.uint16)
    depth = decode_depth(compressed_depth_message("16UC1", 0.0, 0.0, millimetres))
    expected = np.array([[np.nan, 0.75, 1.234], [65.535, 0.001, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(depth, expected)


def test_compressed_depth_32fc1_inverse_depth_quantisation() -> None:
    depth_max, z0 = 10.0, 100.0
    quant_a = np.float32(z0 * (z0 + 1.0))
    quant_b = np.float32(1.0 - quant_a / depth_max)
    true_depth = np.array([[0.5, 1.0, 2.5], [7.75, 9.99, 12.0]], dtype=np.float32)  # 12 m is beyond max
    quantised = np.where(true_depth < depth_max, quant_a / true_depth + quant_b, 0).astype(np.uint16)
    message = compressed_depth_message("32FC1", float(quant_a), float(quant_b), quantised)
    # Older publishers write the format without the compression name.
    message.format = "32FC1; compressedDepth"
    depth = decode_depth(message)
    assert np.isnan(depth[1, 2])
    valid = quantised != 0
    np.testing.assert_allclose(
        depth[valid], quant_a / (quantised[valid].astype(np.float32) - quant_b), rtol=1e-6
    )
    # Quantisation error of inverse depth grows with depth squared: |dz| <= z^2 / A + rounding.
    tolerance = true_depth[valid] ** 2 / quant_a * 1.01 + 1e-6
    assert np.all(np.abs(depth[valid] - true_depth[valid]) <= tolerance)


def test_rosbags_messages_survive_cdr_and_decode() -> None:
    typestore = get_typestore(Stores.ROS2_JAZZY)
    factories = rosbags_factories(typestore)
    rgb = random_pixels("rgb8", height=4, width=6, seed=6)
    header = factories.header(stamp_ns=3_000_000_007, frame_id="camera")
    message = numpy_to_image(rgb[..., ::-1].copy(), "bgr8", header, msg_factory=factories.image)
    msgtype = "sensor_msgs/msg/Image"
    restored = typestore.deserialize_cdr(typestore.serialize_cdr(message, msgtype), msgtype)
    assert isinstance(restored.data, np.ndarray)
    assert (restored.header.stamp.sec, restored.header.stamp.nanosec) == (3, 7)
    np.testing.assert_array_equal(decode_color(restored), rgb)

    millimetres = np.array([[0, 2000], [3000, 4000]], dtype=np.uint16)
    Image = typestore.types[msgtype]
    hand_built = Image(
        header=factories.header(),
        height=2,
        width=2,
        encoding="16UC1",
        is_bigendian=1,
        step=4,
        data=np.frombuffer(struct.pack(">4H", *millimetres.ravel().tolist()), np.uint8),
    )
    np.testing.assert_array_equal(decode_depth(hand_built), [[np.nan, 2.0], [3.0, 4.0]])

    compressed = numpy_to_compressed(rgb, "png", msg_factory=factories.compressed_image)
    msgtype = "sensor_msgs/msg/CompressedImage"
    restored = typestore.deserialize_cdr(typestore.serialize_cdr(compressed, msgtype), msgtype)
    np.testing.assert_array_equal(decode_color(restored), rgb)


def test_rosbags_class_without_header_is_refused() -> None:
    Image = get_typestore(Stores.ROS2_JAZZY).types["sensor_msgs/msg/Image"]
    with pytest.raises(ValueError, match="explicit header"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "mono8", msg_factory=Image)


@pytest.mark.parametrize(
    ("message", "decoder", "fragment"),
    [
        (FakeImage(2, 2, "yuv422", 0, 4, bytes(8)), image_to_numpy, "unsupported encoding 'yuv422'"),
        (
            FakeImage(2, 3, "rgb8", 0, 9, bytes(17)),
            image_to_numpy,
            "data length 17 does not match step * height = 18",
        ),
        (
            FakeImage(2, 3, "16UC1", 0, 5, bytes(10)),
            image_to_numpy,
            "step 5 is smaller than width * bytes_per_pixel = 6",
        ),
        (FakeImage(0, 3, "mono8", 0, 3, b""), image_to_numpy, "zero-sized image"),
        (FakeImage(3, 0, "mono8", 0, 0, b""), image_to_numpy, "zero-sized image"),
        (FakeImage(1, 2, "mono8", 0, 2, [1, 300]), image_to_numpy, "not a sequence of bytes"),
        (FakeImage(1, 1, "32FC1", 0, 4, bytes(4)), decode_color, "not a colour"),
        (FakeImage(1, 1, "rgb8", 0, 3, bytes(3)), decode_depth, "not a depth encoding"),
        (FakeCompressed("rgb8; jpeg compressed bgr8", b"\xff\xd8garbage"), decode_color, "corrupt"),
        (FakeCompressed("rgb8; jpeg compressed bgr8", b""), decode_color, "empty compressed payload"),
        (FakeCompressed("16UC1; compressedDepth png", bytes(12)), decode_depth, "truncated compressedDepth"),
        (FakeCompressed("16UC1; compressedDepth png", bytes(12) + b"notapng"), decode_depth, "corrupt"),
        (FakeCompressed("16UC1; compressedDepth rvl", bytes(20)), decode_depth, "RVL"),
        (
            FakeCompressed("rgb8; compressedDepth png", bytes(20)),
            decode_depth,
            "unsupported compressedDepth encoding",
        ),
        (FakeCompressed("16UC1; compressedDepth png", bytes(20)), decode_color, "use decode_depth"),
    ],
)
def test_bad_input_raises_image_decode_error(message: Any, decoder: Any, fragment: str) -> None:
    with pytest.raises(ImageDecodeError) as caught:
        decoder(message)
    assert fragment in str(caught.value)


def test_compressed_depth_with_an_8bit_png_is_refused() -> None:
    message = compressed_depth_message("16UC1", 0.0, 0.0, np.zeros((2, 2), np.uint8))
    with pytest.raises(ImageDecodeError, match="single-channel 16-bit"):
        decode_depth(message)


@pytest.mark.ros
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "16UC1", "32FC1"])
def test_matches_cv_bridge(encoding: str) -> None:
    cv_bridge = pytest.importorskip("cv_bridge")
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    pixels = random_pixels(encoding, height=5, width=6, seed=7)
    bridge = cv_bridge.CvBridge()
    ours = numpy_to_image(pixels, encoding, msg_factory=sensor_msgs.Image)
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(ours, "passthrough"), pixels)
    theirs = bridge.cv2_to_imgmsg(pixels, encoding)
    np.testing.assert_array_equal(image_to_numpy(theirs), pixels)
    if encoding in ("rgb8", "bgr8"):
        np.testing.assert_array_equal(decode_color(theirs), bridge.imgmsg_to_cv2(theirs, "rgb8"))
