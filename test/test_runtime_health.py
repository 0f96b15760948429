"""Health monitor: windowed rates, latency percentiles, failures, and the status record built from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openset_perception.runtime.frame_buffer import BufferCounters
from openset_perception.runtime.health import HealthMonitor, HealthSnapshot, gpu_memory_values, health_status
from openset_perception.runtime.status import Level


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rates_count_events_inside_the_window_only() -> None:
    clock = FakeClock()
    monitor = HealthMonitor(window_s=4.0, clock=clock)
    for _ in range(20):  # 20 inputs at 1000.0-1001.9
        monitor.record_input()
        clock.now += 0.1
    clock.now = 1003.0
    for _ in range(8):
        monitor.record_output(0.05)
    snapshot = monitor.snapshot()
    assert snapshot.input_hz == pytest.approx(20 / 4.0)
    assert snapshot.output_hz == pytest.approx(8 / 4.0)
    clock.now = 1006.5  # the window starts at 1002.5: the inputs left it, the outputs did not
    snapshot = monitor.snapshot()
    assert snapshot.input_hz == pytest.approx(0.0)
    assert snapshot.output_hz == pytest.approx(2.0)


def test_latency_percentiles_over_the_last_samples() -> None:
    monitor = HealthMonitor(latency_samples=50, clock=FakeClock())
    assert monitor.snapshot().latency_p50_ms is None
    latencies_s = np.linspace(0.001, 0.2, 120)
    for latency in latencies_s:
        monitor.record_output(float(latency))
    kept_ms = latencies_s[-50:] * 1e3
    snapshot = monitor.snapshot()
    assert snapshot.latency_p50_ms == pytest.approx(np.percentile(kept_ms, 50))
    assert snapshot.latency_p95_ms == pytest.approx(np.percentile(kept_ms, 95))


def test_failures_and_bad_inputs_are_counted_and_recent_ones_age_out() -> None:
    clock = FakeClock()
    monitor = HealthMonitor(window_s=2.0, clock=clock)
    monitor.record_bad_input()
    monitor.record_bad_input()
    monitor.record_failure()
    snapshot = monitor.snapshot()
    assert (snapshot.bad_inputs, snapshot.failed_batches, snapshot.recent_failures) == (2, 1, 1)
    clock.now += 5.0
    assert monitor.snapshot().recent_failures == 0 and monitor.snapshot().failed_batches == 1


def snapshot(input_hz: float, output_hz: float, recent_failures: int = 0) -> HealthSnapshot:
    return HealthSnapshot(input_hz, output_hz, 12.34, 56.78, 3, recent_failures, recent_failures)


def test_status_levels() -> None:
    counters = BufferCounters(received=10, overwritten=3, stale=1, taken=6)

    def level(snap: HealthSnapshot, any_subscriber: bool = True) -> Level:
        return health_status("seg", snap, counters, "cpu", "fp32", {}, any_subscriber).level

    assert level(snapshot(30.0, 10.0)) == Level.OK
    assert level(snapshot(0.0, 0.0)) == Level.OK
    assert level(snapshot(30.0, 0.0)) == Level.WARN
    assert level(snapshot(30.0, 0.0), any_subscriber=False) == Level.OK
    assert level(snapshot(30.0, 10.0, recent_failures=2)) == Level.WARN


def test_status_values_report_counts_device_and_memory() -> None:
    counters = BufferCounters(received=10, overwritten=3, stale=1, taken=6)
    status = health_status("seg: health", snapshot(30.0, 10.0), counters, "cuda:0", "fp16", {"gpu_x": "1.0"})
    assert status.name == "seg: health" and status.hardware_id == "cuda:0"
    assert status.values["frames_dropped"] == "4"
    assert status.values["frames_dropped_overwritten"] == "3"
    assert status.values["frames_dropped_stale"] == "1"
    assert status.values["frames_received"] == "10" and status.values["frames_processed"] == "6"
    assert status.values["latency_p50_ms"] == "12.3" and status.values["latency_p95_ms"] == "56.8"
    assert status.values["input_rate_hz"] == "30.00" and status.values["output_rate_hz"] == "10.00"
    assert status.values["bad_inputs"] == "3"
    assert (status.values["device"], status.values["precision"], status.values["gpu_x"]) == (
        "cuda:0",
        "fp16",
        "1.0",
    )


def test_gpu_memory_is_empty_off_the_gpu() -> None:
    assert gpu_memory_values(torch.device("cpu")) == {}
