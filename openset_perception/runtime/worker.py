"""The single inference thread: take the latest frames, run the pipeline, hand results to a publisher.

Nothing a frame or a publisher does can stop the loop: bad input is reported and skipped, and any
other exception is reported and counted, then the next frames are taken.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from openset_perception.runtime.frame_buffer import CameraFrame, LatestFrameBuffer
from openset_perception.runtime.health import HealthMonitor
from openset_perception.runtime.pipeline import CameraResult, InferencePipeline, Rejected, WantedOutputs


class InferenceWorker:
    def __init__(
        self,
        buffer: LatestFrameBuffer,
        pipeline: InferencePipeline,
        wanted: WantedOutputs,
        publish: Callable[[CameraResult], None],
        on_rejected: Callable[[Rejected], None],
        on_failure: Callable[[Exception], None],
        health: HealthMonitor,
        clock: Callable[[], float] = time.monotonic,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self._buffer = buffer
        self._pipeline = pipeline
        self._wanted = wanted
        self._publish = publish
        self._on_rejected = on_rejected
        self._on_failure = on_failure
        self._health = health
        self._clock = clock
        self._on_notice = on_notice
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            raise RuntimeError("the inference worker is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="segmenter-inference", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the loop to end after the current batch and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            # A short timeout so a stop request is noticed without closing the shared buffer.
            frames = self._buffer.take(timeout_s=0.1)
            if frames and not self._stop.is_set():
                self.step(frames)

    def step(self, frames: list[CameraFrame]) -> None:
        """Process one set of frames; exposed so tests can drive the loop synchronously."""
        try:
            outcome = self._pipeline.process(frames, self._wanted)
        except Exception as error:  # the worker must survive anything a batch does
            self._health.record_failure()
            self._on_failure(error)
            return
        if self._on_notice is not None:
            for notice in outcome.notices:
                self._on_notice(notice)
        for rejected in outcome.rejected:
            self._health.record_bad_input()
            self._on_rejected(rejected)
        for failed in outcome.failed:
            self._health.record_failure()
            self._on_failure(failed.error)
        for result in outcome.results:
            try:
                self._publish(result)
            except Exception as error:
                self._health.record_failure()
                self._on_failure(error)
                continue
            self._health.record_output(self._clock() - result.frame.received_s)
