"""Stamp synchroniser: each message of a primary stream (the image) with the nearest-stamped message of
every secondary stream (depth, camera_info), without ROS; the node feeds it from its callbacks.

message_filters' ApproximateTimeSynchronizer (which has no pip wheel) settles a set only when the next
message of every topic has arrived, which costs a frame of latency. Here a primary message is settled,
and handed on, by the very message that makes its partners certain:

- a secondary message stamped at or after the primary has arrived: stamps grow along a stream, so no
  later one can be nearer; the partner is the nearer of it and the last one before the primary; or
- every secondary message is older, and the stream's next one, expected no sooner than half its
  smallest recent stamp gap after its newest (half: still a lower bound when each gap seen so far
  spanned a lost message), would lie farther away than the best partner already there (depth stamped
  a few ms before its image: handed on with the image at once).

A partner must lie within ``slop_s``. A *required* stream (depth) without one drops the primary, counted
as unpaired; an *optional* one (camera_info) gives None, and gives None at once while it has sent nothing
yet or is overdue by more than the slop, so a camera without it is never held back.

Memory and waiting are bounded: each stream keeps its newest ``queue_size`` messages; a primary pushed
out of a full queue of waiting ones is unpaired, and settling a primary settles every older one that is
still waiting as unpaired (they would come out after a newer frame). A stamp going backwards (a bag
restarting) empties that stream's queue first.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PRIMARY = "primary"
_RECENT_GAPS = 8


@dataclass(frozen=True)
class SyncedSet:
    """A primary message and its partners by stream name (None: an optional stream had none)."""

    stamp_ns: int
    primary: Any
    partners: dict[str, Any]


@dataclass(frozen=True)
class SyncCounters:
    paired: int = 0  # primaries handed on
    unpaired: int = 0  # primaries dropped: no partner within the slop on a required stream, or pushed out


class _Stream:
    def __init__(self, queue_size: int) -> None:
        self.messages: deque[tuple[int, Any]] = deque(maxlen=queue_size)
        self.gaps: deque[int] = deque(maxlen=_RECENT_GAPS)

    def add(self, stamp_ns: int, message: Any) -> bool:
        """Append; False when the stamp went backwards and the queue was emptied first."""
        in_order = True
        if self.messages:
            gap = stamp_ns - self.messages[-1][0]
            if gap < 0:
                self.messages.clear()
                self.gaps.clear()
                in_order = False
            elif gap > 0:
                self.gaps.append(gap)
        self.messages.append((stamp_ns, message))
        return in_order

    def earliest_next_ns(self) -> int:
        """The soonest stamp the stream's next message can carry."""
        newest = self.messages[-1][0]
        return newest + (min(self.gaps) // 2 if self.gaps else 1)


class StampSynchronizer:
    """Thread-safe; ``add`` returns the sets that the message settled, oldest first."""

    def __init__(
        self,
        required: Sequence[str] = (),
        optional: Sequence[str] = (),
        slop_s: float = 0.05,
        queue_size: int = 5,
    ) -> None:
        names = [*required, *optional]
        if PRIMARY in names or len(set(names)) != len(names):
            raise ValueError(f"secondary streams must be distinct and not '{PRIMARY}', got {names}")
        if slop_s < 0 or queue_size < 1:
            raise ValueError(f"need slop_s >= 0 and queue_size >= 1, got {slop_s} and {queue_size}")
        self.required = tuple(required)
        self.optional = tuple(optional)
        self.slop_ns = round(slop_s * 1e9)
        self._waiting: deque[tuple[int, Any]] = deque()
        self._queue_size = queue_size
        self._streams = {name: _Stream(queue_size) for name in names}
        self._counters = SyncCounters()
        self._lock = threading.Lock()

    @property
    def counters(self) -> SyncCounters:
        with self._lock:
            return self._counters

    def add(self, stream: str, stamp_ns: int, message: Any) -> list[SyncedSet]:
        """Feed one message of ``stream`` (``PRIMARY`` or a secondary's name)."""
        with self._lock:
            if stream == PRIMARY:
                if self._waiting and stamp_ns < self._waiting[-1][0]:
                    self._drop(len(self._waiting))
                if len(self._waiting) == self._queue_size:
                    self._drop(1)
                self._waiting.append((stamp_ns, message))
            elif stream in self._streams:
                self._streams[stream].add(stamp_ns, message)
            else:
                raise ValueError(f"unknown stream '{stream}'; expected {PRIMARY} or {list(self._streams)}")
            return self._settle()

    def _settle(self) -> list[SyncedSet]:
        outcomes = [self._partners(stamp_ns) for stamp_ns, _ in self._waiting]
        settled = [i for i, outcome in enumerate(outcomes) if outcome is not None]
        if not settled:
            return []
        synced = []
        for index in range(settled[-1] + 1):
            stamp_ns, message = self._waiting.popleft()
            partners = outcomes[index]
            if partners is None or any(partners[name] is None for name in self.required):
                self._count(unpaired=1)
                continue
            self._count(paired=1)
            synced.append(SyncedSet(stamp_ns, message, partners))
        return synced

    def _partners(self, stamp_ns: int) -> dict[str, Any] | None:
        """Each secondary's partner (None: it has none), or None while any of them is not yet certain."""
        partners = {}
        for name, stream in self._streams.items():
            settled, partner = self._partner(stream, stamp_ns, name in self.required)
            if not settled:
                return None
            partners[name] = partner
        return partners

    def _partner(self, stream: _Stream, stamp_ns: int, required: bool) -> tuple[bool, Any]:
        if not stream.messages:
            return not required, None
        best_distance, best = self.slop_ns + 1, None
        for message_stamp_ns, message in stream.messages:
            distance = abs(message_stamp_ns - stamp_ns)
            if distance < best_distance:
                best_distance, best = distance, message
        if stream.messages[-1][0] >= stamp_ns:
            return True, best
        # All older: settled when no later message could be nearer (best_distance is slop + 1 when
        # there is no partner yet), or, for an optional stream, when it is overdue by more than the slop.
        earliest_next_ns = stream.earliest_next_ns()
        if earliest_next_ns >= stamp_ns + best_distance:
            return True, best
        if not required and earliest_next_ns + self.slop_ns < stamp_ns:
            return True, best
        return False, None

    def _drop(self, count: int) -> None:
        for _ in range(count):
            self._waiting.popleft()
        self._count(unpaired=count)

    def _count(self, paired: int = 0, unpaired: int = 0) -> None:
        c = self._counters
        self._counters = SyncCounters(c.paired + paired, c.unpaired + unpaired)
