"""Keyframe-based homography tracking and visual odometry over a stream of Features.

Every frame is matched against the current *keyframe*, not the previous frame, so a still
camera does not drift. The keyframe is replaced by the current frame when the homography
inliers fall below ``min_keyframe_inliers`` (or ``keyframe_inlier_ratio`` of the first
frame's), in a scene without depth when they moved further than ``max_keyframe_shift_px``
from it, or when the camera calibration changes. In hybrid mode (the caller says what kind of
frame it passes, :data:`FrameKind`) a keyframe of a scene without depth is made only from a
frame the network ran on: one that Lucas-Kanade carried alone holds just the tracks it kept,
so the frames after it, where those tracks were lost, had little to match but stale
descriptors. Such a keyframe waits for the next frame instead (``TrackResult.waits``), which
runs the network and becomes the keyframe. A frame that cannot be measured against the
keyframe (no homography of ``MIN_TRACK_INLIERS``, a pose that is not a rigid transform) has
no pose and leaves the keyframe in place: the frames after a blackout, a covered lens or a
burst of blur are measured against it again, and the trajectory goes on where it was. Each
such frame is also kept as the candidate keyframe; the next frame that fails against the
keyframe but is measured against the candidate makes the candidate the keyframe, at the pose
of the last frame measured against the old keyframe (the camera moved on, too far for the old
keyframe: one frame's motion off, not the whole keyframe's). Geometry runs on
:class:`~kp2d_core.geometry.image_points.ImagePoints`: rectified pixels when the camera has
lens distortion, raw pixels otherwise; the sample-consensus
homography is refined through the lens model under each match's own noise
(:mod:`kp2d_core.geometry.refinement`; an essential matrix's motion likewise), and the model
selection weighs it as consensus fitted it. With intrinsics, the homography (or, for non-planar
scenes, an essential matrix) gives the camera motion, chained through keyframes into a pose
``T_world_cur`` (the first keyframe's camera is the world), with one scale along it
(:mod:`kp2d_core.vo.odometry`). Where keyframes give way for distance (or with
``fuse_previous_keyframe``), the frame that becomes the keyframe in a scene without depth is
measured against the keyframe before the last as well, and where enough tracks reach back to
it, its pose lies between the two measurements, each weighed by its rotation variance: the
chain through the last keyframe adds that keyframe's own link. Stamps are integer
nanoseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, get_args

import numpy as np

from kp2d_core.geometry.camera import same_camera
from kp2d_core.geometry.homography import (
    METHODS,
    HomographyResult,
    estimate_homography,
    reprojection_rms,
)
from kp2d_core.geometry.image_points import ImagePoints
from kp2d_core.geometry.poses import (
    blend_poses,
    invert_pose,
    is_pose,
    relative_pose_variance,
)
from kp2d_core.geometry.refinement import AlignedCorners, geometry_noise, refined_result
from kp2d_core.inference.features import Features
from kp2d_core.inference.matching import match, match_descriptors
from kp2d_core.inference.subpixel import refined_points
from kp2d_core.vo.odometry import (
    Matched,
    Relative,
    Scene,
    carried_scene,
    matched_depths,
    relative_motion,
)
from kp2d_core.vo.photometric_alignment import KeyImage, aligned_points

ORIGIN_VARIANCE = 1e-9  # the first keyframe is the world origin: known, but never exactly 0
IN_DEPTH_KEYFRAMES = 2  # keyframes in a row made in depth: a scene with depth
# Inliers of a new keyframe's measurement against the keyframe before the last needed to
# blend it in: under blur and frame drops fewer tracks reach back that far, and with fewer
# than 150 that measurement's rotation error (0.5-0.6 deg RMS) was twice the chain's through
# the last keyframe, far more than its residual said (docs/hybrid_tracking.md).
FUSION_MIN_INLIERS = 150
MIN_TRACK_INLIERS = 20  # fewer homography inliers: no homography, no pose (KP2D's matches
# between frames of sensor noise, a covered lens, fitted chance homographies of 5-11 inliers)

# What a frame passed to the tracker holds: 'detected', the network's keypoints (every frame
# in every-frame mode); in hybrid mode 'carried', only the tracks Lucas-Kanade carried, and
# 'for_keyframe', the network's keypoints of a frame it ran on because the keyframe asked
# for a successor or Lucas-Kanade failed.
FrameKind = Literal['detected', 'carried', 'for_keyframe']
FRAME_KINDS = get_args(FrameKind)
# What a keyframe does after a frame with a homography (see ``_renewal``).
Renewal = Literal['stays', 'inliers', 'far', 'for_keyframe', 'waits']


@dataclass(frozen=True)
class TrackerConfig:
    """Matching, robust estimation and keyframe settings."""

    mutual: bool = True  # mutual nearest-neighbour matching
    ratio: float | None = None  # Lowe ratio gate (None: off)
    max_distance: float | None = None  # descriptor distance gate (None: off)
    ransac_method: str = 'magsac'  # 'magsac', 'ransac', 'usac' or 'lmeds'
    ransac_threshold_px: float = 3.0
    min_keyframe_inliers: int = 40  # fewer inliers than this: the frame becomes the keyframe
    keyframe_inlier_ratio: float = 0.5  # or fewer than this share of the first frame's inliers
    # The share for keyframes in a scene without depth (a plane, a rotation, no camera model:
    # fewer than IN_DEPTH_KEYFRAMES keyframes in a row made with depth, see
    # odometry.Scene.deep); None: keyframe_inlier_ratio.
    planar_keyframe_inlier_ratio: float | None = None
    # Or, in a scene without depth, once its inliers moved further than this from it (median,
    # geometry pixels): where tracks outlive the view (hybrid mode), a keyframe would
    # otherwise be aligned against views ever further from it; None: no limit. (With depth,
    # renewals drift the poses: keyframes give way for lost inliers only.)
    max_keyframe_shift_px: float | None = None
    subpixel: bool = False  # refine matched points on the dense descriptors (where given)
    align: bool = True  # align matched points photometrically (kp2d_core.vo.photometric_alignment)
    # With align: the keyframe's corners (Shi-Tomasi) aligned into each frame as well, at most
    # this many, refine its homography beside the matches; 0: none.
    align_corners: int = 600
    # A new keyframe's pose (a scene without depth) also measured against the keyframe before
    # the last, and blended with the pose through the last by their variances where at least
    # FUSION_MIN_INLIERS tracks reach back to it; None: where keyframes give way for
    # distance (max_keyframe_shift_px set, hybrid mode), whose renewals each add a link's
    # error to the chain (docs/hybrid_tracking.md).
    fuse_previous_keyframe: bool | None = None

    def __post_init__(self) -> None:
        if self.ransac_method not in METHODS:
            raise ValueError(f'ransac_method must be one of {sorted(METHODS)}')
        if not 0.0 < self.ransac_threshold_px <= 100.0:
            raise ValueError(
                f'ransac_threshold_px must be in (0, 100], got {self.ransac_threshold_px}'
            )
        if not 4 <= self.min_keyframe_inliers <= 100_000:
            raise ValueError(
                f'min_keyframe_inliers must be in [4, 100000], got {self.min_keyframe_inliers}'
            )
        if self.ratio is not None and not 0 < self.ratio <= 1:
            raise ValueError(f'ratio must be in (0, 1], got {self.ratio}')
        if self.max_distance is not None and not 0 < self.max_distance <= 2:
            raise ValueError(f'max_distance must be in (0, 2], got {self.max_distance}')
        for name in ('keyframe_inlier_ratio', 'planar_keyframe_inlier_ratio'):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {value}')
        if not 0 <= self.align_corners <= 100_000:
            raise ValueError(f'align_corners must be in [0, 100000], got {self.align_corners}')
        shift = self.max_keyframe_shift_px
        if shift is not None and not 0.0 < shift <= 10_000.0:
            raise ValueError(f'max_keyframe_shift_px must be in (0, 10000], got {shift}')

    @property
    def fuses(self) -> bool:
        """Whether a new keyframe's pose blends two measurements (``fuse_previous_keyframe``)."""
        if self.fuse_previous_keyframe is None:
            return self.max_keyframe_shift_px is not None
        return self.fuse_previous_keyframe


@dataclass(frozen=True)
class TrackResult:
    """What one frame produced.

    Attributes:
        H_key_to_cur: (3, 3) keyframe-to-current homography, or None. In rectified pixels
            (``camera.P``) when ``rectified``, else in raw image pixels.
        reason: why there is no homography ('first_frame', 'too_few_matches',
            'camera_changed', ...), or None.
        num_matches, num_inliers: matching statistics against the keyframe.
        key_stamp_ns: stamp (ns) of the keyframe the homography starts from.
        new_keyframe: this frame became the keyframe (after computing the result).
        T_world_cur: (4, 4) camera pose, or None without intrinsics or when tracking failed.
        pose_method: 'homography', 'essential', 'pnp' or None.
        pts_key, pts_cur: (M, 2) matched points in raw pixels; inliers: (M,) bool.
        residual_px: RMS distance of the inliers to the homography's prediction (px).
        covariance: (6, 6) covariance of T_world_cur (x, y, z, roll, pitch, yaw), see
            :func:`~kp2d_core.geometry.poses.relative_pose_variance`; None without a pose.
        rectified: the homography is between rectified images.
        relative_covariance: (6, 6) covariance of the pose relative to the keyframe (this
            frame's own measurement, not accumulated); None without a pose.
        far: the keyframe gave way only because its inliers moved ``max_keyframe_shift_px``
            from it (they were still plenty).
        waits: the keyframe would have given way for want of inliers, but this frame held
            only Lucas-Kanade's tracks ('carried'): the next frame should run the network
            ('for_keyframe'), and it becomes the keyframe.
    """

    H_key_to_cur: np.ndarray | None
    reason: str | None
    num_matches: int
    num_inliers: int
    key_stamp_ns: int
    new_keyframe: bool
    T_world_cur: np.ndarray | None
    pose_method: str | None
    pts_key: np.ndarray
    pts_cur: np.ndarray
    inliers: np.ndarray
    residual_px: float = float('nan')
    covariance: np.ndarray | None = None
    rectified: bool = False
    relative_covariance: np.ndarray | None = None
    far: bool = False
    waits: bool = False


@dataclass
class _Keyframe:
    features: Features
    points: ImagePoints
    stamp_ns: int
    T_world: np.ndarray
    variance: np.ndarray  # (6,) accumulated along the trajectory
    scene: Scene = field(default_factory=Scene)  # its plane and depths, in world units
    reference_inliers: int | None = None  # inliers of the first frame tracked against it
    latest: tuple | None = None  # (T_world, covariance, relative) of the last frame with a pose
    image: KeyImage | None = None  # for alignment, made from features.gray when first needed
    ids: np.ndarray | None = None  # (N,) int64 track id of each keypoint, -1 for none
    in_depth: int = 0  # keyframes in a row, this one included, made in a scene with depth
    depth_seen: bool = False  # a frame measured against it had a motion with depth
    previous: _Keyframe | None = None  # the keyframe it was measured against (none before)
    link_variance: np.ndarray | None = None  # (6,) variance of that measurement

    @property
    def flat(self) -> bool:
        """Made and measured without depth."""
        return not (self.scene.deep or self.depth_seen)

    def __post_init__(self) -> None:  # its matches refine the other frame's points
        self.features = replace(self.features, dense=None)

    @property
    def last(self) -> tuple[np.ndarray, np.ndarray]:
        """(T_world (4, 4), variances (6,)) of the last frame measured against it, or its own."""
        if self.latest is None:
            return self.T_world, self.variance
        return self.latest[0], np.diag(self.latest[1]).copy()

    def key_image(self, corners: int) -> KeyImage | None:
        """What aligning a frame to it needs, with up to ``corners`` of its corners (None
        without a grey image); its grey image is dropped once the smoothed one is made."""
        if self.image is None and self.features.gray is not None:
            self.image = KeyImage.of(self.features.gray, self.points.raw, corners)
            self.features = replace(self.features, gray=None)
        return self.image


@dataclass(frozen=True)
class _Measured:
    """A frame measured against one keyframe (see ``HomographyTracker._measure``)."""

    matches: int
    cur: ImagePoints  # the frame's points, aligned to the keyframe's where they were
    matched: Matched
    result: HomographyResult
    residual: float
    relative: Relative | None
    T_world_cur: np.ndarray | None
    reason: str | None

    @property
    def lost(self) -> bool:
        """No homography: the frame says nothing of its motion against this keyframe."""
        return not self.result.ok


class HomographyTracker:
    """Feed :meth:`update` one frame at a time (see the module docstring)."""

    def __init__(self, cfg: TrackerConfig | None = None) -> None:
        self.cfg = cfg or TrackerConfig()
        self.reset()

    def reset(self) -> None:
        """Forget the keyframe and restart the trajectory at the identity."""
        self.key: _Keyframe | None = None
        self.candidate: _Keyframe | None = None  # the last frame lost against the keyframe

    def _kept(self, features: Features) -> Features:
        """What a keyframe keeps of a frame's features: its grey image only for alignment."""
        return features if self.cfg.align else replace(features, gray=None)

    @property
    def key_stamp_ns(self) -> int | None:
        return None if self.key is None else self.key.stamp_ns

    def update(
        self,
        features: Features,
        points: ImagePoints,
        stamp_ns: int,
        ids: np.ndarray | None = None,
        kind: FrameKind = 'detected',
    ) -> TrackResult:
        """Track one frame.

        Args:
            features: the frame's keypoints.
            points: the same keypoints with their camera (``ImagePoints.of``).
            stamp_ns: the frame's stamp in nanoseconds.
            ids: (N,) int64 track id of each keypoint (-1: none), where something followed
                the points from frame to frame (hybrid mode: Lucas-Kanade). A keypoint of
                the keyframe's track is its match, whatever the descriptors say (repetitive
                texture); the other keypoints are matched by their descriptors.
            kind: what the frame holds (:data:`FrameKind`; hybrid mode: 'carried' or
                'for_keyframe' where it applies).
        """
        if kind not in FRAME_KINDS:
            raise ValueError(f'kind must be one of {FRAME_KINDS}, got {kind!r}')
        stamp_ns = int(stamp_ns)
        key = self.key
        if key is None or not same_camera(key.points.camera, points.camera):
            reason = 'first_frame' if key is None else 'camera_changed'
            T, variance = (np.eye(4), np.full(6, ORIGIN_VARIANCE)) if key is None else key.last
            self.key = _Keyframe(self._kept(features), points, stamp_ns, T, variance, ids=ids)
            self.candidate = None
            pose = self.key.T_world.copy() if points.camera is not None else None
            covariance = np.diag(self.key.variance) if pose is not None else None
            empty = np.zeros((0, 2))
            return TrackResult(
                None,
                reason,
                0,
                0,
                stamp_ns,
                True,
                pose,
                None,
                empty,
                empty,
                np.zeros(0, bool),
                covariance=covariance,
                rectified=points.rectified,
            )
        return self._track(key, features, points, stamp_ns, ids, kind)

    def _track(
        self,
        key: _Keyframe,
        features: Features,
        points: ImagePoints,
        stamp_ns: int,
        ids: np.ndarray | None,
        kind: FrameKind,
    ) -> TrackResult:
        """Measure the frame against the keyframe; where that fails, against the candidate
        (the last frame lost against the keyframe), which then becomes the keyframe."""
        measured = self._measure(key, features, points, ids)
        if measured.lost and self.candidate is not None:
            again = self._measure(self.candidate, features, points, ids)
            if not again.lost:
                key, measured = self.candidate, again
                self.key = key
        if measured.lost:  # the keyframe is kept: a frame after a blackout can come back to it
            no_pose = (None, None, None)  # its pose: the last one measured against ``key``
            self.candidate = self._successor(key, features, points, stamp_ns, *no_pose, ids)
        else:
            self.candidate = None
        return self._result(key, features, points, stamp_ns, measured, ids, kind)

    def _measure(
        self, key: _Keyframe, features: Features, points: ImagePoints, ids: np.ndarray | None
    ) -> _Measured:
        """The frame's homography and motion against ``key`` (its scene takes what they
        tell of it)."""
        cfg = self.cfg
        pairs = self._pairs(key, features, ids)
        idx_key, idx_cur = pairs[:, 0], pairs[:, 1]
        cur = points  # the matched points refined toward their keyframe partners (not kept)
        if cfg.subpixel and features.dense is not None:
            cur = refined_points(points, key.features, features, idx_key, idx_cur)
        fit = dict(method=cfg.ransac_method, threshold_px=cfg.ransac_threshold_px)
        fit['min_inliers'] = MIN_TRACK_INLIERS
        geo_key, geo_cur = key.points.pixels[idx_key], cur.pixels[idx_cur]
        result = estimate_homography(geo_key, geo_cur, None, **fit)
        gray, noise, corners, matches = features.gray, None, None, len(pairs)
        usable = result.ok and cfg.align and gray is not None
        key_image = key.key_image(cfg.align_corners) if usable else None
        if key_image is not None:
            moved, aligned = aligned_points(cur, gray, key_image, *pairs.T, result.H)
            if aligned.ok.sum() >= cfg.min_keyframe_inliers:  # a match the images do not
                cur, pairs, ok = moved, pairs[aligned.ok], aligned.ok  # confirm is not one
                noise = (aligned.key_noise[ok], aligned.cur_noise[ok])
                geo_key, geo_cur = key.points.pixels[pairs[:, 0]], cur.pixels[pairs[:, 1]]
                result = estimate_homography(geo_key, geo_cur, None, **fit)
                found = aligned.corners_key, aligned.corners_cur, aligned.corners_noise
                corners = AlignedCorners.of(*found, points.camera)
        consensus, noise = result.H, geometry_noise(key.points, cur, pairs, noise)
        if result.ok:
            result = refined_result(result, key.points, cur, pairs, noise, corners)
        residual = reprojection_rms(result.H, geo_key, geo_cur, result.inliers)
        m = Matched(geo_key, geo_cur, pairs[:, 0], pairs[:, 1], result.inliers, noise)
        K, threshold = points.intrinsics, cfg.ransac_threshold_px
        relative = None
        if result.ok and K is not None:
            relative = relative_motion(result.H, m, K, key.scene, threshold, consensus)
        if relative is not None and not relative.scaled:  # the scale restarts: the frames
            size = len(key.features)  # after it against this keyframe keep the new one
            depths = matched_depths(relative, m, K, size, threshold, current=False)
            key.scene.depths, key.scene.firm = depths
            key.scene.deep = True
        T_world_cur, reason = None, result.reason
        if relative is not None:
            T_world_cur = key.T_world @ invert_pose(relative.T_cur_key)
        if T_world_cur is not None and not is_pose(T_world_cur):  # never chained
            T_world_cur, reason, relative = None, 'non_finite_pose', None
            result = replace(result, H=None, inliers=np.zeros_like(result.inliers))
        return _Measured(matches, cur, m, result, residual, relative, T_world_cur, reason)

    def _pairs(self, key: _Keyframe, features: Features, ids: np.ndarray | None) -> np.ndarray:
        """(M, 2) keyframe and frame keypoint indices of the matches: the same track where
        both have track ids, then mutual nearest descriptors among the other keypoints."""
        cfg = self.cfg
        if ids is None or key.ids is None:
            return match(key.features, features, cfg.mutual, cfg.max_distance, cfg.ratio).indices
        tracked_key, tracked_cur = np.flatnonzero(key.ids >= 0), np.flatnonzero(ids >= 0)
        _, a, b = np.intersect1d(key.ids[tracked_key], ids[tracked_cur], return_indices=True)
        rest_key = np.setdiff1d(np.arange(len(key.features)), tracked_key[a])
        rest_cur = np.setdiff1d(np.arange(len(features)), tracked_cur[b])
        found = match_descriptors(
            key.features.descriptors[rest_key],
            features.descriptors[rest_cur],
            cfg.mutual,
            cfg.max_distance,
            cfg.ratio,
        ).indices
        same = np.stack([tracked_key[a], tracked_cur[b]], axis=1)
        other = np.stack([rest_key[found[:, 0]], rest_cur[found[:, 1]]], axis=1)
        return np.concatenate([same, other]).astype(np.int64)

    def _result(
        self,
        key: _Keyframe,
        features: Features,
        points: ImagePoints,
        stamp_ns: int,
        measured: _Measured,
        ids: np.ndarray | None,
        kind: FrameKind,
    ) -> TrackResult:
        """The frame's TrackResult; the keyframe is renewed where ``_renewal`` says so."""
        cfg, result, m, relative = self.cfg, measured.result, measured.matched, measured.relative
        T_world_cur, covariance, relative_covariance = measured.T_world_cur, None, None
        K, own = points.intrinsics, None
        if T_world_cur is not None:
            own = relative_pose_variance(measured.residual, result.num_inliers, K, relative.scaled)
            covariance, relative_covariance = np.diag(key.variance + own), np.diag(own)
            key.latest = (T_world_cur, covariance, relative)
        if key.reference_inliers is None and result.ok:
            key.reference_inliers = result.num_inliers  # the first frame tracked against it
        key.depth_seen = key.depth_seen or (relative is not None and relative.deep)
        renewal = _renewal(cfg, key, m, kind) if result.ok else 'stays'
        renew = renewal in ('inliers', 'far', 'for_keyframe')
        if renew:
            depths = None, None
            if relative is not None:  # this frame's own motion: its points' depths
                threshold = cfg.ransac_threshold_px
                depths = matched_depths(relative, m, K, len(features), threshold, current=True)
            if cfg.fuses and T_world_cur is not None:
                T_world_cur = self._fused(key, features, points, ids, T_world_cur, own)
            self.key = self._successor(
                key, features, points, stamp_ns, T_world_cur, covariance, relative, ids
            )
            self.key.scene.depths, self.key.scene.firm = depths
            if own is not None and cfg.fuses:
                self.key.previous, self.key.link_variance = key, own
                key.previous = None  # one keyframe back, not the whole chain
        return TrackResult(
            result.H,
            measured.reason,
            measured.matches,
            result.num_inliers,
            key.stamp_ns,
            renew,
            T_world_cur,
            None if relative is None else relative.method,
            key.points.raw[m.idx_key],
            measured.cur.raw[m.idx_cur],
            result.inliers,
            measured.residual,
            covariance,
            points.rectified,
            relative_covariance,
            renewal == 'far',
            renewal == 'waits',
        )

    def _fused(
        self,
        key: _Keyframe,
        features: Features,
        points: ImagePoints,
        ids: np.ndarray | None,
        T_world_cur: np.ndarray,
        own: np.ndarray,
    ) -> np.ndarray:
        """The pose of a frame that becomes the keyframe after ``key``: ``T_world_cur``
        (measured through ``key``), or where the keyframe before ``key`` measures it too with
        at least FUSION_MIN_INLIERS inliers and neither saw depth, the pose between the two,
        nearer the one of smaller rotation variance (through ``key``: its own link's and this
        frame's, ``own``)."""
        previous = key.previous
        if previous is None or key.link_variance is None or not (key.flat and previous.flat):
            return T_world_cur
        direct = self._measure(previous, features, points, ids)
        if direct.T_world_cur is None or direct.result.num_inliers < FUSION_MIN_INLIERS:
            return T_world_cur
        scaled = direct.relative.scaled
        straight = relative_pose_variance(
            direct.residual, direct.result.num_inliers, points.intrinsics, scaled
        )[3:].sum()
        chained = (key.link_variance + own)[3:].sum()
        return blend_poses(T_world_cur, direct.T_world_cur, chained / (chained + straight))

    def _successor(
        self, key, features, points, stamp_ns, T_world_cur, covariance, relative, ids
    ) -> _Keyframe:
        """The current frame as the keyframe after ``key``, carrying the scene
        (:func:`~kp2d_core.vo.odometry.carried_scene`).

        Without a pose of its own it takes the last one measured against ``key``.
        """
        if T_world_cur is None and key.latest is not None:
            T_world_cur, covariance, relative = key.latest
        kept = self._kept(features)
        if T_world_cur is None:
            return _Keyframe(kept, points, stamp_ns, *key.last, ids=ids)
        scene = carried_scene(relative, key.scene)
        scene.deep = scene.deep or _keeps_depth(key, relative)
        variance = np.diag(covariance).copy()
        in_depth = key.in_depth + 1 if scene.deep else 0
        return _Keyframe(
            kept, points, stamp_ns, T_world_cur, variance, scene, ids=ids, in_depth=in_depth
        )


def _keeps_depth(key: _Keyframe, relative: Relative) -> bool:
    """Whether a frame that becomes the keyframe after ``key`` stays in a scene with depth
    although its own motion saw none: the scene's depth was established (IN_DEPTH_KEYFRAMES
    keyframes in a row made with it) and the keyframe's points of firm depth placed the
    frame (a homography's rotation with their translation). Otherwise one such frame made a
    corridor's next keyframe flat, and the homographies after it, bent by the depth, turned
    the poses by 1-4 degrees per frame."""
    return key.in_depth >= IN_DEPTH_KEYFRAMES and relative.placed


def _renewal(cfg: TrackerConfig, key: _Keyframe, m: Matched, kind: FrameKind) -> Renewal:
    """What the keyframe does after a frame of ``kind`` with a homography and these matches.

    'inliers': it gives way, its inliers fell below its share of its first frame's (or the
    minimum). 'far': it gives way, its inliers moved ``max_keyframe_shift_px`` from it
    (median, geometry pixels), never where it was made or measured in depth (such renewals
    drifted the poses).
    Where no depth was seen, a 'for_keyframe' frame always takes its place ('for_keyframe'),
    and a 'carried' frame with too few inliers but at least the minimum leaves it in place
    one frame more ('waits'): the next frame runs the network. Otherwise 'stays'.
    """
    inliers = int(m.inliers.sum())
    deep = key.in_depth >= IN_DEPTH_KEYFRAMES
    flat = key.flat
    if kind == 'for_keyframe' and flat:
        return 'for_keyframe'
    ratio = _renewal_ratio(cfg, deep)
    if inliers < max(cfg.min_keyframe_inliers, ratio * (key.reference_inliers or 0)):
        waits = kind == 'carried' and flat and inliers >= cfg.min_keyframe_inliers
        return 'waits' if waits else 'inliers'
    if cfg.max_keyframe_shift_px is None or not flat or not inliers:
        return 'stays'
    shift = np.median(np.linalg.norm(m.cur[m.inliers] - m.key[m.inliers], axis=1))
    return 'far' if shift > cfg.max_keyframe_shift_px else 'stays'


def _renewal_ratio(cfg: TrackerConfig, deep: bool) -> float:
    """The share of its first frame's inliers below which a keyframe gives way: the planar
    share unless the scene has depth (``deep``)."""
    if cfg.planar_keyframe_inlier_ratio is None or deep:
        return cfg.keyframe_inlier_ratio
    return cfg.planar_keyframe_inlier_ratio
