"""The per-frame pipeline: image + stamp (+ intrinsics) -> keypoints, homography, camera pose.

One class serves the ROS node, the offline replay tool and the demo, so they compute the same
thing from the same defaults (the dataclass defaults of :class:`PipelineConfig`)::

    pipeline = FramePipeline.from_config(PipelineConfig())
    for stamp, image in frames:
        result = pipeline.process(image, stamp, K)   # K: (3, 3) intrinsics or None
        result.features, result.track.H_key_to_cur, result.track.T_world_cur
"""

from __future__ import annotations

from dataclasses import dataclass, field
import os

import numpy as np

from kp2d_core.config import ExtractorConfig
from kp2d_core.frontend import Features, KeypointExtractor
from kp2d_core.tracking import HomographyTracker, TrackerConfig, TrackResult


@dataclass(frozen=True)
class PipelineConfig:
    """Keypoint extraction and tracking settings: the defaults of every front-end."""

    extractor: ExtractorConfig = field(default_factory=ExtractorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


@dataclass(frozen=True)
class FrameResult:
    """What one frame produced: its keypoints and the tracker's result (see TrackResult)."""

    stamp: float
    features: Features
    track: TrackResult


class FramePipeline:
    """Extract keypoints, track them against the keyframe, and estimate the camera motion."""

    def __init__(self, extractor: KeypointExtractor, tracker: TrackerConfig | None = None) -> None:
        self.extractor = extractor
        self.tracker = HomographyTracker(tracker)

    @classmethod
    def from_config(
        cls,
        cfg: PipelineConfig | None = None,
        weights: str | os.PathLike | None = None,
        device: str = 'auto',
    ) -> FramePipeline:
        """Load ``weights`` (None: the bundled model) on ``device`` with the given settings."""
        cfg = cfg or PipelineConfig()
        extractor = KeypointExtractor.from_checkpoint(weights, device, cfg.extractor)
        return cls(extractor, cfg.tracker)

    @property
    def config(self) -> PipelineConfig:
        return PipelineConfig(self.extractor.cfg, self.tracker.cfg)

    def configure(self, cfg: PipelineConfig) -> None:
        """Apply new settings from the next frame on (the keyframe is kept)."""
        self.extractor.configure(cfg.extractor)
        self.tracker.cfg = cfg.tracker

    def extract(self, image: np.ndarray) -> Features:
        """Keypoints of one image (raises ValueError for images it cannot take)."""
        return self.extractor.extract(image)

    def track(self, features: Features, stamp: float, K: np.ndarray | None) -> FrameResult:
        """Track already-extracted ``features`` (the second half of :meth:`process`)."""
        return FrameResult(stamp, features, self.tracker.update(features, stamp, K))

    def process(self, image: np.ndarray, stamp: float, K: np.ndarray | None = None) -> FrameResult:
        """Run one frame.

        Args:
            image: (H, W[, C]) uint8/uint16/float image (see ``KeypointExtractor.extract``).
            stamp: capture time in seconds; frames must come in increasing order (call
                :meth:`reset` when time jumps back).
            K: (3, 3) camera intrinsics, or None for keypoints and homographies only.

        Raises:
            ValueError: the image cannot be processed (the pipeline state is unchanged).
        """
        return self.track(self.extract(image), stamp, K)

    def reset(self) -> None:
        """Forget the keyframe and restart the trajectory at the identity."""
        self.tracker.reset()
