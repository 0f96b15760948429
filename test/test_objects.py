"""Unknown objects and their 3D geometry against a pinhole projection made here."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from openset_perception.geometry import Intrinsics, anomaly_points, backproject
from openset_perception.objects import ObjectFilters, find_objects, label_components

CAMERA = Intrinsics(fx=800.0, fy=780.0, cx=639.5, cy=361.0, width=1280, height=720)


def _render_box(
    camera: Intrinsics, centre: tuple[float, float, float], size: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Mask and depth of a fronto-parallel box: pixels whose centre's ray hits it."""
    x, y, z = centre
    width, height = size
    cols = np.arange(camera.width)
    rows = np.arange(camera.height)
    ray_x = (cols - camera.cx) / camera.fx * z  # where each pixel's ray meets the plane at depth z
    ray_y = (rows - camera.cy) / camera.fy * z
    inside = (np.abs(ray_y - y) <= height / 2)[:, None] & (np.abs(ray_x - x) <= width / 2)[None, :]
    depth = np.full((camera.height, camera.width), np.nan, np.float32)
    depth[inside] = z
    return inside, depth


@pytest.mark.parametrize(
    ("centre", "size"),
    [((1.3, 0.4, 12.4), (0.9, 0.6)), ((-4.0, -1.0, 25.0), (2.0, 1.5)), ((0.2, 0.8, 4.0), (0.3, 0.2))],
)
def test_box_comes_back_at_its_position_and_size(centre, size) -> None:
    mask, depth = _render_box(CAMERA, centre, size)
    scores = np.where(mask, 3.0, -1.0).astype(np.float32)
    (found,) = find_objects(mask, scores, depth, CAMERA)
    true = np.array(centre)
    assert np.linalg.norm(np.array(found.centroid_m) - true) <= 0.01 * np.linalg.norm(true)
    footprint_x, footprint_y = CAMERA.pixel_footprint_m(centre[2])
    assert abs(found.extent_m[0] - size[0]) <= footprint_x
    assert abs(found.extent_m[1] - size[1]) <= footprint_y
    assert found.extent_m[2] == pytest.approx(0.0)
    assert found.nearest_m == pytest.approx(centre[2]) and found.median_m == pytest.approx(centre[2])
    assert found.bearing_rad == pytest.approx(math.atan2(centre[0], centre[2]), abs=0.01)
    assert found.lateral_m == pytest.approx(centre[0], rel=0.01)
    assert found.pixels == int(mask.sum()) == found.depth_pixels


def test_image_statistics_filters_and_ids() -> None:
    mask = np.zeros((40, 50), bool)
    scores = np.zeros(mask.shape, np.float32)
    depth = np.full(mask.shape, 9.0, np.float32)
    mask[2:6, 3:8] = True  # 20 px, first in raster order
    scores[2:6, 3:8] = np.arange(20, dtype=np.float32).reshape(4, 5)
    depth[2:4, 3:8] = 4.0
    depth[5, 3:8] = np.nan  # invalid depth is left out of the depth statistics
    mask[20:30, 20:30] = True  # 100 px at 30 m
    depth[20:30, 20:30] = 30.0
    mask[35, 45] = True  # one pixel
    first, second, third = find_objects(mask, scores, depth)
    assert (first.id, second.id, third.id) == (0, 1, 2)
    assert first.bbox == (3, 2, 5, 4) and first.pixels == 20 and first.depth_pixels == 15
    assert first.mean_score == pytest.approx(9.5) and first.max_score == 19.0
    assert first.nearest_m == 4.0 and first.median_m == 4.0  # 10 px at 4 m, 5 at 9 m
    assert first.centroid_m is None  # no intrinsics
    kept = find_objects(mask, scores, depth, filters=ObjectFilters(min_pixels=2, max_distance_m=20.0))
    assert [obj.pixels for obj in kept] == [20] and kept[0].id == 0


def test_min_size_needs_3d_and_objects_without_depth_are_kept() -> None:
    camera = Intrinsics.from_focal_length(100.0, 60, 40)
    mask = np.zeros((40, 60), bool)
    mask[5:15, 5:15] = True  # 10 px at 10 m: about 0.9 m wide
    mask[25:28, 40:43] = True  # 3 px at 10 m: about 0.2 m
    mask[30:35, 5:10] = True  # no depth at all
    depth = np.full(mask.shape, 10.0, np.float32)
    depth[30:35, 5:10] = 0.0
    scores = mask.astype(np.float32)
    found = find_objects(mask, scores, depth, camera, ObjectFilters(min_size_m=0.5, max_distance_m=5.0))
    # both at 10 m lie beyond 5 m; only the depthless one, which no filter can test, remains
    assert [obj.pixels for obj in found] == [25] and found[0].nearest_m is None
    found = find_objects(mask, scores, depth, camera, ObjectFilters(min_size_m=0.5))
    assert sorted(obj.pixels for obj in found) == [25, 100]


def test_components_are_eight_connected() -> None:
    mask = np.zeros((5, 5), bool)
    mask[0, 0] = mask[1, 1] = mask[3, 3] = True
    components = label_components(mask)
    assert components.count == 2 and components.pixels.tolist() == [2, 1]


def test_point_cloud_keeps_masked_valid_pixels_on_the_decimation_grid() -> None:
    mask, depth = _render_box(CAMERA, (0.0, 0.0, 10.0), (2.0, 1.0))
    depth[360, :] = np.nan
    scores = np.where(mask, 2.5, 0.0).astype(np.float32)
    points = anomaly_points(depth, scores, mask, CAMERA, decimation=4)
    grid = np.zeros(mask.shape, bool)
    grid[::4, ::4] = True
    assert points.dtype == np.float32 and points.shape[1] == 4
    assert len(points) == np.count_nonzero(mask & grid & np.isfinite(depth))
    assert np.all(points[:, 2] == 10.0) and np.all(points[:, 3] == 2.5)
    assert np.abs(points[:, 0]).max() <= 1.0 and np.abs(points[:, 1]).max() <= 0.5
    with pytest.raises(ValueError, match="decimation"):
        anomaly_points(depth, scores, mask, CAMERA, decimation=0)


def test_backprojection_inverts_the_pinhole_projection() -> None:
    rng = np.random.default_rng(1)
    points = np.stack([rng.uniform(-5, 5, 50), rng.uniform(-2, 2, 50), rng.uniform(2, 40, 50)], axis=1)
    u = np.round(CAMERA.fx * points[:, 0] / points[:, 2] + CAMERA.cx).astype(int)
    v = np.round(CAMERA.fy * points[:, 1] / points[:, 2] + CAMERA.cy).astype(int)
    depth = np.zeros((CAMERA.height, CAMERA.width), np.float32)
    depth[v, u] = points[:, 2]
    back = backproject(depth, CAMERA, v, u)
    footprint = points[:, 2:3] / CAMERA.fx
    assert np.all(np.abs(back[:, :2] - points[:, :2]) <= footprint)


def test_intrinsics_from_camera_info() -> None:
    info = SimpleNamespace(k=[500.0, 0, 320.0, 0, 510.0, 240.0, 0, 0, 1], width=640, height=480)
    intrinsics = Intrinsics.from_camera_info(info)
    assert intrinsics == Intrinsics(500.0, 510.0, 320.0, 240.0, 640, 480)
    assert Intrinsics.from_camera_info(SimpleNamespace(k=[0.0] * 9, width=640, height=480)) is None
    half = intrinsics.scaled_to(320, 240)
    assert (half.fx, half.fy, half.cx, half.cy) == (250.0, 255.0, 159.75, 119.75)
    with pytest.raises(ValueError, match="focal"):
        Intrinsics(0.0, 1.0, 0.0, 0.0, 10, 10)


def test_point_cloud_message_round_trip_through_rosbags_cdr() -> None:
    from rosbags.typesys import Stores, get_typestore

    from openset_perception.image_codec import rosbags_factories
    from openset_perception.point_cloud_codec import numpy_to_pointcloud2, pointcloud2_to_numpy

    typestore = get_typestore(Stores.ROS2_JAZZY)
    types = typestore.types
    points = np.random.default_rng(2).normal(size=(37, 4)).astype(np.float32)
    header = rosbags_factories(typestore).header(123_000_000_456, "cam_optical_frame")
    message = numpy_to_pointcloud2(
        points,
        header,
        msg_factory=types["sensor_msgs/msg/PointCloud2"],
        field_factory=types["sensor_msgs/msg/PointField"],
    )
    assert (message.height, message.width, message.point_step, message.row_step) == (1, 37, 16, 37 * 16)
    assert [f.name for f in message.fields] == ["x", "y", "z", "score"] and message.is_dense
    raw = typestore.serialize_cdr(message, "sensor_msgs/msg/PointCloud2")
    decoded = typestore.deserialize_cdr(raw, "sensor_msgs/msg/PointCloud2")
    assert decoded.header.frame_id == "cam_optical_frame" and decoded.header.stamp.nanosec == 456
    np.testing.assert_array_equal(pointcloud2_to_numpy(decoded), points)
    with pytest.raises(ValueError, match="points must be"):
        numpy_to_pointcloud2(points[:, :3], header, msg_factory=dict, field_factory=dict)
