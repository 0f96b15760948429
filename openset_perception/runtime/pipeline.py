"""One inference step of the node: frames of several cameras in, per-camera output arrays and reports out.

Settings changed at run time (threshold, score method, depth bins, ...) are handed over with
``update`` from any thread and applied by the worker before its next batch, so the engine is only
ever touched by the worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from openset_perception.engine import Segmenter
from openset_perception.geometry import Intrinsics, anomaly_points
from openset_perception.image_codec import ImageDecodeError
from openset_perception.objects import UnknownObject, find_objects
from openset_perception.runtime.camera_batch import DecodedFrame, FrameMaps, decode_frame, segment_frames
from openset_perception.runtime.depth_report import depth_report_statuses
from openset_perception.runtime.frame_buffer import CameraFrame
from openset_perception.runtime.object_report import object_statuses
from openset_perception.runtime.outputs import (
    DEPTH_OUTPUTS,
    DEPTH_REPORT,
    UNKNOWN_OBJECTS,
    UNKNOWN_POINTS,
    RenderStyle,
    engine_outputs,
    heatmap_range,
    render_image_outputs,
)
from openset_perception.runtime.parameters import RuntimeSettings
from openset_perception.runtime.status import StatusRecord

WantedOutputs = Callable[[str], Collection[str]]


@dataclass(frozen=True)
class CameraResult:
    frame: CameraFrame
    images: dict[str, np.ndarray]  # output name -> array in the output's encoding
    depth_statuses: list[StatusRecord] | None  # None when not requested or the frame had no depth
    objects: list[UnknownObject] | None = None  # None when unknown_objects was not requested / no depth
    points: np.ndarray | None = None  # (N, 4) x, y, z, score; None when not requested / no 3D


@dataclass(frozen=True)
class Rejected:
    frame: CameraFrame
    reason: str


class CameraFailure(RuntimeError):
    """An unexpected error confined to one camera's frame; the other cameras' frames went on."""


@dataclass(frozen=True)
class Failed:
    frame: CameraFrame
    error: CameraFailure  # names the camera; the original exception is its __cause__


@dataclass(frozen=True)
class BatchOutcome:
    results: list[CameraResult] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # once per change, e.g. 3D outputs switched off

    def fail(self, frame: CameraFrame, error: Exception) -> None:
        failure = CameraFailure(f"camera '{frame.camera}': {type(error).__name__}: {error}")
        failure.__cause__ = error
        self.failed.append(Failed(frame, failure))


class InferencePipeline:
    def __init__(self, segmenter: Segmenter, settings: RuntimeSettings) -> None:
        self.segmenter = segmenter
        self._card_threshold = segmenter.threshold
        self._card_score_method = segmenter.score_method
        self._palette = np.asarray(segmenter.card.palette, dtype=np.uint8)
        self._pending: RuntimeSettings | None = None
        self._without_3d: set[str] = set()  # cameras whose 3D outputs are off, already reported
        self._apply(settings)

    @property
    def settings(self) -> RuntimeSettings:
        return self._settings

    def update(self, settings: RuntimeSettings) -> None:
        """Use ``settings`` from the next ``process`` call on (safe from any thread)."""
        self._pending = settings

    def process(self, frames: Sequence[CameraFrame], wanted: WantedOutputs) -> BatchOutcome:
        """Decode, segment in batches, render what each camera's subscribers want.

        Frames that cannot be decoded are returned as ``rejected``; cameras that want nothing are
        skipped before decoding. Any other error is confined to the camera whose frame raised it
        (returned in ``failed``): the other cameras' frames are still segmented and rendered.
        """
        pending, self._pending = self._pending, None
        if pending is not None:
            self._apply(pending)
        requested = {frame.camera: set(wanted(frame.camera)) for frame in frames}
        outcome = BatchOutcome()
        decoded: list[DecodedFrame] = []
        for frame in frames:
            if not requested[frame.camera]:
                continue
            try:
                with_depth = not requested[frame.camera].isdisjoint(DEPTH_OUTPUTS)
                decoded.append(
                    decode_frame(frame, with_depth=with_depth, max_pixels=self._settings.max_input_pixels)
                )
            except ImageDecodeError as error:
                outcome.rejected.append(Rejected(frame, str(error)))
            except Exception as error:  # a message the codec did not foresee spoils only its own camera
                outcome.fail(frame, error)
        if not decoded:
            return outcome
        union = set().union(*(requested[d.frame.camera] for d in decoded))
        style = self._render_style()
        for item, frame_maps in self._segment_each_camera(decoded, engine_outputs(union), outcome):
            camera = item.frame.camera
            wants = requested[camera]
            try:
                images = render_image_outputs(item.image, frame_maps, wants, style)
                objects = points = None
                if item.depth is not None and not wants.isdisjoint(DEPTH_OUTPUTS):
                    objects, points = self._objects_and_points(item, frame_maps, wants, outcome.notices)
                statuses = None
                if DEPTH_REPORT in wants and frame_maps.depth_stats is not None:
                    statuses = depth_report_statuses(camera, frame_maps.depth_stats, self._settings.danger)
                    statuses += object_statuses(camera, objects or [], self._settings.danger)
            except Exception as error:
                outcome.fail(item.frame, error)
                continue
            outcome.results.append(
                CameraResult(
                    item.frame,
                    images,
                    statuses,
                    objects if UNKNOWN_OBJECTS in wants else None,
                    points,
                )
            )
        return outcome

    def _segment_each_camera(
        self, decoded: list[DecodedFrame], outputs: Sequence[str], outcome: BatchOutcome
    ) -> list[tuple[DecodedFrame, FrameMaps]]:
        """All frames in as few engine calls as possible; if that fails, one frame at a time, so the
        error stays with the frame that caused it."""
        try:
            return list(zip(decoded, segment_frames(self.segmenter, decoded, outputs), strict=True))
        except Exception as error:
            if len(decoded) == 1:
                outcome.fail(decoded[0].frame, error)
                return []
        segmented = []
        for item in decoded:
            try:
                (frame_maps,) = segment_frames(self.segmenter, [item], outputs)
            except Exception as error:
                outcome.fail(item.frame, error)
                continue
            segmented.append((item, frame_maps))
        return segmented

    def _objects_and_points(
        self, item: DecodedFrame, maps: FrameMaps, wants: set[str], notices: list[str]
    ) -> tuple[list[UnknownObject], np.ndarray | None]:
        assert item.depth is not None and maps.open_set is not None and maps.anomaly_score is not None
        height, width = item.depth.shape
        intrinsics = self._intrinsics(item.frame, width, height, notices)
        mask = maps.open_set == self.segmenter.num_classes
        objects = find_objects(mask, maps.anomaly_score, item.depth, intrinsics, self._settings.objects)
        points = None
        if UNKNOWN_POINTS in wants and intrinsics is not None:
            points = anomaly_points(
                item.depth, maps.anomaly_score, mask, intrinsics, self._settings.cloud_decimation
            )
        return objects, points

    def _intrinsics(
        self, frame: CameraFrame, width: int, height: int, notices: list[str]
    ) -> Intrinsics | None:
        """The frame's camera_info, else the focal-length fallback, at the depth image's size."""
        intrinsics = None
        if frame.camera_info is not None:
            intrinsics = Intrinsics.from_camera_info(frame.camera_info)
        if intrinsics is None and self._settings.focal_length_px is not None:
            intrinsics = Intrinsics.from_focal_length(self._settings.focal_length_px, width, height)
        if intrinsics is None:
            if frame.camera not in self._without_3d:
                self._without_3d.add(frame.camera)
                source = (
                    "no camera_info" if frame.camera_info is None else "an uncalibrated camera_info (K = 0)"
                )
                notices.append(
                    f"camera '{frame.camera}': {source} and focal_length_px is 0, so unknown_points is not "
                    "published and unknown_objects carry no 3D position until intrinsics arrive"
                )
            return None
        if frame.camera in self._without_3d:
            self._without_3d.discard(frame.camera)
            notices.append(f"camera '{frame.camera}': intrinsics available, 3D object outputs on")
        return intrinsics.scaled_to(width, height)

    def _apply(self, settings: RuntimeSettings) -> None:
        self.segmenter.threshold = self._card_threshold if settings.threshold is None else settings.threshold
        self.segmenter.score_method = settings.score_method or self._card_score_method
        self.segmenter.depth_bins = settings.depth_bins
        self._settings = settings

    def _render_style(self) -> RenderStyle:
        span = self._settings.heatmap_span
        return RenderStyle(
            self._palette, self._settings.overlay_alpha, heatmap_range(self.segmenter.threshold, span)
        )
