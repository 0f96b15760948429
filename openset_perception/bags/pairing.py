"""Pairing the streams of one camera by header stamp, like the node's approximate-time synchroniser.

Every message of the anchor stream (the image, or the node's score map in eval-live) becomes one
frame. Each other stream contributes the unused message whose stamp is nearest to the anchor's and
at most ``slop`` away, or nothing. A frame is released once every other stream has moved past
``stamp + slop`` (no better partner can come), when more than ``queue_size`` frames wait (a stream
that falls silent cannot hold frames back for ever), or when the input ends. Each other stream keeps
at most ``queue_size`` unpaired messages, so memory stays bounded whatever the input.
Messages that no frame took are reported as discarded, so callers can say e.g. which ground-truth
frames had no image.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

NANOSECONDS = 1_000_000_000


@dataclass
class PairedFrame:
    stamp_ns: int
    messages: dict[str, Any] = field(default_factory=dict)  # stream -> message, the anchor included


@dataclass(frozen=True)
class Discarded:
    stream: str
    stamp_ns: int


class StampPairer:
    def __init__(
        self,
        anchor: str,
        streams: Iterable[str] = (),
        slop_ns: int = 0,
        queue_size: int = 16,
        open_streams: bool = False,
    ) -> None:
        """``streams``: the other streams expected; a stream seen later in ``add`` joins them.

        ``open_streams``: the list of streams is not known up front (a damaged bag read record by
        record), so a frame also waits until a later anchor has moved past ``stamp + slop``: by then
        the streams recorded with it have shown up, even those never seen before.
        """
        if slop_ns < 0:
            raise ValueError(f"slop must be >= 0, got {slop_ns} ns")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.anchor = anchor
        self.slop_ns = slop_ns
        self.queue_size = queue_size
        self.open_streams = open_streams
        self._anchors: deque[tuple[int, Any]] = deque()
        self._waiting: dict[str, list[tuple[int, Any]]] = {}
        self._newest: dict[str, int] = {}
        self.discarded: list[Discarded] = []
        for stream in streams:
            self._add_stream(stream)

    def _add_stream(self, stream: str) -> None:
        if stream != self.anchor and stream not in self._waiting:
            self._waiting[stream] = []

    def add(self, stream: str, stamp_ns: int, message: Any) -> None:
        if stream == self.anchor:
            self._anchors.append((stamp_ns, message))
            return
        self._add_stream(stream)
        waiting = self._waiting[stream]
        waiting.append((stamp_ns, message))
        self._newest[stream] = max(stamp_ns, self._newest.get(stream, stamp_ns))
        if len(waiting) > self.queue_size:  # the anchor stream lags or stopped: keep memory bounded
            oldest = min(range(len(waiting)), key=lambda index: waiting[index][0])
            self.discarded.append(Discarded(stream, waiting.pop(oldest)[0]))

    def pop_ready(self, flush: bool = False) -> list[PairedFrame]:
        """Frames that can be completed now (all of them with ``flush``, at the end of the input)."""
        ready = []
        while self._anchors and (flush or len(self._anchors) > self.queue_size or self._complete()):
            ready.append(self._pair(*self._anchors.popleft()))
        if flush:
            for stream, waiting in self._waiting.items():
                self.discarded += [Discarded(stream, stamp) for stamp, _ in waiting]
                waiting.clear()
        return ready

    def _complete(self) -> bool:
        deadline = self._anchors[0][0] + self.slop_ns
        if self.open_streams and self._anchors[-1][0] <= deadline:
            return False
        return all(self._newest.get(stream, deadline) > deadline for stream in self._waiting)

    def _pair(self, stamp_ns: int, anchor_message: Any) -> PairedFrame:
        frame = PairedFrame(stamp_ns, {self.anchor: anchor_message})
        for stream, waiting in self._waiting.items():
            best = None
            for index, (stamp, _) in enumerate(waiting):
                distance = abs(stamp - stamp_ns)
                if distance <= self.slop_ns and (best is None or distance < abs(waiting[best][0] - stamp_ns)):
                    best = index
            if best is not None:
                frame.messages[stream] = waiting.pop(best)[1]
            # Older messages can no longer pair: later anchors have later stamps.
            too_old = [item for item in waiting if item[0] < stamp_ns - self.slop_ns]
            if too_old:
                self.discarded += [Discarded(stream, stamp) for stamp, _ in too_old]
                waiting[:] = [item for item in waiting if item[0] >= stamp_ns - self.slop_ns]
        return frame
