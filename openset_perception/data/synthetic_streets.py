"""Procedural street scenes with exact labels, metric depth and optional test-time anomalies.

Frame i is a pure function of (seed, stream, i): random access, no state. The camera is a pinhole with
zero pitch and roll at 1.2-1.8 m over a flat ground plane (X right, Y down, Z forward), so a ground pixel
in row v has depth f * height / (v - horizon_row). Everything that stands on the ground (facades along the
road, a far backdrop, cars, poles, trees, anomalies) is a vertical surface at its own depth, composited
with a depth buffer. Sky has NaN depth.

Two families of unknown objects that never share a shape or a texture:

- Test-time anomalies (``SyntheticStreets(anomalies=True)``): 1-3 per frame, standing on the road 5-50 m
  ahead: crates, quadrupeds (ellipse body, head, legs), upright tyres (rings) and spiky stars, covered
  with hard-edged checker, stripe or dot patterns in two saturated colours (magenta, cyan, yellow, ...).
  They get ``anomaly`` = 1 and ``semantic`` = K (unknown).
- Training negatives (``random_negative_patch``): one random polygon or rotated ellipse filled with a
  smooth, pattern-free texture (linear or radial gradient, multicolour blotches, two-tone clouds) in
  arbitrary RGB colours plus noise. Training on them never shows the model a test-time anomaly.

Known classes never use saturated pattern textures, so the anomalies are recognisable as unknown but not
by a single colour lookup: every class has texture noise, and lighting, tint, haze and sensor noise vary
per frame.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from openset_perception.data.folder import write_folder_dataset
from openset_perception.data.sample import DatasetInfo, Sample

STREET_CLASSES = ("road", "sidewalk", "building", "vegetation", "terrain", "sky", "car", "pole")
STREET_PALETTE = [
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (0, 0, 142),
    (153, 153, 153),
]
ROAD, SIDEWALK, BUILDING, VEGETATION, TERRAIN, SKY, CAR, POLE = range(len(STREET_CLASSES))
UNKNOWN = len(STREET_CLASSES)

CAMERA_HEIGHT_RANGE_M = (1.2, 1.8)
ANOMALY_DEPTH_RANGE_M = (5.0, 50.0)
DEFAULT_SPLITS = {"train": 200, "val": 50, "test": 50}

_SATURATED = np.array(
    [(255, 0, 255), (0, 255, 255), (255, 255, 0), (255, 120, 0), (120, 255, 0), (150, 0, 255), (255, 0, 120)],
    dtype=np.float32,
)
_CAR_COLOURS = np.array(
    [
        (225, 225, 222),
        (170, 172, 175),
        (32, 32, 36),
        (82, 84, 88),
        (140, 28, 28),
        (32, 52, 118),
        (36, 72, 52),
    ],
    dtype=np.float32,
)
_FACADE_COLOURS = np.array(
    [(190, 175, 150), (150, 150, 150), (150, 82, 62), (214, 208, 198), (95, 95, 100), (200, 180, 125)],
    dtype=np.float32,
)
_HEDGE_COLOUR = np.array([60, 100, 40], np.float32)
_DARK_GLASS = np.array([50, 60, 75], np.float32)
_BRIGHT_GLASS = np.array([120, 140, 160], np.float32)
_BACKDROP_TREES = np.array([45, 75, 40], np.float32)
_SIDEWALK_COLOURS = np.array([(165, 165, 160), (170, 125, 112), (182, 172, 152)], dtype=np.float32)
_TERRAIN_COLOURS = np.array([(95, 125, 60), (140, 130, 82)], dtype=np.float32)

Shade = tuple[np.ndarray, np.ndarray, int]  # (mask, colour, label)


@dataclass(frozen=True)
class StreetCamera:
    """Pinhole camera of one frame; the horizon is the principal-point row because pitch is zero."""

    focal_px: float
    cx: float
    horizon_row: float
    height_m: float


@dataclass(frozen=True)
class _Road:
    offset_m: float
    yaw: float
    curvature: float
    lane_width: float
    lanes: int
    sidewalk_left: float
    sidewalk_right: float

    @property
    def half_width(self) -> float:
        return 0.5 * self.lane_width * self.lanes

    def center(self, z: np.ndarray | float) -> np.ndarray | float:
        return self.offset_m + self.yaw * z + 0.5 * self.curvature * z * z

    def sidewalk(self, side: int) -> float:
        return self.sidewalk_left if side < 0 else self.sidewalk_right


@dataclass(frozen=True)
class _Lighting:
    gain: float
    tint: np.ndarray
    gamma: float
    noise_sigma: float
    sky_horizon: np.ndarray
    sky_zenith: np.ndarray
    visibility_m: float
    facade_shade: dict[int, float]
    cloud_shadow: float


@dataclass
class _Roadside:
    """Facade segments along both road sides, one entry per segment."""

    side: np.ndarray
    offset: np.ndarray
    z_start: np.ndarray
    z_end: np.ndarray
    is_building: np.ndarray
    top: np.ndarray
    colour: np.ndarray
    window_colour: np.ndarray
    window_spacing: np.ndarray
    window_width: np.ndarray
    floor_height: np.ndarray
    phase: np.ndarray


@dataclass
class _Backdrop:
    depth: float
    is_building: bool
    block_width: float
    block_tops: np.ndarray
    block_colours: np.ndarray
    wave: np.ndarray


@dataclass
class _Prop:
    """A vertical object standing at (x, z): a billboard whose shape and colour come from `shade`."""

    kind: str
    x: float
    z: float
    half_width: float
    top: float
    shade: Callable[[np.ndarray, np.ndarray, np.ndarray, float], Shade]  # (x, y, grain, metres per pixel)
    base_half_width: float  # of what touches the ground (trunk, shaft, body), for collisions
    footprint_length: float = 0.5


@dataclass
class _Layout:
    camera: StreetCamera
    road: _Road
    lighting: _Lighting
    roadside: _Roadside
    backdrop: _Backdrop
    marks: dict[str, float]
    ground_colours: dict[str, np.ndarray]
    props: list[_Prop] = field(default_factory=list)


class _Materials:
    """Colour table for background surfaces: pixels store a material id and a brightness factor."""

    def __init__(self) -> None:
        self._colours: list[np.ndarray] = [np.zeros((1, 3), np.float32)]  # SKY_MATERIAL, coloured separately
        self._grain: list[np.ndarray] = [np.zeros(1, np.float32)]
        self._count = 1

    def add(self, colours: np.ndarray, grain: np.ndarray | float) -> np.ndarray:
        """Register colours (N x 3) with texture-noise amplitudes; returns their N ids."""
        colours = np.asarray(colours, np.float32).reshape(-1, 3)
        self._colours.append(colours)
        self._grain.append(np.broadcast_to(np.asarray(grain, np.float32), len(colours)))
        ids = np.arange(self._count, self._count + len(colours))
        self._count += len(colours)
        return ids

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self._colours), np.concatenate(self._grain)


SKY_MATERIAL = 0


class _Canvas:
    """Depth-buffered frame: background surfaces are shaded later from materials, props paint colour."""

    def __init__(self, height: int, width: int) -> None:
        self.label = np.full((height, width), SKY, np.uint8)
        self.depth = np.full((height, width), np.inf, np.float32)
        self.anomaly = np.zeros((height, width), np.uint8)
        self.material = np.full((height, width), SKY_MATERIAL, np.intp)  # np.take wants intp
        self.brightness = np.ones((height, width), np.float32)
        self.colour = np.zeros((3, height, width), np.float32)  # planar: per-channel ops stay contiguous

    def paint_surface(
        self,
        first_row: int,
        mask: np.ndarray,
        depth: np.ndarray | float,
        label: np.ndarray | int,
        material: np.ndarray | int,
        brightness: np.ndarray | float,
    ) -> None:
        """Background surface over rows first_row.. and all columns, kept where it is nearest."""
        rows = slice(first_row, first_row + mask.shape[0])
        visible = mask & (depth < self.depth[rows])
        np.copyto(self.depth[rows], depth, where=visible, casting="unsafe")
        np.copyto(self.label[rows], label, where=visible, casting="unsafe")
        np.copyto(self.material[rows], material, where=visible, casting="unsafe")
        np.copyto(self.brightness[rows], brightness, where=visible, casting="unsafe")

    def paint_prop(
        self,
        top_left: tuple[int, int],
        mask: np.ndarray,
        depth: float,
        colour: np.ndarray,
        label: int,
        anomaly: bool,
    ) -> None:
        rows = slice(top_left[0], top_left[0] + mask.shape[0])
        cols = slice(top_left[1], top_left[1] + mask.shape[1])
        visible = mask & (depth < self.depth[rows, cols])
        self.depth[rows, cols][visible] = depth
        self.label[rows, cols][visible] = label
        self.anomaly[rows, cols][visible] = 1 if anomaly else 0
        np.copyto(self.colour[:, rows, cols], np.moveaxis(colour, -1, 0), where=visible, casting="unsafe")


@dataclass
class _NoiseFields:
    grain: np.ndarray
    blotch: np.ndarray
    fine_blotch: np.ndarray
    clouds: np.ndarray
    sensor: np.ndarray


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    grid = rng.random((int(np.ceil(height / cell)) + 2, int(np.ceil(width / cell)) + 2), dtype=np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _unit_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance uniform noise; random bytes are several times faster than normals."""
    values = np.frombuffer(rng.bytes(int(np.prod(shape))), np.uint8).reshape(shape).astype(np.float32)
    values -= 127.5
    values *= np.float32(np.sqrt(12) / 256)
    return values


def _noise_fields(rng: np.random.Generator, height: int, width: int) -> _NoiseFields:
    scale = max(height, width)
    return _NoiseFields(
        grain=_unit_noise(rng, (height, width)),
        blotch=_smooth_noise(rng, height, width, scale / 10),
        fine_blotch=_smooth_noise(rng, height, width, scale / 48),
        clouds=_smooth_noise(rng, height, width, scale / 6),
        sensor=_unit_noise(rng, (height, width, 3)),
    )


def _jitter(rng: np.random.Generator, colour: np.ndarray, amount: float) -> np.ndarray:
    return (colour + rng.uniform(-amount, amount, 3)).astype(np.float32)


def _sample_camera(rng: np.random.Generator, height: int, width: int, fov_deg: float) -> StreetCamera:
    focal = 0.5 * width / np.tan(np.radians(fov_deg) / 2)
    return StreetCamera(
        focal_px=float(focal),
        cx=float(0.5 * width + rng.uniform(-0.02, 0.02) * width),
        horizon_row=float(rng.uniform(0.40, 0.50) * height),
        height_m=float(rng.uniform(*CAMERA_HEIGHT_RANGE_M)),
    )


def _sample_road(rng: np.random.Generator) -> _Road:
    lanes = int(rng.choice([2, 3, 4], p=[0.4, 0.4, 0.2]))
    lane_width = float(rng.uniform(3.0, 3.7))
    camera_lane = int(rng.integers(lanes))
    camera_from_left_edge = (camera_lane + 0.5 + rng.uniform(-0.12, 0.12)) * lane_width
    straight = rng.random() < 0.4
    return _Road(
        offset_m=float(0.5 * lanes * lane_width - camera_from_left_edge),
        yaw=float(rng.uniform(-0.04, 0.04)),
        curvature=0.0 if straight else float(rng.uniform(-1 / 400, 1 / 400)),
        lane_width=lane_width,
        lanes=lanes,
        sidewalk_left=float(rng.uniform(1.5, 4.0)),
        sidewalk_right=float(rng.uniform(1.5, 4.0)),
    )


def _sample_lighting(rng: np.random.Generator) -> _Lighting:
    lit_side = 1 if rng.random() < 0.5 else -1
    return _Lighting(
        gain=float(rng.uniform(0.65, 1.25)),
        tint=(1 + rng.uniform(-1, 1) * np.array([0.08, 0.0, -0.08])).astype(np.float32),
        gamma=float(rng.uniform(0.85, 1.2)),
        noise_sigma=float(rng.uniform(1.5, 5.0)),
        sky_horizon=_jitter(rng, np.array([205, 215, 230], np.float32), 20),
        sky_zenith=_jitter(rng, np.array([90, 145, 215], np.float32), 30),
        visibility_m=float(rng.uniform(300, 1500)),
        facade_shade={lit_side: float(rng.uniform(0.95, 1.1)), -lit_side: float(rng.uniform(0.6, 0.8))},
        cloud_shadow=float(rng.uniform(0.0, 0.35)),
    )


def _sample_roadside(rng: np.random.Generator, road: _Road, far_z: float) -> _Roadside:
    segments: list[dict[str, object]] = []
    for side in (-1, 1):
        z = -5.0
        while z < far_z:
            length = float(rng.uniform(8, 40))
            kind = int(rng.choice(3, p=[0.6, 0.25, 0.15]))  # building, hedge, gap
            if kind < 2:
                is_building = kind == 0
                setback = 0.0 if rng.random() < 0.5 else float(rng.uniform(0.5, 4.0))
                spacing = float(rng.uniform(2.5, 4.5))
                base = _FACADE_COLOURS[rng.integers(len(_FACADE_COLOURS))] if is_building else _HEDGE_COLOUR
                glass = _DARK_GLASS if rng.random() < 0.6 else _BRIGHT_GLASS
                segments.append(
                    {
                        "side": side,
                        "offset": road.half_width + road.sidewalk(side) + setback,
                        "z_start": z,
                        "z_end": min(z + length, far_z),
                        "is_building": is_building,
                        "top": rng.uniform(6, 30) if is_building else rng.uniform(1.2, 4.0),
                        "colour": _jitter(rng, base, 18),
                        "window_colour": _jitter(rng, glass, 12),
                        "window_spacing": spacing,
                        "window_width": rng.uniform(0.35, 0.7) * spacing,
                        "floor_height": rng.uniform(2.8, 3.6),
                        "phase": rng.uniform(0, 2 * np.pi),
                    }
                )
            z += length
    columns = {}
    for name in _Roadside.__dataclass_fields__:
        values = [segment[name] for segment in segments]
        dtype = bool if name == "is_building" else np.float32
        shape = (len(segments), 3) if name in ("colour", "window_colour") else (len(segments),)
        columns[name] = np.asarray(values, dtype=dtype).reshape(shape)
    return _Roadside(**columns)


def _sample_backdrop(rng: np.random.Generator) -> _Backdrop:
    is_building = bool(rng.random() < 0.5)
    blocks = 64
    return _Backdrop(
        depth=float(rng.uniform(150, 300)),
        is_building=is_building,
        block_width=float(rng.uniform(8, 25)),
        block_tops=rng.uniform(5, 40, blocks).astype(np.float32),
        block_colours=np.stack(
            [_jitter(rng, np.array([140, 140, 145], np.float32), 25) for _ in range(blocks)]
        ),
        wave=rng.uniform(0, 2 * np.pi, 3).astype(np.float32),
    )


def _car(rng: np.random.Generator, x: float, z: float) -> _Prop:
    width = float(rng.uniform(1.6, 2.0))
    height = float(rng.uniform(1.4, 2.0))
    body = _jitter(rng, _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))], 12)
    glass = _jitter(rng, np.array([45, 55, 65], np.float32), 10)
    light = _jitter(rng, np.array([200, 30, 25], np.float32), 20)

    def shade(xs: np.ndarray, ys: np.ndarray, grain: np.ndarray, pixel_m: float) -> Shade:
        xn, yn = xs / width, ys / height
        cabin_half = 0.47 - 0.12 * (yn - 0.55) / 0.45
        body_part = (np.abs(xn) <= 0.5) & (yn >= 0.12) & (yn < 0.55)
        cabin = (np.abs(xn) <= cabin_half) & (yn >= 0.55) & (yn <= 1.0)
        tyres = (np.abs(xn) >= 0.3) & (np.abs(xn) <= 0.46) & (yn > 0) & (yn < 0.12)
        mask = body_part | cabin | tyres
        colour = np.broadcast_to(body * (0.9 + 0.15 * yn[..., None]), (*mask.shape, 3)).copy()
        colour += 3 * grain[..., None]
        colour[np.broadcast_to((yn >= 0.12) & (yn < 0.2), mask.shape)] *= 0.6
        colour[cabin & (np.abs(xn) <= cabin_half - 0.05) & (yn >= 0.6) & (yn <= 0.92)] = glass
        colour[(yn >= 0.4) & (yn < 0.5) & (np.abs(xn) >= 0.36) & (np.abs(xn) <= 0.47)] = light
        colour[(yn >= 0.22) & (yn < 0.3) & (np.abs(xn) < 0.1)] = (215, 215, 205)
        colour[tyres] = (22, 22, 24)
        return mask, colour, CAR

    length = float(rng.uniform(4.0, 5.0))
    return _Prop("car", x, z, 0.5 * width, height, shade, 0.5 * width, footprint_length=length)


def _pole(rng: np.random.Generator, x: float, z: float, toward_road: int) -> _Prop:
    width = float(rng.uniform(0.12, 0.25))
    height = float(rng.uniform(5, 9))
    arm = float(rng.uniform(0, 2.0))
    metal = _jitter(rng, np.array([120, 122, 125], np.float32), 20)

    def shade(xs: np.ndarray, ys: np.ndarray, grain: np.ndarray, pixel_m: float) -> Shade:
        shaft = (np.abs(xs) <= _visible_half_width(width, pixel_m)) & (ys > 0) & (ys <= height)
        reach = xs * toward_road
        arm_part = (reach >= 0) & (reach <= arm) & (ys > height - max(0.15, pixel_m)) & (ys <= height)
        lamp = (arm > 0.5) & (np.abs(reach - arm) <= 0.3) & (ys > height - 0.35) & (ys <= height)
        colour = (
            np.broadcast_to(metal, (*grain.shape, 3)) * (0.85 + 0.02 * ys[..., None]) + 3 * grain[..., None]
        )
        return shaft | arm_part | lamp, colour, POLE

    return _Prop("pole", x, z, max(0.5 * width, arm + 0.3), height, shade, 0.5 * width)


def _tree(rng: np.random.Generator, x: float, z: float) -> _Prop:
    trunk_width = float(rng.uniform(0.2, 0.45))
    trunk_height = float(rng.uniform(1.8, 3.5))
    radius = float(rng.uniform(1.2, 2.8))
    count = int(rng.integers(3, 6))
    circles = np.stack(
        [
            rng.uniform(-0.6, 0.6, count) * radius,
            trunk_height + radius * rng.uniform(0.6, 1.4, count),
            radius * rng.uniform(0.6, 1.0, count),
        ],
        axis=1,
    )
    leaves = _jitter(rng, np.array([55, 95, 40], np.float32), 18)
    bark = _jitter(rng, np.array([85, 65, 45], np.float32), 12)
    top = float((circles[:, 1] + circles[:, 2]).max())

    def shade(xs: np.ndarray, ys: np.ndarray, grain: np.ndarray, pixel_m: float) -> Shade:
        trunk_rows = (ys > 0) & (ys <= trunk_height + 0.5 * radius)
        trunk = (np.abs(xs) <= _visible_half_width(trunk_width, pixel_m)) & trunk_rows
        crown = np.zeros(grain.shape, bool)
        for cx, cy, r in circles:
            crown |= (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
        colour = np.where(crown[..., None], leaves * (0.75 + 0.08 * grain[..., None]), bark)
        colour = colour + 6 * grain[..., None]
        return trunk | crown, colour, VEGETATION

    return _Prop("tree", x, z, radius * 1.7, top, shade, 0.5 * trunk_width)


def _visible_half_width(width_m: float, pixel_m: float) -> float:
    """Half width of a thin part, widened to one pixel so it does not vanish between pixel centres."""
    return 0.5 * max(width_m, pixel_m)


def _pattern(rng: np.random.Generator) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    kind = rng.choice(["checker", "stripes", "dots"])
    cell = float(rng.uniform(0.08, 0.25))
    angle = float(rng.choice([0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]))

    def pattern(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        if kind == "checker":
            return (np.floor(xs / cell) + np.floor(ys / cell)) % 2 == 0
        if kind == "stripes":
            return np.floor((xs * np.cos(angle) + ys * np.sin(angle)) / cell) % 2 == 0
        fx, fy = xs % cell - 0.5 * cell, ys % cell - 0.5 * cell
        return fx * fx + fy * fy <= (0.3 * cell) ** 2

    return pattern


def _anomaly_shape(
    rng: np.random.Generator,
) -> tuple[float, float, Callable[[np.ndarray, np.ndarray, float], np.ndarray]]:
    """(half width, top, mask function of metre coordinates and metres per pixel) of one silhouette."""
    kind = rng.choice(["crate", "quadruped", "tyre", "star"])
    if kind == "crate":
        half, top = float(rng.uniform(0.2, 0.75)), float(rng.uniform(0.3, 1.2))
        return half, top, lambda xs, ys, pixel_m: (np.abs(xs) <= half) & (ys > 0) & (ys <= top)
    if kind == "quadruped":
        length = float(rng.uniform(0.6, 1.8))
        body_h, leg_h, head_r = 0.45 * length, float(rng.uniform(0.3, 0.7)) * length, 0.2 * length
        facing = 1 if rng.random() < 0.5 else -1
        # Head centred over the body's end, high enough to read as a head but overlapping the body.
        head_x, head_y = facing * 0.5 * length, leg_h + 0.8 * body_h
        leg_w = 0.08 * length

        def quadruped(xs: np.ndarray, ys: np.ndarray, pixel_m: float) -> np.ndarray:
            body = (xs / (0.5 * length)) ** 2 + ((ys - leg_h - 0.5 * body_h) / (0.5 * body_h)) ** 2 <= 1
            head = (xs - head_x) ** 2 + (ys - head_y) ** 2 <= head_r**2
            legs = np.zeros(np.broadcast_shapes(xs.shape, ys.shape), bool)
            leg_half = _visible_half_width(leg_w, pixel_m)
            for leg_x in (-0.38, -0.22, 0.22, 0.38):
                legs |= (np.abs(xs - leg_x * length) <= leg_half) & (ys > 0) & (ys <= leg_h + 0.5 * body_h)
            return body | head | legs

        return 0.5 * length + head_r, head_y + head_r, quadruped
    if kind == "tyre":
        outer = float(rng.uniform(0.3, 0.6))
        inner = float(rng.uniform(0.45, 0.65)) * outer

        def tyre(xs: np.ndarray, ys: np.ndarray, pixel_m: float) -> np.ndarray:
            radius2 = xs**2 + (ys - outer) ** 2
            return (radius2 <= outer**2) & (radius2 >= inner**2) & (ys > 0)

        return outer, 2 * outer, tyre
    radius = float(rng.uniform(0.3, 1.0))
    spikes = int(rng.integers(5, 10))

    def star(xs: np.ndarray, ys: np.ndarray, pixel_m: float) -> np.ndarray:
        theta = np.arctan2(ys - radius, xs)
        # A spike points straight down so the star stands on the ground; its tip stays a pixel wide.
        boundary = radius * (0.4 + 0.6 * np.abs(np.cos(0.5 * spikes * (theta + 0.5 * np.pi))) ** 1.5)
        inside = xs**2 + (ys - radius) ** 2 <= boundary**2
        tip = (np.abs(xs) <= 0.5 * pixel_m) & (ys <= radius)
        return (inside | tip) & (ys > 0)

    return radius, 2 * radius, star


def _anomaly(
    rng: np.random.Generator,
) -> tuple[float, float, Callable[[np.ndarray, np.ndarray, np.ndarray, float], Shade]]:
    half_width, top, silhouette = _anomaly_shape(rng)
    pattern = _pattern(rng)
    first, second = rng.choice(len(_SATURATED), 2, replace=False)
    colours = (_jitter(rng, _SATURATED[first], 10), _jitter(rng, _SATURATED[second], 10))

    def shade(xs: np.ndarray, ys: np.ndarray, grain: np.ndarray, pixel_m: float) -> Shade:
        mask = np.broadcast_to(silhouette(xs, ys, pixel_m), grain.shape)
        colour = np.where(pattern(xs, ys)[..., None], colours[0], colours[1]) + 3 * grain[..., None]
        return mask, np.broadcast_to(colour, (*grain.shape, 3)), UNKNOWN

    return half_width, top, shade


def _image_box(camera: StreetCamera, prop: _Prop) -> tuple[float, float, float, float]:
    """(left, right, top, bottom) of a prop in pixel coordinates."""
    scale = camera.focal_px / prop.z
    return (
        camera.cx + (prop.x - prop.half_width) * scale,
        camera.cx + (prop.x + prop.half_width) * scale,
        camera.horizon_row + (camera.height_m - prop.top) * scale,
        camera.horizon_row + camera.height_m * scale,
    )


def _footprints_clash(a: _Prop, b: _Prop, margin: float = 0.4) -> bool:
    lateral = abs(a.x - b.x) < a.base_half_width + b.base_half_width + margin
    along = a.z - margin < b.z + b.footprint_length and b.z - margin < a.z + a.footprint_length
    return lateral and along


def _sample_cars(rng: np.random.Generator, road: _Road) -> list[_Prop]:
    cars: list[_Prop] = []
    for _ in range(int(rng.integers(0, 7))):
        z = float(rng.uniform(3, 70))
        if rng.random() < 0.3:
            lateral = (1 if rng.random() < 0.5 else -1) * (road.half_width - 1.1)
        else:
            lateral = -road.half_width + (int(rng.integers(road.lanes)) + 0.5) * road.lane_width
        x = float(road.center(z)) + lateral + float(rng.uniform(-0.3, 0.3))
        car = _car(rng, x, z)
        too_close = abs(x) < car.half_width + 1.0 and z < 6
        if not too_close and not any(_footprints_clash(car, other) for other in cars):
            cars.append(car)
    return cars


def _sample_roadside_props(rng: np.random.Generator, road: _Road) -> list[_Prop]:
    props: list[_Prop] = []
    for side in (-1, 1):
        if rng.random() < 0.7:
            spacing = float(rng.uniform(15, 40))
            fraction = float(rng.uniform(0.4, 0.8))
            for z in np.arange(rng.uniform(3, 3 + spacing), 120, spacing):
                x = float(road.center(z)) + side * (road.half_width + fraction * road.sidewalk(side))
                props.append(_pole(rng, x, float(z), -side))
        if rng.random() < 0.5:
            spacing = float(rng.uniform(8, 20))
            for z in np.arange(rng.uniform(3, 3 + spacing), 100, spacing):
                x = float(road.center(z)) + side * (road.half_width + road.sidewalk(side) - 0.4)
                props.append(_tree(rng, x, float(z)))
    return props


def _sample_anomalies(
    rng: np.random.Generator, layout: _Layout, height: int, width: int, attempts: int = 60
) -> list[_Prop]:
    camera, road = layout.camera, layout.road
    # The contact row must be inside the image; on very wide images that pushes the nearest depth past 5 m.
    contact_z = camera.focal_px * camera.height_m / max(height - 1 - camera.horizon_row, 1e-3)
    z_low = max(ANOMALY_DEPTH_RANGE_M[0], 1.05 * contact_z)
    z_high = max(ANOMALY_DEPTH_RANGE_M[1], z_low + 1.0)
    anomalies: list[_Prop] = []
    wanted = int(rng.integers(1, 4))
    blank = np.broadcast_to(np.float32(0), (height, width))  # texture noise is irrelevant for coverage
    for _ in range(attempts):
        if len(anomalies) == wanted:
            break
        half_width, top, shade = _anomaly(rng)
        z = float(rng.uniform(z_low, z_high))
        free = road.half_width - half_width - 0.5
        if free <= 0:
            continue
        x = float(road.center(z)) + float(rng.uniform(-free, free))
        prop = _Prop("anomaly", x, z, half_width, top, shade, half_width, footprint_length=2 * half_width)
        box = _image_box(camera, prop)
        if box[0] < 0 or box[1] > width - 1 or box[3] > height - 1:
            continue
        if any(_footprints_clash(prop, other) for other in layout.props + anomalies):
            continue
        nearer = [other for other in layout.props + anomalies if other.z < z]
        if _hidden_fraction(camera, prop, nearer, blank) < 0.5:
            anomalies.append(prop)
    return anomalies


def _hidden_fraction(camera: StreetCamera, prop: _Prop, occluders: list[_Prop], blank: np.ndarray) -> float:
    """Fraction of a prop's pixels covered by the occluders (all nearer); 1 if it has no pixels."""
    own = _rasterise(camera, prop, blank)
    if own is None or not own.mask.any():
        return 1.0
    covered = np.zeros(own.mask.shape, bool)
    for other in occluders:
        raster = _rasterise(camera, other, blank, clip=own.region)
        if raster is not None:
            rows = slice(raster.region[0] - own.region[0], raster.region[1] - own.region[0])
            cols = slice(raster.region[2] - own.region[2], raster.region[3] - own.region[2])
            covered[rows, cols] |= raster.mask
    return float((own.mask & covered).sum() / own.mask.sum())


def _sample_layout(rng: np.random.Generator, height: int, width: int, fov_deg: float) -> _Layout:
    camera = _sample_camera(rng, height, width, fov_deg)
    road = _sample_road(rng)
    lighting = _sample_lighting(rng)
    backdrop = _sample_backdrop(rng)
    layout = _Layout(
        camera=camera,
        road=road,
        lighting=lighting,
        roadside=_sample_roadside(rng, road, backdrop.depth),
        backdrop=backdrop,
        marks={
            "width": float(rng.uniform(0.1, 0.16)),
            "dash": float(rng.uniform(2.5, 4.0)),
            "period": float(rng.uniform(8.0, 12.0)),
            "phase": float(rng.uniform(0, 12)),
            "tile": float(rng.uniform(0.35, 0.6)),
        },
        ground_colours={
            "road": _jitter(rng, np.full(3, rng.uniform(60, 110), np.float32), 6),
            "mark": _jitter(rng, np.array([225, 225, 215], np.float32), 15),
            "sidewalk": _jitter(rng, _SIDEWALK_COLOURS[rng.integers(len(_SIDEWALK_COLOURS))], 12),
            "curb": _jitter(rng, np.array([195, 195, 190], np.float32), 10),
            "terrain": _jitter(rng, _TERRAIN_COLOURS[rng.integers(len(_TERRAIN_COLOURS))], 12),
        },
    )
    layout.props = _sample_cars(rng, road) + _sample_roadside_props(rng, road)
    return layout


def _draw_ground(canvas: _Canvas, layout: _Layout, noise: _NoiseFields, materials: _Materials) -> None:
    camera, road, marks, colours = layout.camera, layout.road, layout.marks, layout.ground_colours
    height, width = canvas.label.shape
    first = int(np.floor(camera.horizon_row)) + 1
    if first >= height:
        return
    z = camera.focal_px * camera.height_m / (np.arange(first, height, dtype=np.float64) - camera.horizon_row)
    z32 = z.astype(np.float32)[:, None]
    x = ((np.arange(width) - camera.cx)[None, :] * (z[:, None] / camera.focal_px)).astype(np.float32)
    lateral = x - np.asarray(road.center(z), np.float32)[:, None]
    distance = np.abs(lateral)
    sidewalk_width = np.where(lateral < 0, road.sidewalk_left, road.sidewalk_right).astype(np.float32)
    is_road = distance <= road.half_width
    is_sidewalk = ~is_road & (distance <= road.half_width + sidewalk_width)
    label = np.where(is_road, ROAD, np.where(is_sidewalk, SIDEWALK, TERRAIN)).astype(np.uint8)

    road_id, mark_id, sidewalk_id, curb_id, terrain_id = (
        materials.add(colours[name], grain)
        for name, grain in (("road", 5), ("mark", 4), ("sidewalk", 6), ("curb", 4), ("terrain", 12))
    )
    material = np.where(is_road, road_id, np.where(is_sidewalk, sidewalk_id, terrain_id))
    blotch = noise.blotch[first:]
    brightness = np.where(
        is_road,
        0.8 + 0.4 * blotch,
        np.where(is_sidewalk, 0.9 + 0.2 * blotch, 0.6 + 0.8 * noise.fine_blotch[first:]),
    )

    half_mark = 0.5 * marks["width"]
    dashed = ((z32 + marks["phase"]) % marks["period"]) < marks["dash"]
    paint = np.zeros_like(is_road)
    for lane in range(1, road.lanes):
        paint |= (np.abs(lateral + road.half_width - lane * road.lane_width) <= half_mark) & dashed
    for side in (-1, 1):
        paint |= np.abs(lateral - side * (road.half_width - 0.3)) <= half_mark
    paint &= is_road & (noise.fine_blotch[first:] > 0.15)  # worn paint
    material[paint] = mark_id

    joint = 0.03
    resolvable = (camera.focal_px * joint / z32) >= 0.5  # joints thinner than half a pixel would only alias
    tiles = (((lateral % marks["tile"]) < joint) | ((z32 % marks["tile"]) < joint)) & resolvable & is_sidewalk
    brightness[tiles] *= 0.78
    curb = is_sidewalk & (distance - road.half_width < 0.2)
    material[curb] = curb_id
    brightness[curb] = 1.0

    for car in (prop for prop in layout.props if prop.kind == "car"):
        rows = np.flatnonzero((z >= car.z) & (z <= car.z + car.footprint_length))
        if rows.size:
            band = slice(rows[0], rows[-1] + 1)
            brightness[band][np.abs(x[band] - car.x) <= car.half_width + 0.1] *= 0.45
    canvas.paint_surface(first, np.ones(label.shape, bool), z32, label, material, brightness)


def _facade_hits(layout: _Layout, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image column: depth of the nearest roadside facade (inf if none) and its segment index."""
    camera, road, side = layout.camera, layout.road, layout.roadside
    if side.side.size == 0:
        return np.full(width, np.inf, np.float32), np.zeros(width, np.intp)
    slope = (np.arange(width, dtype=np.float64) - camera.cx) / camera.focal_px
    # Ray X = slope * Z meets the facade X = c + yaw Z + curvature Z^2 / 2.
    a = 0.5 * road.curvature
    b = road.yaw - slope[None, :]
    c = (road.offset_m + side.side * side.offset).astype(np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        if abs(a) < 1e-12:
            roots = (-c / b)[None]
        else:
            disc = np.sqrt(b * b - 4 * a * c)
            roots = np.stack([(-b - disc) / (2 * a), (-b + disc) / (2 * a)])
    valid = (roots >= side.z_start[:, None]) & (roots < side.z_end[:, None]) & (roots > 0.5)
    candidates = np.where(valid, roots, np.inf).reshape(-1, width)
    best = np.argmin(candidates, axis=0)
    return candidates[best, np.arange(width)].astype(np.float32), best % side.side.size


def _draw_roadside(canvas: _Canvas, layout: _Layout, noise: _NoiseFields, materials: _Materials) -> None:
    camera, segments, lighting = layout.camera, layout.roadside, layout.lighting
    height, width = canvas.label.shape
    z, index = _facade_hits(layout, width)
    hit = np.isfinite(z)
    if not hit.any():
        return
    z = np.where(hit, z, np.float32(1.0))
    rows = np.arange(height, dtype=np.float32)[:, None]
    above_ground = camera.height_m - (rows - camera.horizon_row) * (z / camera.focal_px)[None, :]
    building = segments.is_building[index]
    wave = 0.4 * np.sin(1.3 * z + segments.phase[index]) + 0.25 * np.sin(3.7 * z)
    top = (segments.top[index] + np.where(building, 0.0, wave))[None, :]
    mask = hit[None, :] & (above_ground > 0) & (above_ground <= top)

    shade = np.where(segments.side < 0, lighting.facade_shade[-1], lighting.facade_shade[1])[:, None]
    wall_ids = materials.add(segments.colour * shade, np.where(segments.is_building, 4.0, 14.0))
    window_ids = materials.add(segments.window_colour * shade, 2.0)
    along = (z + segments.phase[index]) % segments.window_spacing[index]
    storey = above_ground % segments.floor_height[index][None, :]
    window = (
        (building & (along < segments.window_width[index]))[None, :]
        & (storey > 0.9)
        & (storey < 2.3)
        & (above_ground > 2.5)
        & (above_ground < top - 0.6)
    )
    material = np.where(window, window_ids[index][None, :], wall_ids[index][None, :])
    brightness = np.where(building[None, :], 0.9 + 0.2 * noise.blotch, 0.5 + 0.9 * noise.fine_blotch)
    brightness[window] = 1.0
    label = np.where(building, BUILDING, VEGETATION).astype(np.uint8)[None, :]
    canvas.paint_surface(0, mask, z[None, :], label, material, brightness)


def _draw_backdrop(canvas: _Canvas, layout: _Layout, noise: _NoiseFields, materials: _Materials) -> None:
    camera, backdrop = layout.camera, layout.backdrop
    height, width = canvas.label.shape
    x = (np.arange(width, dtype=np.float32) - camera.cx) * backdrop.depth / camera.focal_px
    if backdrop.is_building:
        block = np.floor(x / backdrop.block_width).astype(np.int64) % backdrop.block_tops.size
        top = backdrop.block_tops[block]
        material: np.ndarray | int = materials.add(backdrop.block_colours, 3.0)[block][None, :]
        brightness: np.ndarray | float = 1.0
        label = BUILDING
    else:
        phases = backdrop.wave
        top = (
            12
            + 3 * np.sin(0.05 * x + phases[0])
            + 2 * np.sin(0.13 * x + phases[1])
            + np.sin(0.4 * x + phases[2])
        )
        material = int(materials.add(_BACKDROP_TREES, 6.0)[0])
        brightness = 0.7 + 0.6 * noise.fine_blotch
        label = VEGETATION
    rows = np.arange(height, dtype=np.float32)[:, None]
    above_ground = camera.height_m - (rows - camera.horizon_row) * backdrop.depth / camera.focal_px
    mask = (above_ground > 0) & (above_ground <= top[None, :])
    canvas.paint_surface(0, mask, np.float32(backdrop.depth), label, material, brightness)


def _shade_background(canvas: _Canvas, layout: _Layout, noise: _NoiseFields, materials: _Materials) -> None:
    colours, grain = materials.tables()
    texture = np.take(grain, canvas.material) * noise.grain
    for channel in range(3):
        np.take(colours[:, channel], canvas.material, out=canvas.colour[channel])
        canvas.colour[channel] *= canvas.brightness
        canvas.colour[channel] += texture
    # Only rows up to the horizon can show sky: the ground covers every row below it.
    last = min(int(np.floor(layout.camera.horizon_row)) + 1, canvas.label.shape[0])
    if last <= 0:
        return
    light = layout.lighting
    rows = np.arange(last, dtype=np.float32)
    up = np.clip((layout.camera.horizon_row - rows) / max(layout.camera.horizon_row, 1.0), 0, 1)[
        None, :, None
    ]
    cloud = np.clip((noise.clouds[:last] - 0.55) * 3.0, 0, 1)[None]
    gradient = light.sky_horizon[:, None, None] * (1 - up) + light.sky_zenith[:, None, None] * up
    sky = gradient * (1 - cloud) + np.float32(235) * cloud
    np.copyto(canvas.colour[:, :last], sky, where=canvas.material[:last] == SKY_MATERIAL)


@dataclass
class _Raster:
    region: tuple[int, int, int, int]  # rows r0:r1, columns c0:c1
    mask: np.ndarray
    colour: np.ndarray
    label: int


def _rasterise(
    camera: StreetCamera, prop: _Prop, grain: np.ndarray, clip: tuple[int, int, int, int] | None = None
) -> _Raster | None:
    """A prop's pixels inside the frame (and inside clip, if given); None if it covers no pixel centre."""
    left, right, top, bottom = _image_box(camera, prop)
    r0, r1, c0, c1 = clip if clip is not None else (0, grain.shape[0], 0, grain.shape[1])
    r0, r1 = max(int(np.ceil(top)), r0), min(int(np.floor(bottom)) + 1, r1)
    c0, c1 = max(int(np.ceil(left)), c0), min(int(np.floor(right)) + 1, c1)
    if c0 >= c1 or r0 >= r1:
        return None
    metres_per_px = prop.z / camera.focal_px
    xs = ((np.arange(c0, c1, dtype=np.float32) - camera.cx) * metres_per_px - prop.x)[None, :]
    rows = np.arange(r0, r1, dtype=np.float32)
    ys = (camera.height_m - (rows - camera.horizon_row) * metres_per_px)[:, None]
    mask, colour, label = prop.shade(xs, ys, grain[r0:r1, c0:c1], metres_per_px)
    return _Raster((r0, r1, c0, c1), np.broadcast_to(mask, (r1 - r0, c1 - c0)), colour, label)


def _draw_prop(canvas: _Canvas, camera: StreetCamera, prop: _Prop, noise: _NoiseFields) -> None:
    raster = _rasterise(camera, prop, noise.grain)
    if raster is not None:
        top_left = (raster.region[0], raster.region[2])
        canvas.paint_prop(top_left, raster.mask, prop.z, raster.colour, raster.label, prop.kind == "anomaly")


def _finish_image(canvas: _Canvas, lighting: _Lighting, noise: _NoiseFields) -> np.ndarray:
    """Haze towards the horizon colour with distance, cloud shadows, exposure, tint, gamma, sensor noise."""
    finite = np.isfinite(canvas.depth)
    haze = np.exp(-np.where(finite, canvas.depth, 0) / lighting.visibility_m)
    shadow = 1 - lighting.cloud_shadow * np.where(finite, noise.clouds, 0)
    lit, scattered = haze * shadow, (1 - haze) * shadow
    channels = []
    for channel in range(3):
        value = canvas.colour[channel] * lit + lighting.sky_horizon[channel] * scattered
        channels.append(np.clip(value + 0.5, 0, 255).astype(np.uint8))
    exposed = np.arange(256, dtype=np.float32)[:, None] * (lighting.gain * lighting.tint)[None, :]
    curve = (255 * (np.clip(exposed, 0, 255) / 255) ** lighting.gamma).astype(np.float32)
    image = cv2.LUT(cv2.merge(channels), curve.reshape(1, 256, 3))
    image += lighting.noise_sigma * noise.sensor
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


class SyntheticStreets:
    """Procedural street scenes implementing the Dataset protocol; see the module docstring.

    stream separates independent sequences that share a seed (write_synthetic_streets uses one per split).
    With the same (seed, stream), turning anomalies on changes only the anomaly pixels.
    """

    def __init__(
        self,
        num_frames: int,
        seed: int = 0,
        height: int = 256,
        width: int = 512,
        anomalies: bool = False,
        horizontal_fov_deg: float = 70.0,
        stream: int = 0,
    ) -> None:
        if num_frames < 0 or seed < 0 or stream < 0:
            raise ValueError(f"num_frames, seed and stream must be >= 0, got {num_frames}, {seed}, {stream}")
        if height < 16 or width < 16:
            raise ValueError(f"frames must be at least 16x16, got {height}x{width}")
        if not 20.0 <= horizontal_fov_deg <= 150.0:
            raise ValueError(f"horizontal_fov_deg must be in [20, 150], got {horizontal_fov_deg}")
        self.num_frames = num_frames
        self.seed = seed
        self.stream = stream
        self.height = height
        self.width = width
        self.anomalies = anomalies
        self.horizontal_fov_deg = horizontal_fov_deg
        focal = 0.5 * width / np.tan(np.radians(horizontal_fov_deg) / 2)
        self.info = DatasetInfo(
            class_names=list(STREET_CLASSES),
            palette=list(STREET_PALETTE),
            has_semantic=True,
            has_anomaly=True,
            has_depth=True,
            camera={
                "focal_px": float(focal),
                "horizontal_fov_deg": float(horizontal_fov_deg),
                "height_m_min": CAMERA_HEIGHT_RANGE_M[0],
                "height_m_max": CAMERA_HEIGHT_RANGE_M[1],
            },
        )

    def __len__(self) -> int:
        return self.num_frames

    def _generators(self, index: int) -> list[np.random.Generator]:
        if not -self.num_frames <= index < self.num_frames:
            raise IndexError(f"frame {index} out of range for {self.num_frames} frames")
        sequence = np.random.SeedSequence([self.seed, self.stream, index % self.num_frames])
        return [np.random.default_rng(child) for child in sequence.spawn(3)]

    def camera(self, index: int) -> StreetCamera:
        """The exact camera of frame index (the same one __getitem__ renders with)."""
        scene_rng = self._generators(index)[0]
        return _sample_camera(scene_rng, self.height, self.width, self.horizontal_fov_deg)

    def __getitem__(self, index: int) -> Sample:
        scene_rng, anomaly_rng, noise_rng = self._generators(index)
        layout = _sample_layout(scene_rng, self.height, self.width, self.horizontal_fov_deg)
        noise = _noise_fields(noise_rng, self.height, self.width)
        props = list(layout.props)
        if self.anomalies:
            props += _sample_anomalies(anomaly_rng, layout, self.height, self.width)
        canvas = _Canvas(self.height, self.width)
        materials = _Materials()
        _draw_ground(canvas, layout, noise, materials)
        _draw_roadside(canvas, layout, noise, materials)
        _draw_backdrop(canvas, layout, noise, materials)
        _shade_background(canvas, layout, noise, materials)
        for prop in sorted(props, key=lambda p: -p.z):
            _draw_prop(canvas, layout.camera, prop, noise)
        depth = np.where(np.isfinite(canvas.depth), canvas.depth, np.float32(np.nan)).astype(np.float32)
        return Sample(
            image=_finish_image(canvas, layout.lighting, noise),
            semantic=canvas.label,
            anomaly=canvas.anomaly,
            depth=depth,
            name=f"street_{index % self.num_frames:06d}",
        )


def _negative_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    centre = np.array([width, height], np.float64) * rng.uniform(0.4, 0.6, 2)
    if rng.random() < 0.5:
        axes = (int(width * rng.uniform(0.25, 0.5)), int(height * rng.uniform(0.25, 0.5)))
        cv2.ellipse(mask, tuple(int(c) for c in centre), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        vertices = int(rng.integers(3, 10))
        # Jittered even angles keep the polygon around the centre instead of collapsing into a sliver.
        angles = (np.arange(vertices) + rng.uniform(-0.35, 0.35, vertices)) * (2 * np.pi / vertices)
        radii = rng.uniform(0.25, 0.5, vertices)[:, None] * np.array([width, height])
        points = centre + radii * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.rint(points).astype(np.int32)], 1)
    if not mask.any():
        mask[height // 2, width // 2] = 1
    return mask.astype(bool)


def _negative_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    cols = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    first, second = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    cell = max(height, width) / rng.uniform(2, 6)
    kind = rng.choice(["linear", "radial", "blotches", "clouds"])
    if kind == "blotches":
        return np.stack([_smooth_noise(rng, height, width, cell) for _ in range(3)], axis=-1) * 255
    if kind == "linear":
        angle = rng.uniform(0, 2 * np.pi)
        weight = np.clip(0.5 + (cols - 0.5) * np.cos(angle) + (rows - 0.5) * np.sin(angle), 0, 1)
    elif kind == "radial":
        weight = np.clip(np.hypot(cols - rng.uniform(0.2, 0.8), rows - rng.uniform(0.2, 0.8)) / 0.7, 0, 1)
    else:
        weight = np.clip(_smooth_noise(rng, height, width, cell), 0, 1)[..., None]
    return first * (1 - weight) + second * weight


def random_negative_patch(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A training negative: (HxWx3 uint8 RGB patch, HxW bool mask, never empty).

    One random polygon or rotated ellipse with a smooth texture in arbitrary colours; see the module
    docstring for how this family differs from the test-time anomalies.
    """
    if height < 1 or width < 1:
        raise ValueError(f"patch size must be positive, got {height}x{width}")
    mask = _negative_mask(rng, height, width)
    patch = _negative_texture(rng, height, width)
    patch = patch + rng.uniform(0, 8) * rng.standard_normal((height, width, 3), dtype=np.float32)
    return np.clip(np.rint(patch), 0, 255).astype(np.uint8), mask


def split_stream(split: str) -> int:
    """Stable stream id of a split name, so each split is an independent sequence for a given seed."""
    return zlib.crc32(split.encode("utf-8"))


def write_synthetic_streets(
    root: str | Path,
    splits: Mapping[str, int] | None = None,
    seed: int = 0,
    height: int = 256,
    width: int = 512,
    anomaly_splits: Collection[str] = ("val", "test"),
    horizontal_fov_deg: float = 70.0,
) -> dict[str, Path]:
    """Write ROOT/<split> folder datasets (default DEFAULT_SPLITS); anomalies only in anomaly_splits.

    Depths beyond 65.535 m become invalid on disk (see openset_perception.data.folder).
    """
    root = Path(root)
    written: dict[str, Path] = {}
    for split, count in (DEFAULT_SPLITS if splits is None else splits).items():
        if not split or Path(split).name != split:
            raise ValueError(f"split name {split!r} is not a plain folder name")
        dataset = SyntheticStreets(
            count,
            seed=seed,
            height=height,
            width=width,
            anomalies=split in anomaly_splits,
            horizontal_fov_deg=horizontal_fov_deg,
            stream=split_stream(split),
        )
        frames = (dataset[i] for i in range(len(dataset)))
        written[split] = write_folder_dataset(frames, root / split, dataset.info)
    return written
