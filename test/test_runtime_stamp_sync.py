"""Stamp synchroniser: nearest partner within the slop, handed on by the message that settles it,
required and optional streams, bounded queues, stamps going backwards. No ROS needed."""

from __future__ import annotations

import math
import random

import pytest

from openset_perception.runtime.stamp_sync import PRIMARY, StampSynchronizer, SyncCounters

MS = 1_000_000
PERIOD = 33_333_333  # 30 Hz


def primaries(synced: list) -> list:
    return [s.primary for s in synced]


def test_without_secondaries_every_primary_comes_out_at_once() -> None:
    sync = StampSynchronizer()
    assert primaries(sync.add(PRIMARY, 0, "a")) == ["a"]
    assert primaries(sync.add(PRIMARY, PERIOD, "b")) == ["b"]
    assert sync.counters == SyncCounters(paired=2, unpaired=0)


@pytest.mark.parametrize("depth_first", [True, False])
def test_equal_stamps_pair_in_either_arrival_order_on_the_second_arrival(depth_first: bool) -> None:
    sync = StampSynchronizer(required=["depth"])
    for index in range(4):
        stamp = 5_000 * MS + index * PERIOD
        first, second = [("depth", f"d{index}"), (PRIMARY, f"i{index}")][:: 1 if depth_first else -1]
        assert sync.add(first[0], stamp, first[1]) == []
        (synced,) = sync.add(second[0], stamp, second[1])
        assert (synced.stamp_ns, synced.primary) == (stamp, f"i{index}")
        assert synced.partners == {"depth": f"d{index}"}


def test_a_depth_stamped_just_before_its_image_is_taken_without_waiting_for_the_next_one() -> None:
    sync = StampSynchronizer(required=["depth"], slop_s=0.05)
    sync.add("depth", 0, "d0")
    sync.add(PRIMARY, 3 * MS, "i0")  # one depth so far: its rate is unknown, a nearer one may come
    (first,) = sync.add("depth", PERIOD, "d1")  # settles i0: d0 (3 ms) is nearer than d1 (30 ms)
    assert first.partners == {"depth": "d0"}
    # From now on the stream's gap is known: the next depth cannot come before 30 ms after the image.
    (second,) = sync.add(PRIMARY, PERIOD + 3 * MS, "i1")
    assert second.partners == {"depth": "d1"}


def test_the_nearest_partner_is_chosen_among_straddling_messages() -> None:
    sync = StampSynchronizer(required=["depth"], slop_s=0.05, queue_size=10)
    sync.add(PRIMARY, 100 * MS, "image")
    assert sync.add("depth", 60 * MS, "far before") == []
    assert sync.add("depth", 90 * MS, "near before") == []  # a nearer one may still come
    (synced,) = sync.add("depth", 115 * MS, "after")  # 15 ms after: farther than 10 ms before
    assert synced.partners == {"depth": "near before"}

    sync.add(PRIMARY, 200 * MS, "image 2")
    (synced,) = sync.add("depth", 205 * MS, "just after")  # 5 ms after beats 85 ms before
    assert synced.partners == {"depth": "just after"}


def test_a_required_stream_without_a_partner_within_the_slop_drops_the_primary() -> None:
    sync = StampSynchronizer(required=["depth"], slop_s=0.01)
    sync.add(PRIMARY, 0, "image")
    assert sync.add("depth", 20 * MS, "too late") == []
    assert sync.counters == SyncCounters(paired=0, unpaired=1)
    # 1 ms after that depth; with no rate known yet, a nearer depth may still come: wait for the next.
    assert sync.add(PRIMARY, 21 * MS, "next image") == []
    (synced,) = sync.add("depth", 20 * MS + PERIOD, "d1")
    assert synced.primary == "next image" and synced.partners == {"depth": "too late"}


def test_an_optional_stream_gives_none_at_once_while_silent_or_overdue_and_is_waited_for_when_due() -> None:
    sync = StampSynchronizer(required=["depth"], optional=["camera_info"], slop_s=0.05)
    for index in range(4):  # camera_info with the image's stamp, arriving just after the image
        stamp = index * PERIOD
        sync.add("depth", stamp, f"d{index}")
        on_image = sync.add(PRIMARY, stamp, f"i{index}")
        on_info = sync.add("camera_info", stamp, f"c{index}")
        if index == 0:  # camera_info has sent nothing yet: the image is not held back
            assert on_info == []
            (synced,) = on_image
            assert synced.partners == {"depth": "d0", "camera_info": None}
        else:  # camera_info is due: the image waits for it
            assert on_image == []
            (synced,) = on_info
            assert synced.partners == {"depth": f"d{index}", "camera_info": f"c{index}"}

    stamp = 20 * PERIOD  # camera_info stopped long ago: overdue by more than the slop
    sync.add("depth", stamp, "d20")
    (synced,) = sync.add(PRIMARY, stamp, "i20")
    assert synced.partners == {"depth": "d20", "camera_info": None}


def test_waiting_primaries_are_bounded_and_a_settled_one_settles_older_waiting_ones() -> None:
    sync = StampSynchronizer(required=["depth"], slop_s=0.01, queue_size=3)
    for index in range(10):  # depth never comes: only the newest three wait
        assert sync.add(PRIMARY, index * PERIOD, index) == []
    assert sync.counters == SyncCounters(paired=0, unpaired=7)
    (synced,) = sync.add("depth", 9 * PERIOD, "d9")  # 7 and 8 have no partner within 10 ms
    assert synced.primary == 9
    assert sync.counters == SyncCounters(paired=1, unpaired=9)


def test_a_stamp_going_backwards_restarts_the_stream() -> None:
    sync = StampSynchronizer(required=["depth"])
    for index in range(3):
        sync.add("depth", 1_000 * MS + index * PERIOD, f"late d{index}")
        sync.add(PRIMARY, 1_000 * MS + index * PERIOD, f"late i{index}")
    # The bag starts over: the old, later-stamped messages must not pair with the new ones.
    assert sync.add(PRIMARY, 0, "i0") == []  # the depth queue still holds the old stamps: no partner
    assert sync.add("depth", 0, "d0") == []  # the depth stream restarts
    sync.add("depth", PERIOD, "d1")
    (synced,) = sync.add(PRIMARY, PERIOD, "i1")
    assert synced.partners == {"depth": "d1"}


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="distinct"):
        StampSynchronizer(required=["depth"], optional=["depth"])
    with pytest.raises(ValueError, match="distinct"):
        StampSynchronizer(required=[PRIMARY])
    with pytest.raises(ValueError, match="queue_size"):
        StampSynchronizer(queue_size=0)
    with pytest.raises(ValueError, match="unknown stream"):
        StampSynchronizer(required=["depth"]).add("camera_info", 0, None)


@pytest.mark.parametrize("seed", range(6))
def test_random_streams_match_the_offline_nearest_partner_as_soon_as_it_is_certain(seed: int) -> None:
    """30 Hz image and depth with a fixed stamp offset, random transport delays and lost depth images:
    every set handed on has the partner an offline matcher picks, and comes out no later than the
    arrival of the first depth stamped at or after its image (the message that makes it certain)."""
    rng = random.Random(seed)
    offset = rng.randint(-15, 15) * MS
    slop = 0.02
    images = [(i * PERIOD, f"i{i}") for i in range(200)]
    depths = [(i * PERIOD + offset, f"d{i}") for i in range(200) if rng.random() > 0.1]
    events = []
    for stream, messages in ((PRIMARY, images), ("depth", depths)):
        arrival = 0
        for stamp, message in messages:  # in stamp order per stream, as DDS delivers one writer's samples
            arrival = max(arrival, stamp + rng.randint(0, 25) * MS)
            events.append((arrival, stream, stamp, message))
    events.sort(key=lambda e: (e[0], e[1] == PRIMARY))

    sync = StampSynchronizer(required=["depth"], slop_s=slop, queue_size=5)
    out_at = {}
    partner_of = {}
    end = (events[-1][0], "depth", 10 * len(images) * PERIOD, "end")  # settles what still waits at the end
    for arrival, stream, stamp, message in [*events, end]:
        for synced in sync.add(stream, stamp, message):
            out_at[synced.primary] = arrival
            partner_of[synced.primary] = synced.partners["depth"]

    depth_arrival = {m: a for a, s, _, m in events if s == "depth"}
    image_arrival = {m: a for a, s, _, m in events if s == PRIMARY}
    expected = {}
    for stamp, image in images:
        distance, nearest = min((abs(d - stamp), m) for d, m in depths)
        if distance <= slop * 1e9:
            expected[image] = nearest
    assert partner_of == expected
    for image, out in out_at.items():
        stamp = int(image[1:]) * PERIOD
        certain_at = [depth_arrival[m] for d, m in depths if d >= stamp]
        assert out <= max(image_arrival[image], min(certain_at, default=math.inf)), image
    assert sync.counters.paired == len(expected)
    assert sync.counters.paired + sync.counters.unpaired == len(images)
