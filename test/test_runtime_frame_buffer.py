"""Latest-frame-only buffer: overwriting, stale drops, batching across cameras, blocking and closing."""

from __future__ import annotations

import threading
import time

import pytest

from openset_perception.runtime.frame_buffer import BufferCounters, CameraFrame, LatestFrameBuffer


def frame(camera: str, stamp_s: float = 0.0, tag: int = 0) -> CameraFrame:
    return CameraFrame(camera, header=tag, stamp_s=stamp_s, received_s=time.monotonic(), image_msg=tag)


def test_only_the_newest_frame_per_camera_is_kept() -> None:
    buffer = LatestFrameBuffer(["front"])
    for tag in range(3):
        buffer.put(frame("front", tag=tag))
    taken = buffer.take(timeout_s=0.1)
    assert [f.header for f in taken] == [2]
    assert buffer.counters == BufferCounters(received=3, overwritten=2, stale=0, taken=1)
    assert buffer.counters.dropped == 2
    assert buffer.take(timeout_s=0.01) == []  # nothing queued behind it


def test_frames_of_all_cameras_come_together_in_camera_order() -> None:
    buffer = LatestFrameBuffer(["front", "left", "rear"])
    buffer.put(frame("rear", tag=1))
    buffer.put(frame("front", tag=2))
    assert [f.camera for f in buffer.take(timeout_s=0.1)] == ["front", "rear"]


def test_frames_older_than_max_input_age_are_dropped_and_counted() -> None:
    now = [100.0]
    buffer = LatestFrameBuffer(["a", "b"], max_input_age_s=0.5, now=lambda: now[0])
    buffer.put(frame("a", stamp_s=99.0))  # 1 s old
    buffer.put(frame("b", stamp_s=99.8))  # 0.2 s old
    assert [f.camera for f in buffer.take(timeout_s=0.1)] == ["b"]
    assert (buffer.counters.stale, buffer.counters.taken) == (1, 1)

    buffer.put(frame("a", stamp_s=90.0))
    start = time.monotonic()
    assert buffer.take(timeout_s=0.05) == []  # only stale frames: keeps waiting, then times out
    assert time.monotonic() - start >= 0.04
    assert buffer.counters.stale == 2

    buffer.max_input_age_s = 0.0  # disabled: any age passes
    buffer.put(frame("a", stamp_s=0.0))
    assert len(buffer.take(timeout_s=0.1)) == 1


def test_batch_window_waits_for_the_other_cameras() -> None:
    buffer = LatestFrameBuffer(["a", "b"], batch_window_s=2.0)
    buffer.put(frame("a"))
    threading.Timer(0.05, lambda: buffer.put(frame("b"))).start()
    start = time.monotonic()
    taken = buffer.take(timeout_s=1.0)
    assert [f.camera for f in taken] == ["a", "b"]
    assert time.monotonic() - start < 1.0  # returned as soon as every camera had a frame

    buffer.batch_window_s = 0.0
    buffer.put(frame("a"))
    threading.Timer(0.1, lambda: buffer.put(frame("b"))).start()
    assert [f.camera for f in buffer.take(timeout_s=1.0)] == ["a"]


def test_batch_window_gives_up_on_a_silent_camera() -> None:
    buffer = LatestFrameBuffer(["a", "b"], batch_window_s=0.05)
    buffer.put(frame("a"))
    start = time.monotonic()
    assert [f.camera for f in buffer.take(timeout_s=1.0)] == ["a"]
    assert 0.04 <= time.monotonic() - start < 0.5


def test_take_times_out_and_close_wakes_a_blocked_consumer() -> None:
    buffer = LatestFrameBuffer(["a"])
    assert buffer.take(timeout_s=0.02) == []
    result: list = [None]
    consumer = threading.Thread(target=lambda: result.__setitem__(0, buffer.take()))
    consumer.start()
    time.sleep(0.05)
    buffer.close()
    consumer.join(1.0)
    assert not consumer.is_alive() and result[0] == []


def test_rejects_unknown_and_duplicate_cameras() -> None:
    with pytest.raises(ValueError, match="distinct"):
        LatestFrameBuffer(["a", "a"])
    with pytest.raises(ValueError, match="distinct"):
        LatestFrameBuffer([])
    with pytest.raises(ValueError, match="unknown camera"):
        LatestFrameBuffer(["a"]).put(frame("b"))


def test_concurrent_producers_every_frame_is_taken_or_counted_as_dropped() -> None:
    cameras = ["a", "b", "c"]
    buffer = LatestFrameBuffer(cameras)
    per_camera = 300
    taken: list[CameraFrame] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set() or buffer.counters.received > buffer.counters.taken + buffer.counters.dropped:
            taken.extend(buffer.take(timeout_s=0.01))

    def produce(camera: str) -> None:
        for tag in range(per_camera):
            buffer.put(frame(camera, tag=tag))

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [threading.Thread(target=produce, args=(c,)) for c in cameras]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    done.set()
    consumer.join(5.0)

    counters = buffer.counters
    assert counters.received == len(cameras) * per_camera
    assert counters.taken == len(taken)
    assert counters.taken + counters.overwritten == counters.received
    for camera in cameras:  # per camera, frames come out in order and the last one always comes out
        tags = [f.header for f in taken if f.camera == camera]
        assert tags == sorted(tags) and tags[-1] == per_camera - 1
