"""Pipeline and worker end to end without ROS: messages in, per-camera outputs out, bad input survived."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from openset_perception.engine import Segmenter
from openset_perception.image_codec import numpy_to_image, rosbags_factories
from openset_perception.runtime import pipeline as pipeline_module
from openset_perception.runtime.frame_buffer import CameraFrame, LatestFrameBuffer
from openset_perception.runtime.health import HealthMonitor
from openset_perception.runtime.outputs import IMAGE_OUTPUT_ENCODINGS, OUTPUT_NAMES
from openset_perception.runtime.parameters import runtime_settings
from openset_perception.runtime.pipeline import CameraFailure, CameraResult, InferencePipeline, Rejected
from openset_perception.runtime.status import Level
from openset_perception.runtime.worker import InferenceWorker

FACTORIES = rosbags_factories(get_typestore(Stores.ROS2_JAZZY))
HEIGHT, WIDTH = 48, 64
K = 8


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint: Path) -> Segmenter:
    return Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")


def camera_frame(camera: str, seed: int, depth_m: float = 8.0, image_msg: Any = None) -> CameraFrame:
    image = np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    header = FACTORIES.header(1_000_000_000 + seed, f"{camera}_optical")
    if image_msg is None:
        image_msg = numpy_to_image(image, "rgb8", header, msg_factory=FACTORIES.image)
    depth = numpy_to_image(
        np.full((HEIGHT, WIDTH), depth_m, np.float32), "32FC1", msg_factory=FACTORIES.image
    )
    return CameraFrame(camera, header, 1.0, time.monotonic(), image_msg, depth)


def image_of(frame: CameraFrame) -> np.ndarray:
    return np.frombuffer(bytes(frame.image_msg.data), np.uint8).reshape(HEIGHT, WIDTH, 3)


def everything(camera: str) -> tuple[str, ...]:
    return OUTPUT_NAMES


def test_all_outputs_per_camera_match_single_frame_engine_results(segmenter: Segmenter) -> None:
    pipeline = InferencePipeline(segmenter, runtime_settings({}))
    frames = [camera_frame("front", 1), camera_frame("rear", 2, depth_m=30.0)]
    outcome = pipeline.process(frames, everything)
    assert outcome.rejected == []
    assert [r.frame for r in outcome.results] == frames  # headers travel untouched
    for result in outcome.results:
        reference = segmenter.segment([image_of(result.frame)])
        assert set(result.images) == set(IMAGE_OUTPUT_ENCODINGS)
        np.testing.assert_array_equal(result.images["semantic"], reference.semantic[0])
        np.testing.assert_array_equal(result.images["open_set"], reference.open_set[0])
        np.testing.assert_array_equal(result.images["anomaly_mask"], (reference.open_set[0] == K) * 255)
        np.testing.assert_allclose(result.images["anomaly_score"], reference.anomaly_score[0], atol=1e-4)
        assert result.images["overlay"].shape == (HEIGHT, WIDTH, 3)
        assert result.images["anomaly_heatmap"].shape == (HEIGHT, WIDTH, 3)
        assert len(result.depth_statuses) == len(segmenter.depth_bins.ranges)
    front, rear = outcome.results
    front_bin = next(s for s in front.depth_statuses if s.name == "front depth 5-10 m")
    rear_bin = next(s for s in rear.depth_statuses if s.name == "rear depth 30-35 m")
    assert front_bin.values["valid_pixels"] == rear_bin.values["valid_pixels"] == str(HEIGHT * WIDTH)


def test_cameras_without_subscribers_are_not_even_decoded(segmenter: Segmenter) -> None:
    pipeline = InferencePipeline(segmenter, runtime_settings({}))
    broken = FACTORIES.image(
        height=HEIGHT, width=WIDTH, encoding="rgb8", is_bigendian=0, step=WIDTH * 3, data=b""
    )
    frames = [camera_frame("front", 1), camera_frame("rear", 2, image_msg=broken)]
    outcome = pipeline.process(frames, lambda camera: {"overlay"} if camera == "front" else set())
    assert outcome.rejected == []
    (result,) = outcome.results
    assert result.frame.camera == "front" and set(result.images) == {"overlay"}
    assert result.depth_statuses is None
    assert pipeline.process(frames, lambda camera: ()).results == []


def test_bad_frames_are_rejected_and_the_others_still_processed(segmenter: Segmenter) -> None:
    pipeline = InferencePipeline(segmenter, runtime_settings({}))
    broken = FACTORIES.image(
        height=HEIGHT, width=WIDTH, encoding="rgb8", is_bigendian=0, step=WIDTH * 3, data=b"x"
    )
    frames = [camera_frame("front", 1, image_msg=broken), camera_frame("rear", 2)]
    outcome = pipeline.process(frames, everything)
    assert [r.frame.camera for r in outcome.rejected] == ["front"]
    assert "data length" in outcome.rejected[0].reason
    assert [r.frame.camera for r in outcome.results] == ["rear"]


def test_setting_changes_apply_from_the_next_batch(segmenter: Segmenter) -> None:
    card_threshold = segmenter.card.threshold
    pipeline = InferencePipeline(segmenter, runtime_settings({}))
    frames = [camera_frame("front", 3)]
    pipeline.update(runtime_settings({"threshold": -1e9, "danger_min_pixels": 1, "danger_range": [0.0, 9.0]}))
    (result,) = pipeline.process(frames, everything).results
    assert (result.images["open_set"] == K).all()
    warned = [s.name for s in result.depth_statuses if s.level == Level.WARN]
    assert warned == ["front depth 5-10 m", "front object 0"]  # every pixel is anomalous at 8 m

    pipeline.update(runtime_settings({"score_method": "msp", "depth_bins": [0.0, 100.0]}))
    (result,) = pipeline.process(frames, everything).results
    assert segmenter.threshold == card_threshold and segmenter.score_method == "msp"
    assert [s.name for s in result.depth_statuses] == ["front depth 0-100 m", "front depth >= 100 m"]
    pipeline.update(runtime_settings({}))
    pipeline.process(frames, lambda camera: ())
    assert segmenter.score_method == segmenter.card.score_method


class Collector:
    def __init__(self) -> None:
        self.published: list[CameraResult] = []
        self.rejected: list[Rejected] = []
        self.failures: list[Exception] = []
        self.event = threading.Event()

    def publish(self, result: CameraResult) -> None:
        self.published.append(result)
        self.event.set()


def test_worker_publishes_latest_frames_and_survives_failures(segmenter: Segmenter) -> None:
    buffer = LatestFrameBuffer(["front", "rear"], batch_window_s=0.2)
    health = HealthMonitor()
    collector = Collector()
    explode = {"on": True}

    def wanted(camera: str) -> tuple[str, ...]:
        if explode["on"]:
            raise RuntimeError("subscriber lookup failed")
        return ("semantic",)

    worker = InferenceWorker(
        buffer,
        InferencePipeline(segmenter, runtime_settings({})),
        wanted,
        collector.publish,
        collector.rejected.append,
        collector.failures.append,
        health,
    )
    worker.start()
    try:
        buffer.put(camera_frame("front", 1))
        deadline = time.monotonic() + 5
        while not collector.failures and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [str(f) for f in collector.failures] == ["subscriber lookup failed"]
        assert worker.running

        explode["on"] = False
        broken = dataclasses.replace(
            camera_frame("rear", 9),
            image_msg=FACTORIES.image(height=0, width=0, encoding="rgb8", is_bigendian=0, step=0, data=b""),
        )
        buffer.put(camera_frame("front", 2))
        buffer.put(broken)
        assert collector.event.wait(5.0)
        deadline = time.monotonic() + 5
        while not collector.rejected and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.stop()
    assert not worker.running
    assert [r.frame.header.stamp.nanosec for r in collector.published] == [2]
    assert [r.frame.camera for r in collector.rejected] == ["rear"]
    snapshot = health.snapshot()
    assert (snapshot.bad_inputs, snapshot.failed_batches) == (1, 1)
    assert snapshot.latency_p50_ms is not None and snapshot.latency_p50_ms > 0


def test_a_failing_publisher_does_not_stop_the_other_cameras(segmenter: Segmenter) -> None:
    published: list[str] = []
    failures: list[Exception] = []

    def publish(result: CameraResult) -> None:
        if result.frame.camera == "front":
            raise OSError("publisher gone")
        published.append(result.frame.camera)

    worker = InferenceWorker(
        LatestFrameBuffer(["front", "rear"]),
        InferencePipeline(segmenter, runtime_settings({})),
        lambda camera: ("open_set",),
        publish,
        lambda rejected: None,
        failures.append,
        HealthMonitor(),
    )
    worker.step([camera_frame("front", 1), camera_frame("rear", 2)])
    assert published == ["rear"] and [str(f) for f in failures] == ["publisher gone"]


@dataclasses.dataclass
class MessageWithoutStep:
    """A message-like object the codec does not foresee: reading it raises AttributeError."""

    height: int = HEIGHT
    width: int = WIDTH
    encoding: str = "rgb8"
    is_bigendian: int = 0
    data: bytes = bytes(HEIGHT * WIDTH * 3)


def test_an_unexpected_decoding_error_stays_with_its_camera(segmenter: Segmenter) -> None:
    pipeline = InferencePipeline(segmenter, runtime_settings({}))
    frames = [camera_frame("front", 1, image_msg=MessageWithoutStep()), camera_frame("rear", 2)]
    outcome = pipeline.process(frames, everything)
    assert [r.frame.camera for r in outcome.results] == ["rear"]
    (failed,) = outcome.failed
    assert failed.frame.camera == "front" and isinstance(failed.error, CameraFailure)
    assert str(failed.error).startswith("camera 'front': AttributeError")
    assert isinstance(failed.error.__cause__, AttributeError)


def test_an_engine_failure_on_one_frame_keeps_the_other_cameras(
    segmenter: Segmenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same-size frames share one forward pass; when it fails, each frame is retried on its own."""
    poisoned = image_of(camera_frame("front", 1))
    real_segment = segmenter.segment
    calls: list[int] = []

    def segment(images: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(images))
        if any(np.array_equal(image, poisoned) for image in images):
            raise RuntimeError("CUDA out of memory")
        return real_segment(images, *args, **kwargs)

    monkeypatch.setattr(segmenter, "segment", segment)
    pipeline = InferencePipeline(segmenter, runtime_settings({}))
    frames = [camera_frame("front", 1), camera_frame("rear", 2), camera_frame("left", 3)]
    outcome = pipeline.process(frames, everything)
    assert calls == [3, 1, 1, 1]
    assert [r.frame.camera for r in outcome.results] == ["rear", "left"]
    assert [f.frame.camera for f in outcome.failed] == ["front"]
    assert "RuntimeError: CUDA out of memory" in str(outcome.failed[0].error)
    reference = real_segment([image_of(frames[1])])
    np.testing.assert_array_equal(outcome.results[0].images["semantic"], reference.semantic[0])


def test_a_rendering_failure_stays_with_its_camera(
    segmenter: Segmenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_render = pipeline_module.render_image_outputs

    def render(image: np.ndarray, *args: Any) -> Any:
        if np.array_equal(image, image_of(camera_frame("rear", 2))):
            raise ValueError("palette index out of range")
        return real_render(image, *args)

    monkeypatch.setattr(pipeline_module, "render_image_outputs", render)
    outcome = InferencePipeline(segmenter, runtime_settings({})).process(
        [camera_frame("front", 1), camera_frame("rear", 2)], everything
    )
    assert [r.frame.camera for r in outcome.results] == ["front"]
    assert [f.frame.camera for f in outcome.failed] == ["rear"]


def test_the_worker_counts_and_reports_camera_failures(segmenter: Segmenter) -> None:
    published: list[str] = []
    failures: list[Exception] = []
    health = HealthMonitor()
    worker = InferenceWorker(
        LatestFrameBuffer(["front", "rear"]),
        InferencePipeline(segmenter, runtime_settings({})),
        lambda camera: ("open_set",),
        lambda result: published.append(result.frame.camera),
        lambda rejected: None,
        failures.append,
        health,
    )
    worker.step([camera_frame("front", 1, image_msg=MessageWithoutStep()), camera_frame("rear", 2)])
    assert published == ["rear"]
    assert [str(f).split(":")[0] for f in failures] == ["camera 'front'"]
    assert health.snapshot().failed_batches == 1


def test_max_input_pixels_is_applied_to_the_next_batch(segmenter: Segmenter) -> None:
    pipeline = InferencePipeline(segmenter, runtime_settings({}))
    frames = [camera_frame("front", 1)]
    assert len(pipeline.process(frames, everything).results) == 1
    pipeline.update(runtime_settings({"max_input_pixels": HEIGHT * WIDTH - 1}))
    outcome = pipeline.process(frames, everything)
    assert outcome.results == [] and "exceeds the maximum input size" in outcome.rejected[0].reason


def test_fuzzed_messages_of_one_camera_never_cost_the_other_camera_its_frame(segmenter: Segmenter) -> None:
    """Random field values for the front camera's image and depth messages (fixed seed, bounded count):
    every batch still yields the rear camera's result, and the front frame is accounted for once."""
    from test_image_codec_limits import random_image_message

    rng = np.random.default_rng(2016)
    pipeline = InferencePipeline(segmenter, runtime_settings({"max_input_pixels": 4096}))
    good = camera_frame("rear", 2)
    accounted = {"results": 0, "rejected": 0, "failed": 0}
    for _ in range(40):
        fuzzed = dataclasses.replace(
            camera_frame("front", 1), image_msg=random_image_message(rng), depth_msg=random_image_message(rng)
        )
        outcome = pipeline.process([fuzzed, good], everything)
        assert [r.frame.camera for r in outcome.results][-1:] == ["rear"]
        front = {
            "results": sum(r.frame.camera == "front" for r in outcome.results),
            "rejected": len(outcome.rejected),
            "failed": len(outcome.failed),
        }
        assert sum(front.values()) == 1, front
        for key, count in front.items():
            accounted[key] += count
    assert accounted["rejected"] > 20
