"""The per-frame pipeline: image + stamp (+ camera) -> keypoints, homography, pose, tracks.

One class serves the ROS node, the offline replay tool, the demo and the sequence benchmark,
so they compute the same thing from the same defaults (the dataclass defaults of
:class:`PipelineConfig`)::

    pipeline = FramePipeline.from_config(PipelineConfig())
    for stamp_ns, image in frames:
        result = pipeline.process(image, stamp_ns, camera)   # camera: CameraModel or None
        result.features, result.track.H_key_to_cur, result.track.T_world_cur, result.tracks
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from kp2d_core.config import ExtractorConfig
from kp2d_core.geometry.camera import CameraModel
from kp2d_core.geometry.image_points import ImagePoints
from kp2d_core.images import gray_uint8
from kp2d_core.inference.extractor import KeypointExtractor
from kp2d_core.inference.features import Features
from kp2d_core.model.files import CheckpointNotFoundError, bundled_weights_path
from kp2d_core.vo.detection_policy import EVERY_FRAME, HybridConfig
from kp2d_core.vo.feature_tracks import FeatureTracker, TrackConfig, Tracks
from kp2d_core.vo.hybrid_tracks import HybridTracker
from kp2d_core.vo.keyframe_tracker import (
    FrameKind,
    HomographyTracker,
    TrackerConfig,
    TrackResult,
)

KEYFRAME_MARGIN = 1.5  # hybrid: detect once the keyframe's inliers fall below this many times
# the keyframe threshold, so that the keyframe is renewed on a frame with detections
# Hybrid: the network ran on a frame for these reasons so that it becomes the keyframe (the
# keyframe tracker asked for one, or Lucas-Kanade lost the tracks the keyframe holds).
KEYFRAME_DETECTIONS = ('keyframe', 'lk_failed')


class FeatureExtractor(Protocol):
    """What the pipeline needs from a front-end: :class:`KeypointExtractor`, or the classical
    front-ends of the sequence benchmark (:mod:`kp2d_core.evaluation.frontends`). A front-end
    that carries state from frame to frame (KLT) also has ``reset()``, which
    :meth:`FramePipeline.reset` calls."""

    def extract(self, image: np.ndarray) -> Features: ...


@dataclass(frozen=True)
class PipelineConfig:
    """Keypoint extraction and tracking settings: the defaults of every front-end."""

    extractor: ExtractorConfig = field(default_factory=ExtractorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    tracks: TrackConfig = field(default_factory=TrackConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)


@dataclass(frozen=True)
class FrameResult:
    """What one frame produced.

    Attributes:
        stamp_ns: the frame's stamp (integer nanoseconds, as it came).
        features: its keypoints (raw pixels).
        points: the keypoints in the geometry frame and normalised (see ImagePoints).
        track: the keyframe homography and pose (see TrackResult).
        tracks: the persistent feature tracks (see Tracks).
        detection: 'every_frame' outside hybrid mode; in it, why the network ran on the frame
            ('first_frame', 'interval', 'few_tracks', 'frame_gap', 'brightness', 'keyframe',
            'lk_failed'), or '' when Lucas-Kanade carried the frame alone.
    """

    stamp_ns: int
    features: Features
    points: ImagePoints
    track: TrackResult
    tracks: Tracks
    detection: str = 'every_frame'  # hybrid mode: why the network ran, or '' (it did not)

    @property
    def network_ran(self) -> bool:
        """Whether the network ran on this frame (always, outside hybrid mode)."""
        return bool(self.detection)


def _keyframe_settings(tracker: TrackerConfig, hybrid: HybridConfig) -> TrackerConfig:
    """The keyframe tracker's settings in ``hybrid``'s mode: in hybrid mode its keyframes
    are renewed at ``hybrid.keyframe_inlier_ratio`` in a scene without depth, and once the
    view moved ``hybrid.keyframe_shift_px`` from them."""
    if hybrid.mode != 'hybrid':
        return tracker
    return replace(
        tracker,
        planar_keyframe_inlier_ratio=hybrid.keyframe_inlier_ratio,
        max_keyframe_shift_px=hybrid.keyframe_shift_px,
    )


def _track_settings(tracks: TrackConfig | None, hybrid: HybridConfig) -> TrackConfig:
    """The tracks' settings in ``hybrid``'s mode: in hybrid mode its own number of tracks
    and distance between them."""
    tracks = tracks or TrackConfig()
    if hybrid.mode != 'hybrid':
        return tracks
    return replace(tracks, max_tracks=hybrid.max_tracks, min_distance_px=hybrid.min_distance_px)


def _frame_kind(detection: str) -> FrameKind:
    """What a hybrid frame holds for the keyframe tracker, from why the network ran on it
    ('' where it did not)."""
    if not detection:
        return 'carried'
    return 'for_keyframe' if detection in KEYFRAME_DETECTIONS else 'detected'


def recovery_weights(choice: str, weights: str | os.PathLike) -> Path | None:
    """The weights of the network that runs where Lucas-Kanade failed
    (``HybridConfig.recovery_model``: 'auto', 'same' or 'light') beside the tracking
    network's ``weights``, or None where it is the tracking network itself.

    The bundled light model's descriptors are distilled from the bundled default model's and
    match them, so it may recover for that model only; 'auto' takes it there.

    Raises:
        ValueError: 'light' beside weights other than the bundled default or light model
            (also where the package was installed without the default model).
        CheckpointNotFoundError: 'light' where the package was installed without it.
    """
    if choice == 'same':
        return None
    light = bundled_weights_path('light') if choice == 'light' else _bundled('light')
    if light is None:
        return None
    tracking = Path(weights).resolve()
    if tracking == light.resolve():
        return None
    default = _bundled('default')
    if default is not None and tracking == default.resolve():
        return light
    if choice == 'light':
        raise ValueError(
            f"recovery_model 'light' needs the bundled default model, not {weights}: the "
            "light model's descriptors match the bundled default model's only"
        )
    return None


def _bundled(variant: str) -> Path | None:
    """The path of a bundled model's weights, or None where the package was installed
    without them."""
    try:
        return bundled_weights_path(variant)
    except CheckpointNotFoundError:
        return None


class FramePipeline:
    """Extract keypoints, track them against the keyframe, and estimate the camera motion.

    In hybrid mode a second front-end, ``recovery``, may run on the frames where
    Lucas-Kanade failed (:func:`recovery_weights`); None: ``extractor`` runs on them too.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        tracker: TrackerConfig | None = None,
        tracks: TrackConfig | None = None,
        hybrid: HybridConfig | None = None,
        recovery: FeatureExtractor | None = None,
    ) -> None:
        self.extractor = extractor
        self.recovery = recovery
        hybrid = hybrid or HybridConfig()
        self.tracker = HomographyTracker(_keyframe_settings(tracker or TrackerConfig(), hybrid))
        self.feature_tracker = FeatureTracker(tracks)
        self.hybrid = None
        if hybrid.mode == 'hybrid':
            self.hybrid = HybridTracker(hybrid, _track_settings(tracks, hybrid))

    @classmethod
    def from_config(
        cls,
        cfg: PipelineConfig | None = None,
        weights: str | os.PathLike | None = None,
        device: str = 'auto',
        variant: str = 'default',
    ) -> FramePipeline:
        """Load ``weights`` (None: the bundled weights of ``variant``) on ``device`` with the
        given settings, and in hybrid mode the network of ``cfg.hybrid.recovery_model``
        (:func:`recovery_weights`)."""
        cfg = cfg or PipelineConfig()
        extractor = KeypointExtractor.from_checkpoint(weights, device, cfg.extractor, variant)
        recovery = None
        if cfg.hybrid.mode == 'hybrid':
            other = recovery_weights(cfg.hybrid.recovery_model, extractor.weights)
            if other is not None:
                recovery = KeypointExtractor.from_checkpoint(other, device, cfg.extractor)
        return cls(extractor, cfg.tracker, cfg.tracks, cfg.hybrid, recovery)

    @property
    def config(self) -> PipelineConfig:
        extractor = getattr(self.extractor, 'cfg', ExtractorConfig())
        hybrid = self.hybrid.cfg if self.hybrid is not None else EVERY_FRAME
        return PipelineConfig(extractor, self.tracker.cfg, self.feature_tracker.cfg, hybrid)

    def configure(self, cfg: PipelineConfig) -> None:
        """Apply new settings from the next frame on (the keyframe is kept; the tracking mode
        is fixed at construction)."""
        for extractor in (self.extractor, self.recovery):
            if isinstance(extractor, KeypointExtractor):
                extractor.configure(cfg.extractor)
        self.feature_tracker.cfg = cfg.tracks
        if self.hybrid is None:
            self.tracker.cfg = cfg.tracker
        else:
            hybrid = replace(cfg.hybrid, mode='hybrid')
            self.tracker.cfg = _keyframe_settings(cfg.tracker, hybrid)
            self.hybrid.track_cfg = _track_settings(cfg.tracks, hybrid)
            self.hybrid.cfg = self.hybrid.policy.cfg = hybrid

    def extract(self, image: np.ndarray) -> Features:
        """Keypoints of one image (raises ValueError for images it cannot take); with
        ``tracker.subpixel`` KP2D's carry their dense descriptors, and every front-end's its
        grey image (alignment, the tracks' texture test), until :meth:`track`."""
        if isinstance(self.extractor, KeypointExtractor):
            features = self.extractor.extract(image, keep_dense=self.tracker.cfg.subpixel)
        else:
            features = self.extractor.extract(image)
        order = getattr(getattr(self.extractor, 'cfg', None), 'channel_order', 'bgr')
        return replace(features, gray=gray_uint8(image, order))

    def track(
        self, features: Features, stamp_ns: int, camera: CameraModel | None = None
    ) -> FrameResult:
        """Track already-extracted ``features`` (the second half of :meth:`process`)."""
        points = ImagePoints.of(features.keypoints, camera)
        track = self.tracker.update(features, points, stamp_ns)
        tracks = self.feature_tracker.update(features, points, stamp_ns)
        features = replace(features, dense=None, gray=None)  # not kept past tracking
        return FrameResult(int(stamp_ns), features, points, track, tracks)

    def process(
        self, image: np.ndarray, stamp_ns: int, camera: CameraModel | None = None
    ) -> FrameResult:
        """Run one frame.

        Args:
            image: (H, W[, C]) uint8/uint16/float image (see ``KeypointExtractor.extract``).
            stamp_ns: capture time in integer nanoseconds; frames must come in increasing
                order (call :meth:`reset` when time jumps back).
            camera: the camera model (intrinsics, distortion), or None for keypoints,
                homographies in raw pixels and tracks without normalised coordinates.

        Raises:
            ValueError: the image cannot be processed (the pipeline state is unchanged).
        """
        if self.hybrid is None:
            return self.track(self.extract(image), stamp_ns, camera)
        return self._hybrid(image, stamp_ns, camera)

    def _hybrid(self, image: np.ndarray, stamp_ns: int, camera: CameraModel | None) -> FrameResult:
        """One frame of hybrid tracking: Lucas-Kanade carries the tracks, the network runs
        where it is needed (:mod:`kp2d_core.vo.hybrid_tracks`)."""
        order = getattr(getattr(self.extractor, 'cfg', None), 'channel_order', 'bgr')
        gray = gray_uint8(image, order)
        step = self.hybrid.step(image, gray, stamp_ns, camera, self._detect)
        ids = np.full(len(step.features), -1, np.int64)  # Lucas-Kanade's tracks: matches
        ids[step.tracks.indices] = step.tracks.ids.astype(np.int64)
        kind = _frame_kind(step.detection)
        track = self.tracker.update(step.features, step.points, stamp_ns, ids, kind)
        found = track.H_key_to_cur is not None
        low = found and track.num_inliers < KEYFRAME_MARGIN * self.tracker.cfg.min_keyframe_inliers
        lost = not found and track.reason != 'first_frame'
        renewed = track.new_keyframe and not track.far  # for want of points: new ones
        if lost or low or (renewed and not step.detection) or track.waits:
            self.hybrid.request_detection('keyframe')
        features = replace(step.features, dense=None, gray=None)
        return FrameResult(
            int(stamp_ns), features, step.points, track, step.tracks, step.detection
        )

    def _detect(self, image: np.ndarray, recovery: bool) -> Features:
        """The front-end's keypoints of ``image`` for hybrid tracking; where Lucas-Kanade
        failed (``recovery``) the recovery network's, at ``recovery_scale`` of its usual
        input size (the classical front-ends detect at full size)."""
        extractor = self.recovery if recovery and self.recovery is not None else self.extractor
        if isinstance(extractor, KeypointExtractor):
            scale = self.hybrid.cfg.recovery_scale if recovery else 1.0
            return extractor.extract(image, scale=scale)
        return extractor.extract(image)

    def reset(self) -> None:
        """Forget the keyframe, the tracks and the front-end's state (if it keeps any);
        restart the trajectory at the identity."""
        self.tracker.reset()
        self.feature_tracker.reset()
        if self.hybrid is not None:
            self.hybrid.reset()
        reset_front_end = getattr(self.extractor, 'reset', None)
        if reset_front_end is not None:
            reset_front_end()
