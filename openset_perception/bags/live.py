"""The ROS-free core of eval-live: the running node's outputs plus the bag's ground truth in, a report out.

``ros/eval_live.py`` subscribes to the topics and hands every message to :meth:`LiveEvaluation.add`.
Each camera's frames are anchored on the node's ``anomaly_score`` output and paired by header stamp
(the node copies the input header) with its ``semantic`` and ``open_set`` outputs and the bag's depth
and ground truth, then scored by the same accumulator as eval-bag. Ground truth whose frame the node
never published (dropped under load) is reported as skipped. When the input image topic is
subscribed too, the time from its arrival to the score's arrival is the node's end-to-end latency.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from openset_perception.bags import topics
from openset_perception.bags.evaluate import decode_ground_truth
from openset_perception.bags.frames import frame_name, stamp_ns
from openset_perception.bags.pairing import NANOSECONDS, PairedFrame, StampPairer
from openset_perception.component_metrics import DEFAULT_COMPONENT_OPTIONS, ComponentOptions
from openset_perception.evaluation.accumulate import EvaluationAccumulator
from openset_perception.evaluation.report import jsonable, write_report
from openset_perception.image_codec import ImageDecodeError, decode_depth, image_to_numpy
from openset_perception.metrics import AccumulatorMode, Protocol

LOGGER = logging.getLogger(__name__)
SCORE, SEMANTIC, OPEN_SET = "anomaly_score", "semantic", "open_set"
NODE_OUTPUTS = (SCORE, SEMANTIC, OPEN_SET)
GROUND_TRUTH = (topics.GT_ANOMALY, topics.GT_SEMANTIC)
INPUT_IMAGE, DEPTH = "image", "depth"
END_TO_END = "node end-to-end"
_ARRIVALS_KEPT = 1000


class LiveEvaluation:
    """Feed with ``add``; ``finish`` writes metrics.json / report.md like eval-bag and returns the metrics."""

    def __init__(
        self,
        class_names: Sequence[str],
        slop_s: float = 0.05,
        queue_size: int = 50,
        mode: AccumulatorMode = "binned",
        protocol: Protocol = "pooled",
        two_fold: bool = False,
        components: ComponentOptions = DEFAULT_COMPONENT_OPTIONS,
    ) -> None:
        self.accumulator = EvaluationAccumulator(
            class_names,
            mode=mode,
            protocol=protocol,
            two_fold=two_fold,
            components=components,
        )
        self.slop_ns = round(slop_s * NANOSECONDS)
        self.queue_size = queue_size
        self._pairers: dict[str, StampPairer] = {}
        self._arrivals: OrderedDict[tuple[str, int], float] = OrderedDict()
        self._received: dict[str, int] = {}
        self._first_s: float | None = None
        self._last_s: float | None = None
        self._settings = {
            "slop_s": slop_s,
            "queue_size": queue_size,
            "mode": mode,
            "protocol": protocol,
            "two_fold": two_fold,
        }

    def add(self, camera: str, stream: str, message: Any, received_s: float) -> None:
        """One message of ``stream`` (a node output, ``depth``, ``gt/...`` or ``image``) of ``camera``;
        ``received_s`` is a monotonic arrival time."""
        stamp = stamp_ns(message)
        self._received[stream] = self._received.get(stream, 0) + 1
        self._first_s = received_s if self._first_s is None else self._first_s
        self._last_s = received_s
        if stream == INPUT_IMAGE:
            self._arrivals[(camera, stamp)] = received_s
            while len(self._arrivals) > _ARRIVALS_KEPT:
                self._arrivals.popitem(last=False)
            return
        if stream == SCORE:
            arrived = self._arrivals.pop((camera, stamp), None)
            if arrived is not None:
                self.accumulator.latency_ms.setdefault(END_TO_END, []).append((received_s - arrived) * 1e3)
        pairer = self._pairers.get(camera)
        if pairer is None:
            pairer = self._pairers[camera] = StampPairer(SCORE, (), self.slop_ns, self.queue_size)
        pairer.add(stream, stamp, message)
        self._evaluate(camera, pairer.pop_ready())

    def finish(self, out_dir: str | Path, title: str = "Live evaluation report") -> dict:
        for camera, pairer in self._pairers.items():
            self._evaluate(camera, pairer.pop_ready(flush=True))
        metrics = self.accumulator.compute()
        metrics["live"] = {"messages_received": dict(self._received), "cameras": sorted(self._pairers)}
        seconds = 0.0 if self._first_s is None or self._last_s is None else self._last_s - self._first_s
        metrics["settings"] = {**self._settings, "seconds": seconds}
        write_report(metrics, out_dir, curves=self.accumulator.curves(), title=title)
        return cast(dict, jsonable(metrics))

    def _evaluate(self, camera: str, frames: list[PairedFrame]) -> None:
        pairer = self._pairers[camera]
        # Anomaly and semantic ground truth of one frame are discarded together: one skip per frame.
        lost = dict.fromkeys(item.stamp_ns for item in pairer.discarded if item.stream in GROUND_TRUTH)
        for stamp in lost:
            self.accumulator.skip("ground truth without node output", frame_name(camera, stamp))
        pairer.discarded.clear()
        for frame in frames:
            name = frame_name(camera, frame.stamp_ns)
            try:
                maps = _decode(frame)
                self.accumulator.update(**maps)
            except ImageDecodeError as error:
                LOGGER.warning("skipping frame %s: %s", name, error)
                self.accumulator.skip("undecodable message", f"{name} ({error})")
            except ValueError as error:
                LOGGER.warning("skipping frame %s: %s", name, error)
                self.accumulator.skip("invalid ground truth", f"{name} ({error})")


def _decode(frame: PairedFrame) -> dict[str, Any]:
    messages = frame.messages

    def labels(stream: str, decode: Any) -> Any:
        return decode(messages[stream]) if stream in messages else None

    return {
        "score": image_to_numpy(messages[SCORE]),
        "semantic_pred": labels(SEMANTIC, image_to_numpy),
        "open_pred": labels(OPEN_SET, image_to_numpy),
        "gt_anomaly": labels(topics.GT_ANOMALY, decode_ground_truth),
        "gt_semantic": labels(topics.GT_SEMANTIC, decode_ground_truth),
        "depth": labels(DEPTH, decode_depth),
    }
