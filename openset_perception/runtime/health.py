"""Node health: input/output rates, latency percentiles, drops, device and GPU memory as a status record."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from openset_perception.runtime.frame_buffer import BufferCounters
from openset_perception.runtime.status import Level, StatusRecord, format_number


@dataclass(frozen=True)
class HealthSnapshot:
    input_hz: float
    output_hz: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    bad_inputs: int = 0  # frames rejected by decoding, since start
    failed_batches: int = 0  # inference or publishing failures, since start
    recent_failures: int = 0  # failures inside the rate window


class HealthMonitor:
    """Rates over a sliding time window, latency percentiles over the last ``latency_samples`` frames."""

    def __init__(
        self,
        window_s: float = 5.0,
        latency_samples: int = 300,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0 or latency_samples < 1:
            raise ValueError("window_s must be > 0 and latency_samples >= 1")
        self.window_s = window_s
        self._clock = clock
        self._inputs: deque[float] = deque()
        self._outputs: deque[float] = deque()
        self._failures: deque[float] = deque()
        self._latencies_s: deque[float] = deque(maxlen=latency_samples)
        self._bad_inputs = 0
        self._failed_batches = 0
        self._lock = threading.Lock()

    def record_input(self) -> None:
        with self._lock:
            self._inputs.append(self._clock())

    def record_output(self, latency_s: float) -> None:
        with self._lock:
            self._outputs.append(self._clock())
            self._latencies_s.append(latency_s)

    def record_bad_input(self) -> None:
        with self._lock:
            self._bad_inputs += 1

    def record_failure(self) -> None:
        with self._lock:
            self._failed_batches += 1
            self._failures.append(self._clock())

    def snapshot(self) -> HealthSnapshot:
        with self._lock:
            now = self._clock()
            for events in (self._inputs, self._outputs, self._failures):
                while events and events[0] < now - self.window_s:
                    events.popleft()
            input_hz = len(self._inputs) / self.window_s
            output_hz = len(self._outputs) / self.window_s
            latencies_ms = np.asarray(self._latencies_s, dtype=np.float64) * 1e3
            totals = (self._bad_inputs, self._failed_batches, len(self._failures))
        p50 = p95 = None
        if latencies_ms.size:
            p50, p95 = (float(p) for p in np.percentile(latencies_ms, [50, 95]))
        return HealthSnapshot(input_hz, output_hz, p50, p95, *totals)


def gpu_memory_values(device: torch.device) -> dict[str, str]:
    """Allocated / reserved / peak CUDA memory in MiB; empty off the GPU."""
    if device.type != "cuda":
        return {}
    mib = 1024.0**2
    return {
        "gpu_memory_allocated_mib": format_number(torch.cuda.memory_allocated(device) / mib, 1),
        "gpu_memory_reserved_mib": format_number(torch.cuda.memory_reserved(device) / mib, 1),
        "gpu_memory_peak_mib": format_number(torch.cuda.max_memory_allocated(device) / mib, 1),
    }


def health_status(
    name: str,
    snapshot: HealthSnapshot,
    buffer: BufferCounters,
    device: str,
    precision: str,
    extra_values: Mapping[str, str] | None = None,
    any_subscriber: bool = True,
) -> StatusRecord:
    """OK while frames flow; WARN when inputs arrive but nothing comes out, or when batches fail.

    Without any output subscriber no frame is processed, which is reported but is no fault.
    """
    if not any_subscriber:
        level, message = Level.OK, "no output has a subscriber: frames are not processed"
    elif snapshot.input_hz > 0 and snapshot.output_hz == 0:
        level, message = Level.WARN, "receiving frames but publishing none"
    elif snapshot.input_hz == 0:
        level, message = Level.OK, "waiting for frames"
    else:
        level, message = Level.OK, f"{snapshot.output_hz:.1f} frames/s out of {snapshot.input_hz:.1f} in"
    if snapshot.recent_failures:
        level = Level.WARN
        message += f"; {snapshot.recent_failures} recent failed batches"
    values = {
        "input_rate_hz": format_number(snapshot.input_hz, 2),
        "output_rate_hz": format_number(snapshot.output_hz, 2),
        "latency_p50_ms": format_number(snapshot.latency_p50_ms, 1),
        "latency_p95_ms": format_number(snapshot.latency_p95_ms, 1),
        "frames_received": str(buffer.received),
        "frames_processed": str(buffer.taken),
        "frames_dropped": str(buffer.dropped),
        "frames_dropped_overwritten": str(buffer.overwritten),
        "frames_dropped_stale": str(buffer.stale),
        "bad_inputs": str(snapshot.bad_inputs),
        "failed_batches": str(snapshot.failed_batches),
        "device": device,
        "precision": precision,
        **(extra_values or {}),
    }
    return StatusRecord(name=name, level=level, message=message, hardware_id=device, values=values)
