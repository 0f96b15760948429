"""Camera frames from a bag: topics sorted into cameras, messages deserialised and paired by stamp.

A camera is any ``<cam>/image`` or ``<cam>/image/compressed`` topic (raw preferred when a bag has
both); its depth (raw preferred over compressedDepth) and ground truth are paired to each image
within the slop. Only the messages of the selected cameras are deserialised; camera_info and
unrelated topics are skipped unread.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from openset_perception.bags import topics
from openset_perception.bags.pairing import NANOSECONDS, StampPairer
from openset_perception.bags.reader import BagReader
from openset_perception.bags.salvage import RawMessage
from openset_perception.bags.writer import typestore

IMAGE, DEPTH = "image", "depth"
GT_ANOMALY, GT_SEMANTIC = topics.GT_ANOMALY, topics.GT_SEMANTIC
# Bag stream kind -> paired stream; the first kind of a stream is preferred when a bag has both.
_STREAMS = {
    topics.COLOR: IMAGE,
    topics.COLOR_COMPRESSED: IMAGE,
    topics.DEPTH: DEPTH,
    topics.DEPTH_COMPRESSED: DEPTH,
    topics.GT_ANOMALY: GT_ANOMALY,
    topics.GT_SEMANTIC: GT_SEMANTIC,
}
_PREFERENCE = list(_STREAMS)


@dataclass(frozen=True)
class BagFrame:
    camera: str
    stamp_ns: int
    log_time_ns: int  # bag time of the image message
    header: Any
    image: Any  # sensor_msgs Image or CompressedImage
    depth: Any | None
    gt_anomaly: Any | None
    gt_semantic: Any | None

    @property
    def name(self) -> str:
        return frame_name(self.camera, self.stamp_ns)


def frame_name(camera: str, stamp_ns: int) -> str:
    return f"{camera}@{stamp_ns / NANOSECONDS:.3f}"


@dataclass
class ReadStatistics:
    """What reading and pairing saw; ``take_times`` hands over the milliseconds spent since its last call."""

    image_topics: dict[str, str] = field(default_factory=dict)  # camera -> topic its frames come from
    messages: Counter[str] = field(default_factory=Counter)  # topic -> messages read
    undecodable: list[str] = field(default_factory=list)  # "topic at bag time: error"
    unpaired: Counter[str] = field(default_factory=Counter)  # stream -> messages no image took
    ground_truth_without_image: dict[str, None] = field(default_factory=dict)  # frame names, in order
    _times_ms: Counter[str] = field(default_factory=Counter)

    def add_time(self, stage: str, since: float) -> None:
        """Count the time from ``since`` (a ``time.perf_counter()`` value) until now under ``stage``."""
        self._times_ms[stage] += (time.perf_counter() - since) * 1e3

    def take_times(self) -> dict[str, float]:
        times, self._times_ms = dict(self._times_ms), Counter()
        return times


class _CameraTopics:
    """Which topic feeds which stream of which camera; decided up front, or on first sight for topics
    that a damaged bag did not announce."""

    def __init__(self, announced: Iterable[tuple[str, str]], cameras: Sequence[str] | None) -> None:
        self.wanted = None if cameras is None else {c.strip("/") for c in cameras}
        self.routes: dict[str, tuple[str, str]] = {}  # topic -> (camera, stream)
        self._chosen: dict[tuple[str, str], str] = {}  # (camera, stream) -> bag kind
        self._ignored: set[str] = set()
        announced = list(announced)
        # Without a topic list (no metadata.yaml, damaged storage) every route is found on first sight.
        self.announced = bool(announced)
        ours = [
            (_PREFERENCE.index(parsed.kind), topic, parsed)
            for topic, msgtype in announced
            if (parsed := topics.parse_camera_topic(topic, msgtype)) and parsed.kind in _STREAMS
        ]
        for _, topic, parsed in sorted(ours):
            self._route(topic, parsed)

    @property
    def cameras(self) -> list[str]:
        return sorted({camera for camera, stream in self.routes.values() if stream == IMAGE})

    def streams(self, camera: str) -> list[str]:
        return [stream for cam, stream in self.routes.values() if cam == camera and stream != IMAGE]

    def route(self, message: RawMessage) -> tuple[str, str] | None:
        if message.topic in self.routes:
            return self.routes[message.topic]
        if message.topic in self._ignored:
            return None
        parsed = topics.parse_camera_topic(message.topic, message.msgtype)
        if parsed is None or parsed.kind not in _STREAMS or not self._route(message.topic, parsed):
            self._ignored.add(message.topic)
            return None
        return self.routes[message.topic]

    def _route(self, topic: str, parsed: topics.CameraTopic) -> bool:
        if self.wanted is not None and parsed.camera not in self.wanted:
            return False
        key = (parsed.camera, _STREAMS[parsed.kind])
        if key in self._chosen and self._chosen[key] != parsed.kind:
            return False
        self._chosen[key] = parsed.kind
        self.routes[topic] = key
        return True


def stamp_ns(message: Any) -> int:
    stamp = message.header.stamp
    return int(stamp.sec) * NANOSECONDS + int(stamp.nanosec)


def announced_images(
    reader: BagReader, cameras: Sequence[str] | None = None
) -> dict[str, tuple[str, int | None]]:
    """camera -> (image topic, messages announced) for the cameras the bag's topics name."""
    routing = _CameraTopics(((t, info.msgtype) for t, info in reader.topics.items()), cameras)
    return {
        camera: (topic, reader.topics[topic].count)
        for topic, (camera, stream) in routing.routes.items()
        if stream == IMAGE
    }


def read_frames(
    reader: BagReader,
    statistics: ReadStatistics,
    cameras: Sequence[str] | None = None,
    slop_s: float = 0.05,
    queue_size: int = 16,
) -> Iterator[BagFrame]:
    """Frames of ``cameras`` (default: all) in the order they complete; see the module docstring.

    Raises ValueError at once when a requested camera is not in a bag whose topics are known.
    """
    routing = _CameraTopics(((t, info.msgtype) for t, info in reader.topics.items()), cameras)
    if cameras is not None and reader.topics:
        missing = sorted({c.strip("/") for c in cameras} - set(routing.cameras))
        if missing:
            found = ", ".join(sorted(announced_images(reader))) or "none"
            raise ValueError(f"camera(s) {', '.join(missing)} not in {reader.path} (cameras found: {found})")
    return _frames(reader, routing, statistics, round(slop_s * NANOSECONDS), queue_size)


def _frames(
    reader: BagReader, routing: _CameraTopics, statistics: ReadStatistics, slop_ns: int, queue_size: int
) -> Iterator[BagFrame]:
    store = typestore()
    pairers: dict[str, StampPairer] = {}
    log_times: dict[tuple[str, int], int] = {}

    def finish(camera: str, flush: bool) -> Iterator[BagFrame]:
        started = time.perf_counter()
        paired = pairers[camera].pop_ready(flush)
        _note_discarded(pairers[camera], camera, statistics)
        statistics.add_time("pairing", started)
        for item in paired:
            image = item.messages[IMAGE]
            yield BagFrame(
                camera,
                item.stamp_ns,
                log_times.pop((camera, item.stamp_ns), 0),
                image.header,
                image,
                item.messages.get(DEPTH),
                item.messages.get(GT_ANOMALY),
                item.messages.get(GT_SEMANTIC),
            )

    started = time.perf_counter()
    for raw in reader.messages():
        route = routing.route(raw)
        if route is None:
            continue
        camera, stream = route
        statistics.messages[raw.topic] += 1
        try:
            message = store.deserialize_cdr(raw.data, raw.msgtype)
            stamp = stamp_ns(message)
        except Exception as error:  # a corrupt payload costs one message, never the run
            statistics.undecodable.append(f"{raw.topic} at {raw.log_time_ns / NANOSECONDS:.3f}: {error}")
            continue
        if stream == IMAGE:
            statistics.image_topics.setdefault(camera, raw.topic)
            log_times[(camera, stamp)] = raw.log_time_ns
        statistics.add_time("read", started)
        pairing_started = time.perf_counter()
        if camera not in pairers:
            pairers[camera] = StampPairer(
                IMAGE, routing.streams(camera), slop_ns, queue_size, open_streams=not routing.announced
            )
        pairers[camera].add(stream, stamp, message)
        statistics.add_time("pairing", pairing_started)
        yield from finish(camera, flush=False)
        started = time.perf_counter()
    statistics.add_time("read", started)
    for camera in list(pairers):
        yield from finish(camera, flush=True)


def _note_discarded(pairer: StampPairer, camera: str, statistics: ReadStatistics) -> None:
    for item in pairer.discarded:
        statistics.unpaired[item.stream] += 1
        if item.stream in (GT_ANOMALY, GT_SEMANTIC):
            statistics.ground_truth_without_image[frame_name(camera, item.stamp_ns)] = None
    pairer.discarded.clear()
