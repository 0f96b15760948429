"""sensor_msgs Image / CompressedImage <-> numpy, without importing rclpy.

Messages are read by duck typing, so the rclpy classes and the ``rosbags`` typestore classes both
work. ``Image`` needs ``height, width, encoding, is_bigendian, step, data``; ``CompressedImage``
needs ``format, data``. ``data`` may be bytes, bytearray, memoryview, ``array.array('B')``, a list
of ints or a uint8 numpy array.

compressedDepth layout (ROS ``compressed_depth_image_transport``, PNG mode): ``format`` is
``"<encoding>; compressedDepth png"`` (older publishers write ``"<encoding>; compressedDepth"``)
and ``data`` is a 12-byte ``ConfigHeader`` followed by a 16-bit single-channel PNG. The header is
``int32 format`` (0 = inverse-depth coding), ``float32 depthParam[2]`` = (A, B), stored in the
publisher's native byte order, which is little-endian on every platform ROS targets.

- ``16UC1`` / ``mono16``: the PNG holds the depth in millimetres, A and B are unused.
- ``32FC1``: the PNG holds quantised inverse depth ``q = uint16(A / depth + B)`` with
  ``A = z0 * (z0 + 1)`` and ``B = 1 - A / depth_max``; decoding is ``depth = A / (q - B)`` in
  float32 and ``q == 0`` means no depth.

The RVL variant (``"...; compressedDepth rvl"``) is rejected with ``ImageDecodeError``.

Every decoder takes ``max_pixels`` (default ``DEFAULT_MAX_PIXELS``, 16 MP) and refuses larger images
before any pixel is decoded: a raw ``Image`` by its ``height * width``, a compressed one by the
size its JPEG frame header (SOF) or PNG ``IHDR`` chunk declares, read here without decoding. A few
hundred bytes of JPEG can claim 32000x32000 pixels (gigabytes once decoded), so only JPEG and PNG
payloads are accepted: OpenCV would also decode BMP, TIFF, WebP, ... without a size check.
"""

from __future__ import annotations

import array
import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import cv2
import numpy as np

MessageFactory = Callable[..., Any]

DEFAULT_MAX_PIXELS = 16_000_000
# OpenCV's own ceiling (CV_IO_MAX_IMAGE_PIXELS); a limit above it would never be reached.
MAX_PIXELS_CEILING = 1 << 30


class ImageDecodeError(ValueError):
    """A message cannot be converted: bad encoding, inconsistent sizes or corrupt payload."""


class _PixelFormat(NamedTuple):
    dtype: np.dtype  # little-endian; the big-endian variant is derived when a message says so
    channels: int


_PIXEL_FORMATS: dict[str, _PixelFormat] = {
    "rgb8": _PixelFormat(np.dtype("u1"), 3),
    "bgr8": _PixelFormat(np.dtype("u1"), 3),
    "rgba8": _PixelFormat(np.dtype("u1"), 4),
    "bgra8": _PixelFormat(np.dtype("u1"), 4),
    "mono8": _PixelFormat(np.dtype("u1"), 1),
    "mono16": _PixelFormat(np.dtype("<u2"), 1),
    "8UC1": _PixelFormat(np.dtype("u1"), 1),
    "8UC3": _PixelFormat(np.dtype("u1"), 3),
    "8UC4": _PixelFormat(np.dtype("u1"), 4),
    "16UC1": _PixelFormat(np.dtype("<u2"), 1),
    "16SC1": _PixelFormat(np.dtype("<i2"), 1),
    "32FC1": _PixelFormat(np.dtype("<f4"), 1),
    "64FC1": _PixelFormat(np.dtype("<f8"), 1),
}

_TO_RGB = {
    "rgba8": cv2.COLOR_RGBA2RGB,
    "8UC4": cv2.COLOR_RGBA2RGB,
    "bgr8": cv2.COLOR_BGR2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "8UC1": cv2.COLOR_GRAY2RGB,
    "mono16": cv2.COLOR_GRAY2RGB,
}
_MILLIMETRE_DEPTH_ENCODINGS = ("16UC1", "mono16")
_METRE_DEPTH_ENCODINGS = ("32FC1", "64FC1")
_COMPRESSED_DEPTH_HEADER = np.dtype([("format", "<i4"), ("quant_a", "<f4"), ("quant_b", "<f4")])


def _pixel_format(encoding: str) -> _PixelFormat:
    try:
        return _PIXEL_FORMATS[encoding]
    except KeyError:
        supported = ", ".join(_PIXEL_FORMATS)
        raise ImageDecodeError(f"unsupported encoding {encoding!r} (supported: {supported})") from None


def _byte_buffer(data: Any) -> np.ndarray:
    """View (or, for lists, copy) message data as a flat uint8 array."""
    if isinstance(data, np.ndarray):
        if data.dtype.itemsize != 1 or data.dtype.kind not in "ui":
            raise ImageDecodeError(f"data array has dtype {data.dtype}, expected uint8")
        return data.reshape(-1).view(np.uint8)
    if isinstance(data, array.array) and data.itemsize != 1:
        raise ImageDecodeError(f"data array.array has typecode {data.typecode!r}, expected 'B'")
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    if isinstance(data, (list, tuple)):
        try:
            return np.asarray(data, dtype=np.uint8)
        except (OverflowError, ValueError, TypeError) as error:
            raise ImageDecodeError(f"data list is not a sequence of bytes: {error}") from None
    raise ImageDecodeError(f"unsupported data container {type(data).__name__}")


def _integer_field(msg: Any, name: str) -> int:
    value = getattr(msg, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ImageDecodeError(f"{name} must be an integer, got {type(value).__name__}")
    return int(value)


def _check_image_size(height: int, width: int, max_pixels: int) -> None:
    """Raise ``ImageDecodeError`` for a zero, negative or larger than ``max_pixels`` image size."""
    if height == 0 or width == 0:
        raise ImageDecodeError(f"zero-sized image: width {width}, height {height}")
    if height < 0 or width < 0:
        raise ImageDecodeError(f"negative image size: width {width}, height {height}")
    if height * width > max_pixels:
        raise ImageDecodeError(
            f"image of {width}x{height} = {height * width} pixels exceeds the maximum input size of "
            f"{max_pixels} pixels (max_input_pixels)"
        )


def image_to_numpy(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Pixels of an ``Image`` as (H, W) or (H, W, C), C-contiguous, native byte order.

    The result may share memory with ``msg.data`` (and then be read-only); copy it before writing.
    """
    encoding = str(msg.encoding)
    pixel = _pixel_format(encoding)
    height, width, step = (_integer_field(msg, name) for name in ("height", "width", "step"))
    _check_image_size(height, width, max_pixels)
    row_bytes = width * pixel.channels * pixel.dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} is smaller than width * bytes_per_pixel = {row_bytes} for {encoding}"
        )
    buffer = _byte_buffer(msg.data)
    if buffer.size != step * height:
        raise ImageDecodeError(f"data length {buffer.size} does not match step * height = {step * height}")
    stored_dtype = pixel.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    # Dropping the row padding leaves each row contiguous, which is all a dtype view needs.
    pixels = buffer.reshape(height, step)[:, :row_bytes].view(stored_dtype)
    shape = (height, width) if pixel.channels == 1 else (height, width, pixel.channels)
    return np.ascontiguousarray(pixels.reshape(shape), dtype=pixel.dtype.newbyteorder("="))


def _is_compressed(msg: Any) -> bool:
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8"
# JPEG markers without a length field (TEM, RST0-7); SOFn are C0-CF except DHT, JPG and DAC.
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def compressed_image_size(encoded: np.ndarray, format_name: str) -> tuple[int, int]:
    """(height, width) that a JPEG or PNG payload declares, read from its header without decoding.

    Raises ``ImageDecodeError`` for any other payload and for a header that is cut short or malformed.
    """
    data = memoryview(np.ascontiguousarray(encoded, dtype=np.uint8)).cast("B")
    if data[: len(_PNG_SIGNATURE)] == _PNG_SIGNATURE:
        return _png_size(data, format_name)
    if data[: len(_JPEG_SIGNATURE)] == _JPEG_SIGNATURE:
        return _jpeg_size(data, format_name)
    raise ImageDecodeError(
        f"corrupt or unrecognised compressed payload (format {format_name!r}, {len(data)} bytes): "
        "neither a JPEG nor a PNG signature"
    )


def _png_size(data: memoryview, format_name: str) -> tuple[int, int]:
    # The first chunk must be IHDR: length 13, type, then width and height as big-endian uint32.
    header = bytes(data[8:24])
    if len(header) < 16 or header[4:8] != b"IHDR" or int.from_bytes(header[:4], "big") != 13:
        raise ImageDecodeError(f"corrupt PNG payload (format {format_name!r}): no IHDR chunk at its start")
    width, height = int.from_bytes(header[8:12], "big"), int.from_bytes(header[12:16], "big")
    return height, width


def _jpeg_size(data: memoryview, format_name: str) -> tuple[int, int]:
    """Walk the marker segments up to the frame header; stricter than libjpeg, which skips garbage
    between segments, so that any size returned here is the one libjpeg will allocate for."""
    position, size = 2, len(data)
    while True:
        if position >= size or data[position] != 0xFF:
            raise ImageDecodeError(
                f"corrupt JPEG payload (format {format_name!r}): no marker at byte {position} "
                "before the frame header"
            )
        while position < size and data[position] == 0xFF:  # fill bytes
            position += 1
        if position >= size:
            break
        marker = data[position]
        position += 1
        if marker in _JPEG_STANDALONE_MARKERS:
            continue
        # FF 00 is stuffing that libjpeg skips as garbage, so it must not be read as a segment here.
        if marker in (0x00, 0xD8, 0xD9, 0xDA) or position + 2 > size:
            break
        length = (data[position] << 8) | data[position + 1]
        if marker in _JPEG_FRAME_MARKERS:
            if length < 8 or position + 7 > size:
                break
            height = (data[position + 3] << 8) | data[position + 4]
            width = (data[position + 5] << 8) | data[position + 6]
            return height, width
        if length < 2:
            break
        position += length
    raise ImageDecodeError(f"corrupt JPEG payload (format {format_name!r}): no frame header (SOF marker)")


def _imdecode(encoded: np.ndarray, flags: int, format_name: str, max_pixels: int) -> np.ndarray:
    if encoded.size == 0:
        raise ImageDecodeError(f"empty compressed payload (format {format_name!r})")
    height, width = compressed_image_size(encoded, format_name)
    _check_image_size(height, width, max_pixels)
    try:
        image = cv2.imdecode(encoded, flags)
    except cv2.error:
        image = None
    if image is None:
        raise ImageDecodeError(
            f"corrupt or unrecognised compressed payload (format {format_name!r}, {encoded.size} bytes)"
        )
    return image


def decode_color(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an ``Image`` or a JPEG/PNG ``CompressedImage``.

    Mono images are replicated to three channels (mono16 keeps its high byte), alpha is dropped.
    The generic 8UC3/8UC4 encodings carry no channel order and are taken as RGB(A). An rgb8/8UC3
    result may share memory with ``msg.data``, like ``image_to_numpy``.
    """
    if _is_compressed(msg):
        return _decode_compressed_color(msg, max_pixels)
    encoding = str(msg.encoding)
    pixels = image_to_numpy(msg, max_pixels)
    if encoding in ("rgb8", "8UC3"):
        return pixels
    if encoding == "mono16":
        pixels = (pixels >> 8).astype(np.uint8)
    # cv2.cvtColor rather than numpy channel slicing: a reversed-channel copy is ~50x slower in numpy.
    conversion = _TO_RGB.get(encoding)
    if conversion is not None:
        return cv2.cvtColor(pixels, conversion)
    raise ImageDecodeError(f"encoding {encoding!r} is not a colour or mono image encoding")


def _decode_compressed_color(msg: Any, max_pixels: int) -> np.ndarray:
    format_name = str(msg.format)
    if "compresseddepth" in format_name.lower():
        raise ImageDecodeError(f"format {format_name!r} is a compressed depth image; use decode_depth")
    bgr_or_rgb = _imdecode(_byte_buffer(msg.data), cv2.IMREAD_COLOR, format_name, max_pixels)
    # image_transport writes "<enc>; jpeg compressed <payload enc>"; cv2 returns the payload's
    # channel order, which is BGR unless the publisher says it compressed rgb8 as is.
    if format_name.strip().endswith("compressed rgb8"):
        return bgr_or_rgb
    return cv2.cvtColor(bgr_or_rgb, cv2.COLOR_BGR2RGB)


def decode_depth(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W) float32 depth in metres, NaN where invalid, from an ``Image`` or compressedDepth message.

    16UC1/mono16 are millimetres with 0 = invalid; 32FC1/64FC1 are metres with NaN, inf and
    values <= 0 invalid.
    """
    if _is_compressed(msg):
        return _decode_compressed_depth(msg, max_pixels)
    encoding = str(msg.encoding)
    if encoding in _MILLIMETRE_DEPTH_ENCODINGS:
        return _millimetres_to_metres(image_to_numpy(msg, max_pixels))
    if encoding in _METRE_DEPTH_ENCODINGS:
        with np.errstate(over="ignore", invalid="ignore"):  # 64-bit values beyond float32 become inf
            metres = image_to_numpy(msg, max_pixels).astype(np.float32)
        return _invalidate_nonpositive(metres)
    expected = ", ".join(_MILLIMETRE_DEPTH_ENCODINGS + _METRE_DEPTH_ENCODINGS)
    raise ImageDecodeError(f"encoding {encoding!r} is not a depth encoding (expected {expected})")


def _millimetres_to_metres(millimetres: np.ndarray) -> np.ndarray:
    metres = millimetres.astype(np.float32)
    metres /= np.float32(1000.0)
    metres[millimetres == 0] = np.nan
    return metres


def _invalidate_nonpositive(metres: np.ndarray) -> np.ndarray:
    metres[~((metres > 0) & np.isfinite(metres))] = np.nan
    return metres


def _decode_compressed_depth(msg: Any, max_pixels: int) -> np.ndarray:
    format_name = str(msg.format)
    encoding, _, transport = (part.strip() for part in format_name.partition(";"))
    if transport and not transport.startswith("compressedDepth"):
        raise ImageDecodeError(f"format {format_name!r} is not a compressedDepth image")
    if "rvl" in transport:
        raise ImageDecodeError(f"RVL compressedDepth payloads are not supported (format {format_name!r})")
    if encoding not in _MILLIMETRE_DEPTH_ENCODINGS and encoding != "32FC1":
        raise ImageDecodeError(f"unsupported compressedDepth encoding {encoding!r} (expected 16UC1 or 32FC1)")
    payload = _byte_buffer(msg.data)
    header_size = _COMPRESSED_DEPTH_HEADER.itemsize
    if payload.size <= header_size:
        raise ImageDecodeError(
            f"truncated compressedDepth payload: {payload.size} bytes, "
            f"need a {header_size}-byte header and a PNG"
        )
    header = payload[:header_size].copy().view(_COMPRESSED_DEPTH_HEADER)[0]
    quantised = _imdecode(payload[header_size:], cv2.IMREAD_UNCHANGED, format_name, max_pixels)
    if quantised.dtype != np.uint16 or quantised.ndim != 2:
        raise ImageDecodeError(
            "compressedDepth PNG must be single-channel 16-bit, "
            f"got {quantised.dtype} with shape {quantised.shape}"
        )
    if encoding in _MILLIMETRE_DEPTH_ENCODINGS:
        return _millimetres_to_metres(quantised)
    with np.errstate(divide="ignore", invalid="ignore"):
        metres = header["quant_a"] / (quantised.astype(np.float32) - header["quant_b"])
    metres[quantised == 0] = np.nan
    return _invalidate_nonpositive(metres)


def _build_message(msg_factory: MessageFactory, header: Any, fields: dict[str, Any]) -> Any:
    """Call the factory with ``fields``; ``fields['data']`` arrives as bytes and is adapted here.

    rclpy classes (plain classes) get ``array.array('B')``, which their uint8[] setter stores
    without a per-element check; rosbags dataclasses and custom factories get a uint8 numpy array.
    """
    data = fields.pop("data")
    is_rosbags_class = dataclasses.is_dataclass(msg_factory)
    if header is not None:
        fields["header"] = header
    elif is_rosbags_class:
        raise ValueError("rosbags message classes need an explicit header; use rosbags_factories(typestore)")
    if isinstance(msg_factory, type) and not is_rosbags_class:
        fields["data"] = array.array("B", data)
    else:
        fields["data"] = np.frombuffer(data, dtype=np.uint8)
    return msg_factory(**fields)


def numpy_to_image(
    pixels: np.ndarray, encoding: str, header: Any = None, *, msg_factory: MessageFactory
) -> Any:
    """An ``Image`` message (little-endian, unpadded rows) holding ``pixels``.

    ``pixels`` must already have the encoding's dtype and channel count: (H, W) or (H, W, 1) for
    one channel, (H, W, C) otherwise. ``msg_factory`` is the message class (rclpy or rosbags) or a
    callable taking the fields as keyword arguments. ``header=None`` leaves the rclpy default.
    """
    pixel = _pixel_format(encoding)
    pixels = np.asarray(pixels)
    if pixel.channels == 1 and pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    expected_ndim = 2 if pixel.channels == 1 else 3
    if pixels.ndim != expected_ndim or (expected_ndim == 3 and pixels.shape[2] != pixel.channels):
        raise ValueError(f"{encoding} needs {pixel.channels} channel(s), got array of shape {pixels.shape}")
    if pixels.dtype.kind != pixel.dtype.kind or pixels.dtype.itemsize != pixel.dtype.itemsize:
        raise ValueError(f"{encoding} needs dtype {pixel.dtype.name}, got {pixels.dtype}")
    height, width = pixels.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"cannot encode a zero-sized image of shape {pixels.shape}")
    little_endian = np.ascontiguousarray(pixels, dtype=pixel.dtype)
    fields = {
        "height": int(height),
        "width": int(width),
        "encoding": encoding,
        "is_bigendian": 0,
        "step": int(width * pixel.channels * pixel.dtype.itemsize),
        "data": little_endian.tobytes(),
    }
    return _build_message(msg_factory, header, fields)


def numpy_to_compressed(
    image: np.ndarray,
    format: str = "jpeg",
    header: Any = None,
    *,
    msg_factory: MessageFactory,
    jpeg_quality: int = 90,
    png_level: int = 3,
) -> Any:
    """A ``CompressedImage`` from (H, W, 3) uint8 RGB or (H, W) uint8 mono, as image_transport writes it."""
    if format not in ("jpeg", "png"):
        raise ValueError(f"format must be 'jpeg' or 'png', got {format!r}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected (H, W, 3) or (H, W) uint8, got {image.dtype} with shape {image.shape}")
    if image.ndim == 3:
        payload_image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        format_name = f"rgb8; {format} compressed bgr8"
    else:
        payload_image = np.ascontiguousarray(image)
        format_name = f"mono8; {format} compressed mono8"
    if format == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    else:
        params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)]
    ok, encoded = cv2.imencode(f".{format}", payload_image, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {format}")
    return _build_message(msg_factory, header, {"format": format_name, "data": encoded.tobytes()})


class RosbagsFactories(NamedTuple):
    """Message makers for one rosbags typestore; ``image``/``compressed_image`` fill a zero header."""

    image: MessageFactory
    compressed_image: MessageFactory
    header: Callable[..., Any]


def rosbags_factories(typestore: Any) -> RosbagsFactories:
    """Factories for ``numpy_to_image``/``numpy_to_compressed`` from e.g.
    ``rosbags.typesys.get_typestore(Stores.ROS2_JAZZY)``."""
    types = typestore.types
    header_class = types["std_msgs/msg/Header"]
    time_class = types["builtin_interfaces/msg/Time"]

    def header(stamp_ns: int = 0, frame_id: str = "") -> Any:
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        return header_class(stamp=time_class(sec=sec, nanosec=nanosec), frame_id=frame_id)

    def with_default_header(message_class: Any) -> MessageFactory:
        def make(**fields: Any) -> Any:
            fields.setdefault("header", header())
            return message_class(**fields)

        return make

    return RosbagsFactories(
        image=with_default_header(types["sensor_msgs/msg/Image"]),
        compressed_image=with_default_header(types["sensor_msgs/msg/CompressedImage"]),
        header=header,
    )
