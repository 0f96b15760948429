"""A bag of the segmenter node's output topics, written by eval-bag for viewing in RViz or Foxglove.

The messages are what the node would publish for the same input with its default parameters: the
runtime renders them (``runtime.outputs``, ``runtime.depth_report``), the node's topic names and
encodings are used, and every output keeps the input image's header and bag time, so the output bag
can be played next to the input bag.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from openset_perception.bags import topics
from openset_perception.bags.writer import BagWriter
from openset_perception.engine import Segmenter
from openset_perception.image_codec import numpy_to_image
from openset_perception.runtime.camera_batch import FrameMaps
from openset_perception.runtime.depth_report import depth_report_statuses
from openset_perception.runtime.outputs import (
    DEPTH_REPORT,
    IMAGE_OUTPUT_ENCODINGS,
    OUTPUT_NAMES,
    RenderStyle,
    heatmap_range,
    render_image_outputs,
)
from openset_perception.runtime.parameters import runtime_settings
from openset_perception.runtime.status import StatusRecord


class OutputBagWriter:
    """Use as a context manager; ``write`` once per evaluated frame."""

    def __init__(
        self,
        path: str | Path,
        segmenter: Segmenter,
        storage: str = "mcap",
        outputs: Sequence[str] = OUTPUT_NAMES,
    ) -> None:
        unknown = set(outputs) - set(OUTPUT_NAMES)
        if unknown:
            raise ValueError(f"unknown outputs {sorted(unknown)}; choose from {OUTPUT_NAMES}")
        self.bag = BagWriter(path, storage)
        self.outputs = set(outputs)
        self._settings = runtime_settings({})
        self._style = RenderStyle(
            np.asarray(segmenter.card.palette, dtype=np.uint8),
            self._settings.overlay_alpha,
            heatmap_range(segmenter.threshold, self._settings.heatmap_span),
        )

    def __enter__(self) -> OutputBagWriter:
        self.bag.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.bag.__exit__(*exc_info)

    def write(self, camera: str, header: Any, log_time_ns: int, image: np.ndarray, maps: FrameMaps) -> None:
        """The outputs of one frame; ``image`` is the decoded input (for the overlay)."""
        factory = self.bag.factories.image
        for name, pixels in render_image_outputs(image, maps, self.outputs, self._style).items():
            message = numpy_to_image(pixels, IMAGE_OUTPUT_ENCODINGS[name], header, msg_factory=factory)
            self.bag.write(topics.output_topic(camera, name), message, log_time_ns)
        if DEPTH_REPORT in self.outputs and maps.depth_stats is not None:
            statuses = depth_report_statuses(camera, maps.depth_stats, self._settings.danger)
            report = self._diagnostic_array(header, statuses)
            self.bag.write(topics.output_topic(camera, DEPTH_REPORT), report, log_time_ns)

    def _diagnostic_array(self, header: Any, statuses: list[StatusRecord]) -> Any:
        types = self.bag.typestore.types
        status_class, key_value = (
            types["diagnostic_msgs/msg/DiagnosticStatus"],
            types["diagnostic_msgs/msg/KeyValue"],
        )
        return types[topics.DIAGNOSTIC_ARRAY](
            header=header,
            status=[
                status_class(
                    level=int(record.level),
                    name=record.name,
                    message=record.message,
                    hardware_id=record.hardware_id,
                    values=[key_value(key=key, value=value) for key, value in record.values.items()],
                )
                for record in statuses
            ],
        )
