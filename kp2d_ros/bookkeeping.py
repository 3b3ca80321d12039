"""Small stateful helpers of the node, free of rclpy: CameraInfo pairing and frame statistics."""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

import numpy as np

from kp2d_core.motion import camera_matrix


class CameraInfoCache:
    """Recent intrinsics by stamp; pairs an image with the CameraInfo nearest in time.

    This is what an approximate-time synchroniser does for a depth-1 image queue, without
    holding images back while their CameraInfo is late: with no CameraInfo close enough the
    image is processed without intrinsics (homography only).
    """

    def __init__(self, size: int = 10) -> None:
        self._items: deque[tuple[float, np.ndarray]] = deque(maxlen=size)

    def add(self, stamp: float, k: Any) -> None:
        """Store the (3, 3) matrix of a CameraInfo ``k``; invalid ones raise ValueError."""
        self._items.append((stamp, camera_matrix(k)))

    def lookup(self, stamp: float, max_age_s: float) -> np.ndarray | None:
        """Intrinsics whose stamp is nearest to ``stamp`` and within ``max_age_s``, or None."""
        if not self._items:
            return None
        best_stamp, K = min(self._items, key=lambda item: abs(item[0] - stamp))
        return K if abs(best_stamp - stamp) <= max_age_s else None


class FrameStats:
    """Counts of processed and dropped frames and recent latencies, for /diagnostics."""

    def __init__(self, window: int = 300) -> None:
        self.processed = 0
        self.dropped: Counter[str] = Counter()
        self.latency_s: deque[float] = deque(maxlen=window)
        self.processing_s: deque[float] = deque(maxlen=window)

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def done(self, processing_s: float, latency_s: float) -> None:
        self.processed += 1
        self.processing_s.append(processing_s)
        self.latency_s.append(latency_s)

    def summary(self) -> dict[str, str]:
        """Key/value strings: counts, drop reasons, latency and processing percentiles."""
        out = {'processed': str(self.processed), 'dropped': str(sum(self.dropped.values()))}
        out.update({f'dropped.{k}': str(v) for k, v in sorted(self.dropped.items())})
        for name, values in (('latency', self.latency_s), ('processing', self.processing_s)):
            if values:
                ms = np.asarray(values) * 1e3
                out[f'{name}_ms.p50'] = f'{np.percentile(ms, 50):.1f}'
                out[f'{name}_ms.p95'] = f'{np.percentile(ms, 95):.1f}'
        if self.processing_s:
            out['processing_fps'] = f'{1.0 / np.mean(self.processing_s):.2f}'
        return out
