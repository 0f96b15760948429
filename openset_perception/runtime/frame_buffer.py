"""Latest-frame-only hand-over from subscription callbacks to the single inference worker.

Each camera has one slot. A new frame replaces the one waiting in its slot (counted as overwritten),
so no queue can build up however slow inference is. The worker takes the waiting frames of all
cameras at once, after giving the other cameras a short window to deliver theirs, so that frames of
one moment go through the network together. Frames whose stamp is older than ``max_input_age_s``
when taken are dropped and counted as stale. Messages stay undecoded until taken: frames that are
overwritten never cost a decode.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CameraFrame:
    """One synchronised input of one camera, as received (messages not yet decoded)."""

    camera: str
    header: Any  # passed through unchanged to every output
    stamp_s: float  # header stamp, in the clock of ``LatestFrameBuffer.now``
    received_s: float  # monotonic receive time, for latency
    image_msg: Any
    depth_msg: Any = None
    camera_info: Any = None  # sensor_msgs/CameraInfo paired with the image, or None


@dataclass(frozen=True)
class BufferCounters:
    received: int = 0
    overwritten: int = 0
    stale: int = 0
    taken: int = 0

    @property
    def dropped(self) -> int:
        return self.overwritten + self.stale


class LatestFrameBuffer:
    """Thread-safe one-slot-per-camera buffer; many producers, one consumer."""

    def __init__(
        self,
        cameras: Sequence[str],
        max_input_age_s: float = 0.0,
        batch_window_s: float = 0.0,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not cameras or len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras must be a non-empty list of distinct names, got {list(cameras)}")
        self.cameras = tuple(cameras)
        self.max_input_age_s = max_input_age_s  # 0 disables the age check
        self.batch_window_s = batch_window_s
        self._now = now
        self._monotonic = monotonic
        self._slots: dict[str, CameraFrame] = {}
        self._first_pending_s = 0.0
        self._counters = BufferCounters()
        self._closed = False
        self._condition = threading.Condition()

    @property
    def counters(self) -> BufferCounters:
        with self._condition:
            return self._counters

    def put(self, frame: CameraFrame) -> None:
        if frame.camera not in self.cameras:
            raise ValueError(f"unknown camera '{frame.camera}'; expected one of {self.cameras}")
        with self._condition:
            overwritten = frame.camera in self._slots
            if not self._slots:
                self._first_pending_s = self._monotonic()
            self._slots[frame.camera] = frame
            c = self._counters
            self._counters = BufferCounters(c.received + 1, c.overwritten + overwritten, c.stale, c.taken)
            self._condition.notify_all()

    def take(self, timeout_s: float | None = None) -> list[CameraFrame]:
        """Block until fresh frames are waiting; return them in camera order ([] on timeout or close)."""
        deadline = None if timeout_s is None else self._monotonic() + timeout_s
        with self._condition:
            while True:
                if not self._wait_until(lambda: bool(self._slots) or self._closed, deadline):
                    return []
                if self._closed:
                    return []
                gather_deadline = self._first_pending_s + self.batch_window_s
                self._wait_until(
                    lambda: len(self._slots) == len(self.cameras) or self._closed, gather_deadline
                )
                frames = self._pop_fresh()
                if frames:
                    return frames

    def close(self) -> None:
        """Wake the worker for good; later ``take`` calls return at once."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def _wait_until(self, predicate: Callable[[], bool], deadline: float | None) -> bool:
        while not predicate():
            if deadline is None:
                self._condition.wait()
                continue
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                return False
            self._condition.wait(remaining)
        return True

    def _pop_fresh(self) -> list[CameraFrame]:
        waiting = [self._slots[camera] for camera in self.cameras if camera in self._slots]
        self._slots.clear()
        if self.max_input_age_s > 0:
            now = self._now()
            fresh = [f for f in waiting if now - f.stamp_s <= self.max_input_age_s]
        else:
            fresh = waiting
        c = self._counters
        stale = len(waiting) - len(fresh)
        self._counters = BufferCounters(c.received, c.overwritten, c.stale + stale, c.taken + len(fresh))
        return fresh
