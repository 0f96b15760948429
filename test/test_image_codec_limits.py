"""The codec's maximum input size, header parsing without decoding, and a fuzz run over message fields.

Every compressed payload here is made by OpenCV's encoder or laid out by hand (struct, zlib), with
the frame header patched to claim sizes the payload does not hold: a decompression bomb.
"""

from __future__ import annotations

import array
import struct
import zlib
from typing import Any

import cv2
import numpy as np
import pytest
from test_image_codec import FakeCompressed, FakeImage

from openset_perception import image_codec
from openset_perception.image_codec import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    compressed_image_size,
    decode_color,
    decode_depth,
    image_to_numpy,
)

JPEG_FORMAT = "rgb8; jpeg compressed bgr8"
PNG_FORMAT = "rgb8; png compressed bgr8"


def encode(image: np.ndarray, extension: str, *params: int) -> bytes:
    ok, encoded = cv2.imencode(extension, image, list(params))
    assert ok
    return encoded.tobytes()


def sof_offset(jpeg: bytes) -> int:
    """Offset of the SOF0/SOF2 segment's height field, found by the marker walk of the JPEG spec."""
    position = 2
    while True:
        marker, length = jpeg[position + 1], struct.unpack(">H", jpeg[position + 2 : position + 4])[0]
        if marker in (0xC0, 0xC2):
            return position + 5
        position += 2 + length


def claim_jpeg_size(jpeg: bytes, height: int, width: int) -> bytes:
    offset = sof_offset(jpeg)
    return jpeg[:offset] + struct.pack(">HH", height, width) + jpeg[offset + 4 :]


def png_bomb(height: int, width: int, rows: int = 4) -> bytes:
    """A valid-looking 8-bit grey PNG header claiming height x width, with a few zero rows of data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(bytes((width + 1) * rows), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def imdecode(*_: Any) -> None:
        raise AssertionError("the payload was decoded before its size was checked")

    monkeypatch.setattr(image_codec.cv2, "imdecode", imdecode)


def test_a_jpeg_claiming_32000_squared_pixels_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bomb = claim_jpeg_size(encode(np.zeros((8, 8, 3), np.uint8), ".jpg"), 32000, 32000)
    assert len(bomb) < 1000
    assert compressed_image_size(np.frombuffer(bomb, np.uint8), "jpeg") == (32000, 32000)
    forbid_decoding(monkeypatch)
    with pytest.raises(ImageDecodeError, match=r"32000x32000 = 1024000000 pixels exceeds .* 16000000"):
        decode_color(FakeCompressed(JPEG_FORMAT, bomb))
    with pytest.raises(ImageDecodeError, match="4096x4096 = 16777216 pixels exceeds"):
        decode_color(FakeCompressed(JPEG_FORMAT, claim_jpeg_size(bomb, 4096, 4096)))


def test_a_png_bomb_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = png_bomb(20000, 20000)
    forbid_decoding(monkeypatch)
    with pytest.raises(ImageDecodeError, match="20000x20000 = 400000000 pixels exceeds"):
        decode_color(FakeCompressed(PNG_FORMAT, bomb))
    depth = FakeCompressed("16UC1; compressedDepth png", struct.pack("<iff", 0, 0.0, 0.0) + bomb)
    with pytest.raises(ImageDecodeError, match="exceeds the maximum input size"):
        decode_depth(depth)


def test_raw_images_are_limited_by_height_times_width() -> None:
    message = FakeImage(40, 50, "mono8", 0, 50, bytes(2000))
    assert image_to_numpy(message, max_pixels=2000).shape == (40, 50)
    for decoder in (image_to_numpy, decode_color):
        with pytest.raises(
            ImageDecodeError, match="50x40 = 2000 pixels exceeds the maximum input size of 1999"
        ):
            decoder(message, max_pixels=1999)
    depth = FakeImage(40, 50, "16UC1", 0, 100, bytes(4000))
    with pytest.raises(ImageDecodeError, match="exceeds"):
        decode_depth(depth, max_pixels=1999)
    # The size is judged before the data: a huge claim with no data says so, not "data length".
    with pytest.raises(ImageDecodeError, match="exceeds"):
        image_to_numpy(FakeImage(100_000, 100_000, "rgb8", 0, 300_000, b""))


@pytest.mark.parametrize(
    ("height", "width", "step", "fragment"),
    [
        (-2, -3, -9, "negative image size"),
        (-1, 4, 4, "negative image size"),
        (4, -1, 4, "negative image size"),
        (0, 4, 4, "zero-sized image"),
        (2, 3, -9, "step -9 is smaller"),
    ],
)
def test_negative_and_zero_sizes_are_refused_clearly(
    height: int, width: int, step: int, fragment: str
) -> None:
    # The data length matches step * height, so only the size check can refuse these.
    message = FakeImage(height, width, "rgb8", 0, step, bytes(max(step * height, 0)))
    with pytest.raises(ImageDecodeError, match=fragment):
        image_to_numpy(message)


@pytest.mark.parametrize("value", [None, "48", 48.0, True, [48]])
def test_non_integer_sizes_are_refused(value: Any) -> None:
    message = FakeImage(48, 2, "mono8", 0, 2, bytes(96))
    message.height = value
    with pytest.raises(ImageDecodeError, match="height must be an integer"):
        image_to_numpy(message)


@pytest.mark.parametrize(
    "payload",
    [
        encode(np.zeros((37, 53, 3), np.uint8), ".jpg"),
        encode(np.zeros((37, 53), np.uint8), ".jpg"),
        encode(np.full((61, 29, 3), 77, np.uint8), ".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        encode(np.full((61, 29, 3), 77, np.uint8), ".jpg", cv2.IMWRITE_JPEG_RST_INTERVAL, 1),
        encode(np.zeros((37, 53, 3), np.uint8), ".png"),
        encode(np.zeros((5, 300), np.uint16), ".png"),
    ],
)
def test_header_size_is_the_size_opencv_decodes(payload: bytes) -> None:
    encoded = np.frombuffer(payload, np.uint8)
    decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    assert compressed_image_size(encoded, "test") == decoded.shape[:2]


def test_segments_before_the_frame_header_are_skipped_by_their_length() -> None:
    jpeg = encode(np.zeros((37, 53, 3), np.uint8), ".jpg")
    # An APP1 segment whose contents look like a frame header claiming 32000x32000 (an EXIF thumbnail).
    fake_sof = b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", 32000, 32000) + bytes(12)
    app1 = b"\xff\xe1" + struct.pack(">H", len(fake_sof) + 2) + fake_sof
    with_app1 = jpeg[:2] + app1 + jpeg[2:]
    message = FakeCompressed(JPEG_FORMAT, with_app1)
    assert decode_color(message, max_pixels=37 * 53).shape == (37, 53, 3)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (encode(np.zeros((8, 8, 3), np.uint8), ".bmp"), "neither a JPEG nor a PNG"),
        (encode(np.zeros((8, 8, 3), np.uint8), ".tiff"), "neither a JPEG nor a PNG"),
        (b"\xff\xd8\xff\xe0\x00", "no frame header"),
        (b"\xff\xd8\xff\x00\x00\x10" + bytes(40), "no frame header"),  # stuffing, where libjpeg resyncs
        (b"\xff\xd8\xff\xda\x00\x08" + bytes(40), "no frame header"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIDAT" + bytes(20), "no IHDR"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "no IHDR"),
    ],
)
def test_other_formats_and_malformed_headers_are_refused(payload: bytes, fragment: str) -> None:
    with pytest.raises(ImageDecodeError, match=fragment):
        decode_color(FakeCompressed(JPEG_FORMAT, payload))


def test_the_default_limit_is_16_megapixels() -> None:
    assert DEFAULT_MAX_PIXELS == 16_000_000
    side = 4000
    big = FakeImage(side, side, "mono8", 0, side, np.zeros(side * side, np.uint8))
    assert decode_color(big).shape == (side, side, 3)


# Fuzz ----------------------------------------------------------------------------------------------

SIZES: list[Any] = [-(2**31), -1, 0, 1, 2, 3, 31, 32, 33, 2**16, 2**32 + 5, 10**12, True, 3.0, "4", None]
ENCODINGS: list[Any] = [*image_codec._PIXEL_FORMATS, "", "yuv422", "RGB8", 5, None]


def random_data(rng: np.random.Generator, length: int) -> Any:
    raw = rng.integers(0, 256, max(0, min(length, 1 << 16)), dtype=np.uint8)
    makers = [
        raw.tobytes,
        lambda: bytearray(raw.tobytes()),
        lambda: raw.tolist(),
        lambda: array.array("B", raw.tobytes()),
        lambda: memoryview(raw.tobytes()),
        lambda: raw,
        lambda: raw.astype(np.int16),
        lambda: [300] * min(length, 8),
        lambda: None,
        lambda: "pixels",
    ]
    return makers[int(rng.integers(len(makers)))]()


def random_image_message(rng: np.random.Generator) -> FakeImage:
    height, width = (
        SIZES[int(rng.integers(len(SIZES)))] if rng.random() < 0.6 else int(rng.integers(1, 40))
        for _ in range(2)
    )
    encoding = ENCODINGS[int(rng.integers(len(ENCODINGS)))]
    step: Any = SIZES[int(rng.integers(len(SIZES)))]
    if rng.random() < 0.6 and isinstance(width, int) and encoding in image_codec._PIXEL_FORMATS:
        pixel = image_codec._PIXEL_FORMATS[encoding]
        step = width * pixel.channels * pixel.dtype.itemsize + int(rng.integers(0, 3))
    length = step * height if isinstance(step, int) and isinstance(height, int) else int(rng.integers(0, 64))
    if rng.random() < 0.3:
        length += int(rng.integers(-3, 4))
    big_endian = [0, 1, 2, True, None, "yes"][int(rng.integers(6))]
    return FakeImage(height, width, encoding, big_endian, step, random_data(rng, length))


def random_compressed_message(rng: np.random.Generator, seeds: list[bytes]) -> FakeCompressed:
    payload = bytearray(seeds[int(rng.integers(len(seeds)))])
    mutation = int(rng.integers(4))
    if mutation == 0:  # overwrite header bytes
        for _ in range(int(rng.integers(1, 4))):
            payload[int(rng.integers(0, min(len(payload), 200)))] = int(rng.integers(256))
    elif mutation == 1:  # cut short
        del payload[int(rng.integers(0, len(payload))) :]
    elif mutation == 2 and payload[:2] == b"\xff\xd8":  # claim another size
        payload = bytearray(
            claim_jpeg_size(bytes(payload), int(rng.integers(0, 3000)), int(rng.integers(0, 3000)))
        )
    elif mutation == 2:
        payload[16:24] = struct.pack(">II", int(rng.integers(0, 3000)), int(rng.integers(0, 3000)))
    formats = [JPEG_FORMAT, PNG_FORMAT, "16UC1; compressedDepth png", "", "rgb8; rvl"]
    return FakeCompressed(formats[int(rng.integers(len(formats)))], bytes(payload))


def test_fuzzed_raw_messages_decode_or_raise_image_decode_error() -> None:
    rng = np.random.default_rng(16)
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(600):
        message = random_image_message(rng)
        for decoder in (image_to_numpy, decode_color, decode_depth):
            try:
                pixels = decoder(message, max_pixels=4096)
            except ImageDecodeError:
                outcomes["refused"] += 1
                continue
            outcomes["decoded"] += 1
            assert pixels.shape[:2] == (message.height, message.width)
    assert outcomes["decoded"] > 50 and outcomes["refused"] > 50  # the fuzz reached both sides


def test_fuzzed_compressed_payloads_never_decode_beyond_the_limit() -> None:
    rng = np.random.default_rng(1616)
    image = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    seeds = [
        encode(image, ".jpg"),
        encode(image, ".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        encode(image, ".png"),
    ]
    limit = 64 * 64
    decoded = 0
    for _ in range(300):
        message = random_compressed_message(rng, seeds)
        for decoder in (decode_color, decode_depth):
            try:
                pixels = decoder(message, max_pixels=limit)
            except ImageDecodeError:
                continue
            decoded += 1
            assert pixels.shape[0] * pixels.shape[1] <= limit
    assert decoded > 20
