"""When the network runs in hybrid tracking, and the settings of hybrid tracking.

In hybrid mode (``HybridConfig.mode``) tracks are carried from frame to frame by Lucas-Kanade
(:mod:`kp2d_core.vo.lk_propagation`) and the network runs only when it is needed: on the first
frame, every ``detect_interval`` frames (new points, fresh descriptors), when fewer than
``min_tracks`` tracks are alive, after a gap in the stamps (a dropped frame or second), after an
illumination jump, when the keyframe tracker needs a new keyframe or lost the homography, and
when Lucas-Kanade itself fails on a frame (the hybrid tracker then detects on that very frame,
with ``recovery_model``'s network, its input shrunk by ``recovery_scale``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

GAP_HISTORY = 15  # frame intervals the usual interval is the median of
RECOVERY_MODELS = ('auto', 'same', 'light')


@dataclass(frozen=True)
class HybridConfig:
    """Hybrid tracking: Lucas-Kanade between frames, the network only where it is needed."""

    # hybrid: on the 12 benchmark sequences, against every frame (bundled model), tracks
    # 1.6-5.3x longer, RPE rotation lower or equal on 10, a fifth of the time per frame on 10
    # (docs/hybrid_tracking.md). every_frame: the network on every frame.
    mode: Literal['every_frame', 'hybrid'] = 'hybrid'
    detect_interval: int = 5  # the network runs at least every this many frames
    min_tracks: int = 100  # fewer live tracks: the network runs
    max_lost_share: float = 0.3  # Lucas-Kanade lost more of the tracks: the network runs now
    max_gap_factor: float = 2.5  # a stamp gap this many times the usual interval: the network
    max_brightness_change: float = 0.25  # relative change of the mean grey level: the network
    reid_window_s: float = 3.0  # lost tracks are remembered this long for re-identification
    # and at most this many of them, the most recently lost: each detection frame matches
    # every remembered track and checks the motion of each moment tracks were lost at
    # (poster_fast, light model: 3,900 remembered, 59 ms per detection frame; 1,000: 21 ms)
    reid_max_lost: int = 1000
    # A new keyframe once its inliers fall below this share of its first frame's (the keyframe
    # tracker's planar_keyframe_inlier_ratio): Lucas-Kanade's tracks stay matched to the
    # keyframe far longer than descriptor matches do, and a keyframe's homographies grow less
    # accurate with its age. In a scene with depth (two keyframes in a row made with depth)
    # keyframes give way at the every-frame share, 0.5: renewed more often there, their poses
    # drifted (docs/hybrid_tracking.md).
    keyframe_inlier_ratio: float = 0.75
    # And once its inliers moved further than this from it (median, px; the keyframe
    # tracker's max_keyframe_shift_px): Lucas-Kanade guided by the frame's motion keeps
    # tracks through views far from the keyframe, whose alignment grows less accurate with
    # the distance (docs/hybrid_tracking.md).
    keyframe_shift_px: float = 20.0
    # The network's input size, relative to its usual one, on frames where Lucas-Kanade failed
    # (blur, fast motion, dropped frames), for CPUs where the network's time matters most: 0.5
    # costs a quarter of the network, 0.75 a little over half. Under fast motion (blurred
    # frames) both models' median RPE rotation fell at 0.5 and 0.75; with frame drops (sharp
    # frames far apart) homographies and poses grew worse on some renders and better on others
    # (docs/hybrid_tracking.md), so the default keeps the usual size.
    recovery_scale: float = 1.0
    # The network that runs on those frames: 'same' (the tracking network), 'light' (the
    # bundled light model, whose descriptors are distilled from the bundled default model's
    # and match them: only beside that model), 'auto' (light beside the bundled default
    # model, else the same). With frame drops the bundled hybrid runs a network on 40-80 % of
    # the frames; with the light one on the recovery frames its median time per frame fell
    # from 2.0-2.8x KLT's to 1.1-1.6x on four of five renders and its RPE rotation fell on all
    # five; under fast motion RPE rose on three of five (docs/hybrid_tracking.md).
    recovery_model: Literal['auto', 'same', 'light'] = 'auto'
    # Live tracks at most, and no two closer than this (px): the hybrid's own, as the
    # keyframe shares above (every frame: ``TrackConfig.max_tracks`` and
    # ``min_distance_px``, 300 and 12). Lucas-Kanade's tracks are the keyframe's matches, so
    # their number sets the homography's accuracy: 600 at 10 px instead of 300 at 12 lowered
    # the RPE rotation on 12 of 19 hard-condition renders (geometric mean 0.94) and on five
    # of eight ordinary sequences (docs/hybrid_tracking.md).
    max_tracks: int = 600
    min_distance_px: float = 10.0

    def __post_init__(self) -> None:
        if self.mode not in ('every_frame', 'hybrid'):
            raise ValueError(f"mode must be 'every_frame' or 'hybrid', got {self.mode!r}")
        if not 1 <= self.detect_interval <= 1000:
            raise ValueError(f'detect_interval must be in [1, 1000], got {self.detect_interval}')
        if not 0 <= self.min_tracks <= 100_000:
            raise ValueError(f'min_tracks must be in [0, 100000], got {self.min_tracks}')
        if not 0.0 < self.max_lost_share <= 1.0:
            raise ValueError(f'max_lost_share must be in (0, 1], got {self.max_lost_share}')
        if not 1.0 < self.max_gap_factor <= 1000.0:
            raise ValueError(f'max_gap_factor must be in (1, 1000], got {self.max_gap_factor}')
        if not 0.0 < self.max_brightness_change <= 10.0:
            raise ValueError(
                f'max_brightness_change must be in (0, 10], got {self.max_brightness_change}'
            )
        if not 0.0 <= self.reid_window_s <= 3600.0:
            raise ValueError(f'reid_window_s must be in [0, 3600], got {self.reid_window_s}')
        if not 0 <= self.reid_max_lost <= 100_000:
            raise ValueError(f'reid_max_lost must be in [0, 100000], got {self.reid_max_lost}')
        if not 0.1 <= self.recovery_scale <= 1.0:
            raise ValueError(f'recovery_scale must be in [0.1, 1], got {self.recovery_scale}')
        if self.recovery_model not in RECOVERY_MODELS:
            raise ValueError(
                f'recovery_model must be one of {RECOVERY_MODELS}, got {self.recovery_model!r}'
            )
        if not 0.0 < self.keyframe_shift_px <= 10_000.0:
            raise ValueError(
                f'keyframe_shift_px must be in (0, 10000], got {self.keyframe_shift_px}'
            )
        if not 1 <= self.max_tracks <= 100_000:
            raise ValueError(f'max_tracks must be in [1, 100000], got {self.max_tracks}')
        if not 0.0 <= self.min_distance_px <= 1000.0:
            raise ValueError(f'min_distance_px must be in [0, 1000], got {self.min_distance_px}')
        if not 0.0 <= self.keyframe_inlier_ratio <= 1.0:
            raise ValueError(
                f'keyframe_inlier_ratio must be in [0, 1], got {self.keyframe_inlier_ratio}'
            )


EVERY_FRAME = HybridConfig(mode='every_frame')  # the network on every frame, no Lucas-Kanade


class DetectionPolicy:
    """Says, before a frame is processed, whether the network must run on it and why."""

    def __init__(self, cfg: HybridConfig) -> None:
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        self.last_stamp: int | None = None
        self.last_brightness: float | None = None
        self.since_detection = 0
        self.intervals: deque[int] = deque(maxlen=GAP_HISTORY)
        self.requested = 'first_frame'

    def request(self, reason: str) -> None:
        """Make the next frame run the network (the keyframe tracker needs a keyframe)."""
        self.requested = self.requested or reason

    def decide(self, stamp_ns: int, brightness: float, live_tracks: int) -> str:
        """The reason the network runs on this frame, or '' (Lucas-Kanade carries it)."""
        cfg = self.cfg
        if self.requested:
            return self.requested
        if self.since_detection + 1 >= cfg.detect_interval:
            return 'interval'
        if live_tracks < cfg.min_tracks:
            return 'few_tracks'
        if self.last_stamp is not None and self.intervals:
            usual = float(np.median(self.intervals))
            if stamp_ns - self.last_stamp > cfg.max_gap_factor * usual:
                return 'frame_gap'
        if self.last_brightness is not None:
            change = abs(brightness - self.last_brightness) / max(self.last_brightness, 1.0)
            if change > cfg.max_brightness_change:
                return 'brightness'
        return ''

    def observed(self, stamp_ns: int, brightness: float, detected: bool) -> None:
        """Record the frame just processed (whether the network ran on it)."""
        if self.last_stamp is not None and stamp_ns > self.last_stamp:
            self.intervals.append(stamp_ns - self.last_stamp)
        self.last_stamp, self.last_brightness = int(stamp_ns), brightness
        self.since_detection = 0 if detected else self.since_detection + 1
        self.requested = ''
