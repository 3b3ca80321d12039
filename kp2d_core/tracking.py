"""Keyframe-based homography tracking and visual odometry over a stream of Features.

Every frame is matched against the current *keyframe*, not the previous frame, so a still
camera does not drift. The keyframe is replaced by the current frame when the homography
inliers fall below ``min_keyframe_inliers`` or the estimation fails. With intrinsics, the
homography (or, for non-planar scenes, an essential matrix) gives the camera motion, chained
through keyframes into a pose ``T_world_cur`` (the first keyframe's camera is the world).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kp2d_core.checks import check_shape
from kp2d_core.frontend import Features
from kp2d_core.geometry import warp_points
from kp2d_core.homography import METHODS, estimate_homography
from kp2d_core.matching import match
from kp2d_core.motion import invert_pose, is_pose, pose_from_essential, pose_from_homography

MIN_NOISE_PX = 0.3  # keypoints are not localised better than this, whatever the fit says
TRANSLATION_FACTOR = 3.0  # translation from a homography is less certain than rotation


@dataclass(frozen=True)
class TrackerConfig:
    """Matching, robust estimation and keyframe settings."""

    mutual: bool = True  # mutual nearest-neighbour matching
    ratio: float | None = None  # Lowe ratio gate (None: off)
    max_distance: float | None = None  # descriptor distance gate (None: off)
    ransac_method: str = 'magsac'  # 'magsac', 'ransac', 'usac' or 'lmeds'
    ransac_threshold_px: float = 3.0
    min_keyframe_inliers: int = 40  # fewer inliers than this: the frame becomes the keyframe
    planar_inlier_ratio: float = 0.5  # fewer H inliers than this share: pose from E instead

    def __post_init__(self) -> None:
        if self.ransac_method not in METHODS:
            raise ValueError(f'ransac_method must be one of {sorted(METHODS)}')
        if self.ransac_threshold_px <= 0 or self.min_keyframe_inliers < 4:
            raise ValueError('ransac_threshold_px must be > 0 and min_keyframe_inliers >= 4')
        if self.ratio is not None and not 0 < self.ratio <= 1:
            raise ValueError(f'ratio must be in (0, 1], got {self.ratio}')


@dataclass(frozen=True)
class TrackResult:
    """What one frame produced.

    Attributes:
        H_key_to_cur: (3, 3) keyframe-to-current homography (pixels), or None.
        reason: why there is no homography ('first_frame', 'too_few_matches', ...), or None.
        num_matches, num_inliers: matching statistics against the keyframe.
        key_stamp: timestamp (s) of the keyframe the homography starts from.
        new_keyframe: this frame became the keyframe (after computing the result).
        T_world_cur: (4, 4) camera pose, or None without intrinsics or when tracking failed.
        pose_method: 'homography', 'essential' or None.
        pts_key, pts_cur: (M, 2) matched points; inliers: (M,) bool.
        residual_px: RMS distance of the inliers to the homography's prediction (px).
        covariance: (6, 6) covariance of T_world_cur (x, y, z, roll, pitch, yaw), see
            :func:`relative_pose_variance`; None without a pose.
    """

    H_key_to_cur: np.ndarray | None
    reason: str | None
    num_matches: int
    num_inliers: int
    key_stamp: float
    new_keyframe: bool
    T_world_cur: np.ndarray | None
    pose_method: str | None
    pts_key: np.ndarray
    pts_cur: np.ndarray
    inliers: np.ndarray
    residual_px: float = float('nan')
    covariance: np.ndarray | None = None


class HomographyTracker:
    """Feed :meth:`update` one frame at a time (see the module docstring)."""

    def __init__(self, cfg: TrackerConfig | None = None) -> None:
        self.cfg = cfg or TrackerConfig()
        self.reset()

    def reset(self) -> None:
        """Forget the keyframe and restart the trajectory at the identity."""
        self.key: Features | None = None
        self.key_stamp = 0.0
        self.T_world_key = np.eye(4)
        self.key_variance = np.zeros(6)  # accumulated over the keyframes of the trajectory

    def update(self, features: Features, stamp: float, K: np.ndarray | None) -> TrackResult:
        """Track one frame.

        Args:
            features: the frame's keypoints.
            stamp: its timestamp in seconds.
            K: (3, 3) intrinsics, or None (homography only).
        """
        if K is not None:
            check_shape(K, '3,3', 'K')
        if self.key is None:
            self._set_keyframe(features, stamp, self.T_world_key)
            empty = np.zeros((0, 2))
            pose = self.T_world_key.copy() if K is not None else None
            return TrackResult(
                None, 'first_frame', 0, 0, stamp, True, pose, None, empty, empty, np.zeros(0, bool)
            )
        matches = match(self.key, features, self.cfg.mutual, self.cfg.max_distance, self.cfg.ratio)
        pts_key = self.key.keypoints[matches.indices[:, 0]].cpu().numpy().astype(np.float64)
        pts_cur = features.keypoints[matches.indices[:, 1]].cpu().numpy().astype(np.float64)
        result = estimate_homography(
            pts_key, pts_cur, None, self.cfg.ransac_method, self.cfg.ransac_threshold_px
        )
        T_world_cur, method, covariance, reason = None, None, None, result.reason
        key_stamp = self.key_stamp
        residual = reprojection_rms(result.H, pts_key, pts_cur, result.inliers)
        if result.ok and K is not None:
            T_world_cur, method = self._pose(result.H, result.inliers, pts_key, pts_cur, K)
        if T_world_cur is not None and not is_pose(T_world_cur):
            self.reset()  # never chain a broken pose into the trajectory
            T_world_cur, method, reason = None, None, 'non_finite_pose'
        if T_world_cur is not None:
            variance = relative_pose_variance(residual, result.num_inliers, K, method)
            covariance = np.diag(self.key_variance + variance)
        renew = self.key is None or not result.ok
        renew = renew or result.num_inliers < self.cfg.min_keyframe_inliers
        if renew:
            if T_world_cur is not None:
                self.key_variance = np.diag(covariance).copy()
            self._set_keyframe(features, stamp, T_world_cur)
        return TrackResult(
            result.H if reason != 'non_finite_pose' else None,
            reason,
            len(matches),
            result.num_inliers,
            key_stamp,
            renew,
            T_world_cur,
            method,
            pts_key,
            pts_cur,
            result.inliers,
            residual,
            covariance,
        )

    def _pose(self, H, inliers, pts_key, pts_cur, K) -> tuple[np.ndarray | None, str | None]:
        if inliers.mean() >= self.cfg.planar_inlier_ratio:
            relative = pose_from_homography(H, K, pts_key[inliers], pts_cur[inliers])
        else:
            relative = pose_from_essential(pts_key, pts_cur, K)
        if relative is None:
            return None, None
        return self.T_world_key @ invert_pose(relative.T_cur_ref), relative.method

    def _set_keyframe(self, features: Features, stamp: float, T_world: np.ndarray | None) -> None:
        self.key, self.key_stamp = features, stamp
        if T_world is not None:
            self.T_world_key = T_world


def reprojection_rms(
    H: np.ndarray | None, pts0: np.ndarray, pts1: np.ndarray, inliers: np.ndarray
) -> float:
    """RMS distance (px) between ``H`` applied to the inliers of ``pts0`` and ``pts1``."""
    if H is None or not inliers.any():
        return float('nan')
    error = warp_points(H, pts0[inliers]) - pts1[inliers]
    return float(np.sqrt(np.mean(np.sum(error**2, axis=1))))


def relative_pose_variance(
    residual_px: float, num_inliers: int, K: np.ndarray, method: str | None
) -> np.ndarray:
    """Variances (6,) of a keyframe-relative pose from the fit's quality.

    The pixel noise (the inlier residual, at least MIN_NOISE_PX) averaged over the inliers
    and divided by the focal length gives the angular uncertainty; translation (in units of
    the plane distance) gets the same, times TRANSLATION_FACTOR. An essential-matrix pose
    has no scale, so its translation variance is 1. Chaining keyframes adds the variances.
    """
    noise = max(residual_px if np.isfinite(residual_px) else 1.0, MIN_NOISE_PX)
    sigma = noise / (0.5 * (K[0, 0] + K[1, 1]) * np.sqrt(max(num_inliers, 1)))
    rotation = np.full(3, sigma**2)
    translation = np.full(3, (TRANSLATION_FACTOR * sigma) ** 2)
    if method == 'essential':
        translation[:] = 1.0
    return np.concatenate([translation, rotation])
