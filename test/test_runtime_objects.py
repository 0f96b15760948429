"""The pipeline's unknown objects and points: intrinsics from camera_info or the focal-length fallback."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from openset_perception.engine import Segmenter
from openset_perception.image_codec import numpy_to_image, rosbags_factories
from openset_perception.runtime.frame_buffer import CameraFrame
from openset_perception.runtime.parameters import runtime_settings
from openset_perception.runtime.pipeline import InferencePipeline

FACTORIES = rosbags_factories(get_typestore(Stores.ROS2_JAZZY))
HEIGHT, WIDTH = 48, 64

ALL_UNKNOWN = {"threshold": -1e9, "object_min_pixels": 1}  # every pixel anomalous: one object
OBJECT_OUTPUTS = ("unknown_objects", "unknown_points", "depth_report")


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint: Path) -> Segmenter:
    return Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")


def _info(focal: float, width: int = WIDTH, height: int = HEIGHT) -> SimpleNamespace:
    k = [focal, 0.0, (width - 1) / 2, 0.0, focal, (height - 1) / 2, 0.0, 0.0, 1.0]
    return SimpleNamespace(k=k, width=width, height=height)


def _frame(camera_info: SimpleNamespace | None) -> CameraFrame:
    image = np.random.default_rng(1).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    header = FACTORIES.header(1_000_000_000, "front_optical")
    image_msg = numpy_to_image(image, "rgb8", header, msg_factory=FACTORIES.image)
    depth = np.full((HEIGHT, WIDTH), 8.0, np.float32)
    depth_msg = numpy_to_image(depth, "32FC1", header, msg_factory=FACTORIES.image)
    return CameraFrame("front", header, 1.0, time.monotonic(), image_msg, depth_msg, camera_info)


def _process(pipeline: InferencePipeline, camera_info=None, wanted=OBJECT_OUTPUTS):
    frame = _frame(camera_info)
    outcome = pipeline.process([frame], lambda camera: wanted)
    (result,) = outcome.results
    return result, outcome.notices


def test_camera_info_gives_objects_a_3d_position_and_a_decimated_cloud(segmenter: Segmenter) -> None:
    pipeline = InferencePipeline(segmenter, runtime_settings({**ALL_UNKNOWN, "cloud_decimation": 2}))
    result, notices = _process(pipeline, _info(40.0, WIDTH * 2, HEIGHT * 2))  # info at twice the size
    assert notices == []
    (obj,) = result.objects
    assert obj.pixels == HEIGHT * WIDTH and obj.nearest_m == pytest.approx(8.0)
    np.testing.assert_allclose(obj.centroid_m, (0.0, 0.0, 8.0), atol=1e-4)
    # info scaled to the image: focal 20 px, so the frame spans WIDTH * 8 / 20 metres
    assert obj.extent_m[0] == pytest.approx(WIDTH * 8.0 / 20.0, rel=1e-4)
    assert result.points.shape == (HEIGHT * WIDTH // 4, 4)
    assert np.all(result.points[:, 2] == 8.0)
    assert [s.name for s in result.depth_statuses][-1] == "front object 0"


def test_missing_intrinsics_are_reported_once_and_the_fallback_turns_3d_on(segmenter: Segmenter) -> None:
    pipeline = InferencePipeline(segmenter, runtime_settings(ALL_UNKNOWN))
    result, notices = _process(pipeline)
    assert len(notices) == 1 and "no camera_info" in notices[0] and "focal_length_px" in notices[0]
    assert result.points is None and result.objects[0].centroid_m is None
    assert result.objects[0].nearest_m == pytest.approx(8.0)
    _, notices = _process(pipeline, _info(0.0))  # uncalibrated: still off, not reported again
    assert notices == []
    pipeline.update(runtime_settings({**ALL_UNKNOWN, "focal_length_px": 30.0}))
    result, notices = _process(pipeline)
    assert notices == ["camera 'front': intrinsics available, 3D object outputs on"]
    assert result.objects[0].centroid_m is not None and len(result.points) > 0


def test_objects_are_only_made_for_the_outputs_that_need_them(segmenter: Segmenter) -> None:
    pipeline = InferencePipeline(segmenter, runtime_settings(ALL_UNKNOWN))
    result, _ = _process(pipeline, _info(40.0), wanted=("overlay",))
    assert result.objects is None and result.points is None
    result, _ = _process(pipeline, _info(40.0), wanted=("unknown_objects",))
    assert len(result.objects) == 1 and result.points is None
    far = runtime_settings({**ALL_UNKNOWN, "object_max_distance": 5.0})
    pipeline.update(far)
    result, _ = _process(pipeline, _info(40.0), wanted=("unknown_objects",))
    assert result.objects == []


def test_shipped_examples_use_the_object_outputs() -> None:
    import yaml

    from openset_perception.runtime.parameters import node_config, output_topic

    config_dir = Path(__file__).resolve().parents[1] / "config"
    camera = node_config({}).cameras[0]
    cloud_topic = "/" + output_topic(camera, "unknown_points")
    nav2 = yaml.safe_load((config_dir / "nav2_unknown_obstacles.yaml").read_text())
    voxels = nav2["local_costmap"]["local_costmap"]["ros__parameters"]["unknown_voxels"]
    source = voxels["unknown_points"]
    assert source["topic"] == cloud_topic and source["data_type"] == "PointCloud2"
    assert source["marking"] is True and source["clearing"] is False
    assert "unknown_points" in voxels["observation_sources"].split()
    rviz = yaml.safe_load((config_dir / "segment.rviz").read_text())
    shown = {d["Class"]: d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]}
    assert shown["rviz_default_plugins/MarkerArray"] == "/" + output_topic(camera, "unknown_objects")
    assert shown["rviz_default_plugins/PointCloud2"] == cloud_topic


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("cloud_decimation", 0),
        ("cloud_decimation", 2.0),
        ("focal_length_px", float("nan")),
        ("focal_length_px", -1.0),
        ("object_min_pixels", 0),
        ("object_max_distance", float("inf")),
        ("object_min_size", -0.1),
        ("use_camera_info", 1),
    ],
)
def test_bad_object_parameters_are_refused_by_name(name: str, value: object) -> None:
    from openset_perception.runtime.parameters import ParameterError, check_value

    with pytest.raises(ParameterError, match=name):
        check_value(name, value)


def test_object_parameters_reach_the_settings() -> None:
    settings = runtime_settings(
        {"object_min_pixels": 7, "object_min_size": 0.3, "object_max_distance": 12.0, "cloud_decimation": 3}
    )
    assert (settings.objects.min_pixels, settings.objects.min_size_m, settings.objects.max_distance_m) == (
        7,
        0.3,
        12.0,
    )
    assert settings.cloud_decimation == 3 and settings.focal_length_px is None
    assert runtime_settings({"focal_length_px": 600.0}).focal_length_px == 600.0
