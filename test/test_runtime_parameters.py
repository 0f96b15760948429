"""Node parameters: definitions, run-time change validation, read-only config, topics, model lookup."""

from __future__ import annotations

import array
import math
from pathlib import Path

import pytest
import yaml

from openset_perception.depth import DEFAULT_EDGES_M, DepthBins
from openset_perception.runtime.depth_report import DangerZone
from openset_perception.runtime.outputs import IMAGE_OUTPUT_ENCODINGS, OUTPUT_NAMES
from openset_perception.runtime.parameters import (
    PARAMETER_TYPES,
    PARAMETERS,
    SPECS,
    ParameterError,
    check_value,
    default_values,
    node_config,
    output_topic,
    resolve_model_path,
    runtime_settings,
    validate_changes,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
DYNAMIC = {
    "max_input_age",
    "max_input_pixels",
    "batch_window",
    "threshold",
    "score_method",
    "danger_range",
    "danger_min_pixels",
    "depth_bins",
    "heatmap_span",
    "overlay_alpha",
    "focal_length_px",
    "object_min_pixels",
    "object_min_size",
    "object_max_distance",
    "cloud_decimation",
}


def test_every_default_is_valid_and_only_the_tuning_parameters_are_dynamic() -> None:
    for spec in PARAMETERS:
        assert spec.type in PARAMETER_TYPES, spec.name
        assert spec.description, spec.name
        check_value(spec.name, spec.default)
    assert {s.name for s in PARAMETERS if not s.read_only} == DYNAMIC
    assert len({s.name for s in PARAMETERS}) == len(PARAMETERS)


def test_default_settings_defer_to_the_model_card() -> None:
    settings = runtime_settings({})
    assert settings.threshold is None and settings.score_method is None
    assert settings.danger == DangerZone(0.0, 20.0, 20)
    assert settings.depth_bins == DepthBins(DEFAULT_EDGES_M)
    assert (settings.max_input_age_s, settings.heatmap_span, settings.overlay_alpha) == (0.5, 40.0, 0.5)
    assert settings.max_input_pixels == 16_000_000
    assert validate_changes({"max_input_pixels": 640 * 480}, default_values()).max_input_pixels == 307_200


def test_valid_run_time_changes_produce_new_settings() -> None:
    current = default_values()
    settings = validate_changes(
        {
            "threshold": 1.5,
            "score_method": "energy",
            "danger_range": [2.0, 30.0],
            "depth_bins": [0.0, 10.0, 20.0],
        },
        current,
    )
    assert settings.threshold == 1.5 and settings.score_method == "energy"
    assert settings.danger == DangerZone(2.0, 30.0, 20)
    assert settings.depth_bins.ranges == [(0.0, 10.0), (10.0, 20.0), (20.0, math.inf)]
    assert validate_changes({"threshold": math.nan}, {**current, "threshold": 1.5}).threshold is None
    assert validate_changes({"threshold": -math.inf}, current).threshold == -math.inf
    assert validate_changes({"score_method": ""}, {**current, "score_method": "msp"}).score_method is None
    as_from_service = validate_changes({"danger_range": array.array("d", [1.0, 2.0])}, current)
    assert as_from_service.danger == DangerZone(1.0, 2.0, 20)
    # QoS overrides and other names are not this module's to judge.
    assert validate_changes(
        {"qos_overrides./front/image.subscription.depth": 3}, current
    ) == runtime_settings({})


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"model": "other.safetensors"}, "read-only"),
        ({"cameras": ["a"]}, "read-only"),
        ({"score_method": "magic"}, "score_method must be one of"),
        ({"danger_range": [20.0, 5.0]}, "danger_range"),
        ({"danger_range": [5.0]}, r"\[near, far\]"),
        ({"danger_min_pixels": 0}, ">= 1"),
        ({"depth_bins": [0.0, 10.0, 5.0]}, "depth_bins"),
        ({"depth_bins": [10.0]}, "depth_bins"),
        ({"overlay_alpha": 1.5}, "<= 1.0"),
        ({"heatmap_span": 0.0}, ">= 0.001"),
        ({"max_input_age": -1.0}, ">= 0.0"),
        ({"max_input_pixels": 0}, ">= 1024"),
        ({"max_input_pixels": 2**31}, "<= 1073741824"),
        ({"max_input_pixels": 1.5e6}, "type int"),
        ({"threshold": "high"}, "type double"),
        ({"danger_min_pixels": 2.5}, "type int"),
        ({"depth_bins": ["a", "b"]}, "type double_array"),
    ],
)
def test_invalid_run_time_changes_are_refused(changes: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        validate_changes(changes, default_values())


def test_node_config_from_defaults_and_its_topics() -> None:
    config = node_config({})
    assert config.cameras == ("camera",) and config.outputs == OUTPUT_NAMES
    assert config.autostart and config.warmup_shape == (256, 512)
    assert config.image_topic("camera") == "camera/image"
    assert config.depth_topic("camera") == "camera/depth"
    compressed = node_config({"compressed": True, "compressed_depth": True, "cameras": ["front/left"]})
    assert compressed.image_topic("front/left") == "front/left/image/compressed"
    assert compressed.depth_topic("front/left") == "front/left/depth/compressedDepth"
    assert node_config({"use_depth": False}).depth_topic("camera") is None
    assert node_config({"warmup_shape": [0, 0]}).warmup_shape is None
    assert output_topic("front", "overlay") == "front/overlay"


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"cameras": []}, "at least one"),
        ({"cameras": ["front", "front"]}, "distinct"),
        ({"cameras": ["1front"]}, "not a valid"),
        ({"cameras": ["front cam"]}, "not a valid"),
        ({"cameras": ["/front"]}, "not a valid"),
        ({"outputs": ["overlay", "segmentation"]}, "outputs must be"),
        ({"outputs": []}, "outputs must be"),
        ({"device": "gpu"}, "device must be"),
        ({"precision": "int8"}, "precision must be one of"),
        ({"warmup_shape": [16, 64]}, "warmup_shape"),
        ({"warmup_shape": [64]}, "warmup_shape"),
        ({"warmup_shape": []}, "warmup_shape"),
        ({"warmup_shape": [0, 64]}, "warmup_shape"),
        ({"sync_queue_size": 0}, ">= 1"),
        ({"publisher_depth": 10}, "<= 5"),
    ],
)
def test_invalid_configuration_is_refused(values: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        node_config(values)


def test_devices_accepted() -> None:
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert node_config({"device": device}).device == device


def test_relative_model_paths_resolve_to_the_share_dir_then_the_working_dir(tmp_path: Path) -> None:
    share = tmp_path / "share"
    (share / "models").mkdir(parents=True)
    shipped = share / "models" / "m.safetensors"
    shipped.write_bytes(b"x")
    work = tmp_path / "work"
    work.mkdir()
    local = work / "local.safetensors"
    local.write_bytes(b"y")
    assert resolve_model_path("m.safetensors", share, work) == shipped
    assert resolve_model_path("local.safetensors", share, work) == local
    assert resolve_model_path(str(local), share, work) == local
    assert resolve_model_path("local.safetensors", None, work) == local
    with pytest.raises(ParameterError, match=r"missing\.safetensors' not found") as error:
        resolve_model_path("missing.safetensors", share, work)
    assert str(share / "models" / "missing.safetensors") in str(error.value)
    assert str(work / "missing.safetensors") in str(error.value)


def test_shipped_parameter_file_holds_valid_strictly_typed_values() -> None:
    document = yaml.safe_load((CONFIG_DIR / "segmenter.yaml").read_text())
    values = document["/**"]["ros__parameters"]
    assert set(values) <= set(SPECS)
    for name, value in values.items():
        check_value(name, value)
        element_type = SPECS[name].type.removesuffix("_array")
        elements = value if SPECS[name].type.endswith("_array") else [value]
        if element_type == "double":  # ROS refuses an integer literal for a double parameter
            assert all(isinstance(v, float) for v in elements), name
    config = node_config(values)
    assert config.outputs == OUTPUT_NAMES and config.model.endswith(".safetensors")
    assert runtime_settings(values) == runtime_settings({})  # the file documents the defaults


def test_rviz_config_shows_image_outputs_of_the_default_camera() -> None:
    document = yaml.safe_load((CONFIG_DIR / "segment.rviz").read_text())
    displays = document["Visualization Manager"]["Displays"]
    topics = [d["Topic"]["Value"] for d in displays if d["Class"] == "rviz_default_plugins/Image"]
    camera = node_config({}).cameras[0]
    assert topics == [f"/{camera}/overlay", f"/{camera}/anomaly_heatmap", f"/{camera}/anomaly_mask"]
    assert all(t.rsplit("/", 1)[1] in IMAGE_OUTPUT_ENCODINGS for t in topics)
