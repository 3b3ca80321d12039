"""Stateful helpers of the node, free of rclpy: stamp policy, frame statistics, health.

Shared by the node and the offline replay tool, so both treat time alike. Stamps are integer
nanoseconds wherever they are compared or stored.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
import threading

import numpy as np


class FrameStats:
    """Frame counts and, over a sliding time window, input/output rates and latencies.

    ``received`` counts every image message, ``processed`` those that produced output,
    ``dropped`` the others by reason ('superseded': replaced by a newer frame before
    processing). Rates, percentiles and the share of processed frames the network ran on
    (``network_share``: 1 every frame, less in hybrid mode) cover the last ``window_s``
    seconds. Thread-safe.
    """

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.dropped: Counter[str] = Counter()
        self.events: Counter[str] = Counter()  # not frames: e.g. 'camera_info_rejected'
        self._arrivals: deque[float] = deque()
        # (time, processing s, latency s, 1.0 if the network ran on the frame else 0.0)
        self._done: deque[tuple[float, float, float, float]] = deque()
        self._first: float | None = None  # rates cover less than a window at the start

    def arrived(self, now: float) -> None:
        with self._lock:
            self.received += 1
            self._first = now if self._first is None else self._first
            self._arrivals.append(now)
            self._trim(now)

    def drop(self, reason: str) -> None:
        with self._lock:
            self.dropped[reason] += 1

    def note(self, event: str) -> None:
        with self._lock:
            self.events[event] += 1

    def done(self, now: float, processing_s: float, latency_s: float, network: bool) -> None:
        with self._lock:
            self.processed += 1
            self._done.append((now, processing_s, latency_s, float(network)))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._arrivals and self._arrivals[0] < now - self.window_s:
            self._arrivals.popleft()
        while self._done and self._done[0][0] < now - self.window_s:
            self._done.popleft()

    def window(self, now: float) -> dict[str, float]:
        """Input and output rate (Hz), latency/processing percentiles (s) and the network's
        share of the processed frames in the window."""
        with self._lock:
            self._trim(now)
            arrivals, done = len(self._arrivals), np.asarray(self._done).reshape(-1, 4)
        span = self.window_s if self._first is None else min(self.window_s, now - self._first)
        span = max(span, 1.0)
        out = {'input_hz': arrivals / span, 'output_hz': len(done) / span}
        if len(done):
            out['latency_p50_s'] = float(np.percentile(done[:, 2], 50))
            out['latency_p95_s'] = float(np.percentile(done[:, 2], 95))
            out['processing_p50_s'] = float(np.percentile(done[:, 1], 50))
            out['network_share'] = float(done[:, 3].mean())
        return out

    def summary(self, now: float) -> dict[str, str]:
        """Key/value strings for /diagnostics: totals, drops by reason, the window's figures."""
        with self._lock:
            out = {
                'received': str(self.received),
                'processed': str(self.processed),
                'dropped': str(sum(self.dropped.values())),
            }
            out.update({f'dropped.{k}': str(v) for k, v in sorted(self.dropped.items())})
            out.update({k: str(v) for k, v in sorted(self.events.items())})
        out.update({k: f'{v:.3f}' for k, v in self.window(now).items()})
        out['window_s'] = f'{self.window_s:g}'
        return out


@dataclass(frozen=True)
class HealthThresholds:
    """When /diagnostics turns WARN or ERROR (parameters ``diagnostics.*``)."""

    warn_output_ratio: float = 0.5  # output rate below this share of the input rate
    warn_latency_s: float = 1.0  # p95 latency above this
    error_latency_s: float = 5.0


def health(figures: dict[str, float], limits: HealthThresholds) -> tuple[int, str]:
    """(level, message) with level 0 OK, 1 WARN, 2 ERROR for a window's figures."""
    inputs, outputs = figures['input_hz'], figures['output_hz']
    latency = figures.get('latency_p95_s', 0.0)
    if inputs > 0 and outputs == 0:
        return 2, f'no output for {inputs:.1f} Hz of input'
    if latency > limits.error_latency_s:
        return 2, f'latency p95 {latency:.2f} s'
    problems = []
    if inputs > 0 and outputs < limits.warn_output_ratio * inputs:
        problems.append(f'{outputs:.1f} of {inputs:.1f} frames/s processed')
    if latency > limits.warn_latency_s:
        problems.append(f'latency p95 {latency:.2f} s')
    if problems:
        return 1, '; '.join(problems)
    if inputs == 0:
        return 1, 'no input'
    return 0, f'{outputs:.1f} frames/s, latency p95 {latency:.2f} s'
