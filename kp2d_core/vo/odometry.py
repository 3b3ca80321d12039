"""A frame's camera motion against its keyframe, with one scale along the trajectory.

The motion comes from the homography's decomposition, or from an essential matrix where that
models the matches better. World units are the first keyframe's distance to its plane; each
keyframe carries the scene in them (:class:`Scene`): the plane (d' = d + n'.t from keyframe
to keyframe) and the depths of its keypoints, triangulated when it became the keyframe.
The points of firm depth give the motion of an essential matrix's frames, and of a
homography's in a scene with depth (a keyframe made from an essential matrix or PnP, where a
homography is bent): the model's rotation with the translation they give, or PnP where
that explains clearly more of them. With too few of them, the depths
scale an essential matrix's unit translation and give a homography its plane's distance.
An essential matrix with nothing to measure it by restarts the scale and gives the keyframe
depths in the new one, which the homography's translation (its plane at the carried
distance) keeps close to the old one. A homography's plane distance is carried only where
the keyframe's depths of its inliers cannot measure it: a keyframe renewed on a homography
in a scene with depth carries the distance of the plane it was placed on, while the next
frames' homographies may fit another (a corridor's wall, then its floor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from kp2d_core.geometry.epipolar import MIN_GRIC_SIGMA_PX, prefers_homography
from kp2d_core.geometry.essential_motion import pose_from_essential
from kp2d_core.geometry.homography_motion import pose_from_homography
from kp2d_core.geometry.poses import make_pose
from kp2d_core.geometry.structure import (
    FIRM_PARALLAX_DEG,
    MIN_SCALE_POINTS,
    back_project,
    plane_distance,
    pose_from_points,
    reprojected_within,
    scale_from_depths,
    translation_from_points,
    triangulate,
)

ESSENTIAL_SUPPORT = 0.9  # an E with fewer points in front than this share of H's inliers
POINTS_MARGIN = 0.1  # share of the firm points PnP must reproject beyond the alternative
# Until a keyframe has seen depth, GRIC takes the noise to be at least this (px): an essential
# matrix absorbs every error along its epipolar lines (motion blur and Lucas-Kanade's drift
# along the motion, which on a plane look like parallax) and its own residuals then put the
# noise too low. Seen depth, GRIC estimates it from them alone (a corridor's frames just
# after a keyframe, whose parallax is below a pixel). docs/hybrid_tracking.md has the figures.
PLANAR_GRIC_SIGMA_PX = 0.75


@dataclass
class Scene:
    """What a keyframe knows of the scene, in world units.

    Attributes:
        plane_normal: (3,) unit normal of the plane seen so far, in the keyframe's camera.
        plane_distance: its distance (the first keyframe's is 1).
        depths: (N,) depth of each of the keyframe's keypoints; NaN where unknown.
        firm: (N,) bool, depths seen with FIRM_PARALLAX_DEG of parallax.
        deep: the keyframe was made in a scene with depth (its motion came from an
            essential matrix or from points of known depth; or, where the depth was
            established, the points of firm depth placed it: see the keyframe tracker).
    """

    plane_normal: np.ndarray | None = None
    plane_distance: float = 1.0
    depths: np.ndarray | None = None
    firm: np.ndarray | None = None
    deep: bool = False


class Relative(NamedTuple):
    """A frame's motion against its keyframe."""

    T_cur_key: np.ndarray  # (4, 4), translation in world units when ``scaled``
    method: str  # 'homography', 'essential' or 'pnp'
    normal: np.ndarray | None = None  # (3,) the plane carried on, in the keyframe's camera
    distance: float | None = None  # its distance (world units), None when not measured
    scaled: bool = True  # False: an essential matrix not measured by depths (scale restarts)
    deep: bool = False  # measured in a scene with depth (essential matrix, known points)
    placed: bool = False  # its translation came from the keyframe's points of firm depth


@dataclass(frozen=True)
class Matched:
    """A frame's matches with its keyframe, in geometry pixels (rectified where distorted).

    Attributes:
        key, cur: (M, 2) keyframe and current pixels; idx_key, idx_cur: (M,) keypoint indices.
        inliers: (M,) bool, the homography's inliers.
        noise: keyframe and current (M, 2, 2) square roots of each point's covariance in
            geometry pixels (:func:`~kp2d_core.geometry.refinement.geometry_noise`); None: the
            identity.
    """

    key: np.ndarray
    cur: np.ndarray
    idx_key: np.ndarray
    idx_cur: np.ndarray
    inliers: np.ndarray
    noise: tuple[np.ndarray, np.ndarray] | None = None


def relative_motion(
    H: np.ndarray,
    m: Matched,
    K: np.ndarray,
    scene: Scene,
    threshold_px: float,
    consensus: np.ndarray | None = None,
) -> Relative | None:
    """The frame's motion against the keyframe in world units, or None.

    The homography's decomposition unless an essential matrix models the matches better
    (GRIC, :func:`~kp2d_core.geometry.epipolar.prefers_homography`: a scene with depth seen with
    enough parallax) and puts nearly all of the homography's inliers' worth of points in
    front of both cameras: the more general model must explain what the homography
    explains. On a plane, under a rotation or over a tiny baseline the essential matrix is
    degenerate and its rotation arbitrary (fewer points pass its cheirality test); in a
    scene with depth a homography bends the rotation. A decomposition that the points off
    the plane decided names the keyframe's plane (``scene.plane_normal`` is updated): the
    prior of the frames after it. ``consensus``: the sample-consensus homography ``H`` was
    refined from, which the model selection weighs against the essential matrix as it was
    fitted to the same matches (default ``H``). Where the homography has no valid
    decomposition (fitted across a corridor's walls over a short baseline, no solution puts
    most of its inliers in front), the essential matrix is taken even so: on the rendered
    fisheye corridor (SIFT) those frames had no pose; now their rotation error is within
    0.05 deg of their neighbours'.
    """
    known = firm = None
    if scene.depths is not None and scene.firm is not None:
        known, firm = scene.depths[m.idx_key], scene.firm[m.idx_key]
    essential = pose = pose_from_essential(m.key, m.cur, K, threshold_px, m.noise)
    if pose is not None and (
        pose.support < ESSENTIAL_SUPPORT * m.inliers.sum()  # degenerate: points behind
        or prefers_homography(
            H if consensus is None else consensus, pose, K, m.key, m.cur, _gric_floor(scene)
        )
    ):
        pose = None
    if pose is None:  # a homography bent by depth may have no valid decomposition
        pose = _homography_pose(H, m, K, scene) or essential
    if pose is None:
        return None
    if pose.decided:
        scene.plane_normal = pose.normal
    T = pose.T_cur_ref.copy()
    enough = firm is not None and firm.sum() >= MIN_SCALE_POINTS
    essential = pose.method == 'essential'
    if enough and (scene.deep or essential):  # the points of known depth give the motion
        deep = _with_depths(T[:3, :3], pose.method, m, K, known, firm, scene, threshold_px)
        if deep is not None:
            return deep
    if essential:
        return _scaled_essential(T, pose.inliers, m, K, scene, known, threshold_px, H)
    distance = scene.plane_distance  # carried, unless the keyframe's depths measure it
    on_plane = m.inliers & np.isfinite(known) if known is not None else np.zeros_like(m.inliers)
    if pose.normal is not None and on_plane.sum() >= MIN_SCALE_POINTS:
        measured = plane_distance(pose.normal, K, m.key[on_plane], known[on_plane])
        distance = measured or distance  # measured by the known depths
    T[:3, 3] *= distance  # plane-distance units -> world units
    return Relative(T, pose.method, pose.normal, distance)


def _gric_floor(scene: Scene) -> float:
    """The lowest noise (px) GRIC may estimate against the keyframe of ``scene``."""
    return MIN_GRIC_SIGMA_PX if scene.deep else PLANAR_GRIC_SIGMA_PX


def _with_depths(R, method, m: Matched, K, known, firm, scene, threshold_px) -> Relative | None:
    """The motion from the keyframe's points of firm depth: the model's (``method``'s)
    rotation ``R`` with the translation they give, or PnP where it reprojects clearly more
    of them (by POINTS_MARGIN of them: a homography's rotation is bent by the depth, an
    essential matrix's is poorly fixed over a short baseline); None if neither works. With
    aligned matches on the rendered corridors (SIFT), PnP's rotation (median, keyframe to
    frame) was 1.3-7 times closer to the truth than the model's, except for the fisheye
    corridor's homographies 5 or more frames from their keyframe (twice as far); the
    margin keeps the model's where the depths, triangulated over a few degrees of parallax,
    fit worse than it (docs/sequences.md). The keyframe's plane goes on with it (a
    frame that becomes the keyframe carries it)."""
    points, cur = back_project(K, m.key[firm], known[firm]), m.cur[firm]
    t = translation_from_points(R, points, cur, K, threshold_px)
    T = None if t is None else make_pose(R, t)
    moved = pose_from_points(points, cur, K, threshold_px)
    if moved is not None:
        by_points = reprojected_within(moved, points, cur, K, threshold_px)
        by_rotation = -1 if T is None else reprojected_within(T, points, cur, K, threshold_px)
        if by_points >= by_rotation + POINTS_MARGIN * len(cur):
            T, method = moved, 'pnp'
    if T is None:
        return None
    deep = method != 'homography'  # a homography that the points only placed: no depth seen
    return Relative(T, method, scene.plane_normal, scene.plane_distance, deep=deep, placed=True)


def _scaled_essential(T_unit, used, m, K, scene, known, threshold_px, H) -> Relative:
    """An essential-matrix pose scaled by the keyframe's points of known depth. Without
    them the scale restarts at this frame (the keyframe's depths are triangulated with it),
    from the length of the homography's translation with its plane at the distance carried
    along (a unit translation where it has none): the scale of the frames before stays
    nearly the same instead of jumping to one plane distance per frame."""
    T, scale = T_unit.copy(), None
    if known is not None:
        pts_key, pts_cur, depths = m.key[used], m.cur[used], known[used]
        scale = scale_from_depths(T, K, pts_key, pts_cur, depths, threshold_px)
    if scale is None:  # nothing to measure it by: the scale restarts
        T[:3, 3] *= _homography_length(H, m, K, scene) or 1.0
        return Relative(T, 'essential', scene.plane_normal, None, scaled=False, deep=True)
    T[:3, 3] *= scale
    return Relative(T, 'essential', scene.plane_normal, scene.plane_distance, deep=True)


def _homography_pose(H, m: Matched, K, scene: Scene):
    """The homography's decomposition, its inliers and outliers deciding between solutions
    and the keyframe's plane as the prior
    (:func:`~kp2d_core.geometry.homography_motion.pose_from_homography`)."""
    on = (m.key[m.inliers], m.cur[m.inliers])
    off = (m.key[~m.inliers], m.cur[~m.inliers])
    return pose_from_homography(H, K, *on, scene.plane_normal, off)


def _homography_length(H, m: Matched, K, scene: Scene) -> float | None:
    """Length of the homography's translation in world units (its plane at the carried
    distance), or None where it has no valid decomposition."""
    pose = _homography_pose(H, m, K, scene)
    if pose is None:
        return None
    length = float(np.linalg.norm(pose.T_cur_ref[:3, 3])) * scene.plane_distance
    return length if length > 0 else None


def matched_depths(
    relative: Relative, m: Matched, K: np.ndarray, size: int, threshold_px: float, current: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Depths (size,) of the keypoints of one view (the current frame's if ``current``, else
    the keyframe's) triangulated from the matches with the frame's motion, NaN elsewhere,
    and which of them are firm (size,) bool (FIRM_PARALLAX_DEG of parallax)."""
    T = relative.T_cur_key
    X, cosine = triangulate(T, K, m.key, m.cur, threshold_px)
    steady = np.isfinite(X[:, 2]) & (cosine <= np.cos(np.radians(FIRM_PARALLAX_DEG)))
    depths, firm = np.full(size, np.nan), np.zeros(size, bool)
    index = m.idx_cur if current else m.idx_key
    depths[index] = X @ T[2, :3] + T[2, 3] if current else X[:, 2]
    firm[index] = steady
    return depths, firm


def carried_scene(relative: Relative, scene: Scene) -> Scene:
    """The scene of a frame that becomes the keyframe: the plane turned and moved with it
    (d' = d + n'.t; after an essential matrix without scale, only the normal)."""
    R, t = relative.T_cur_key[:3, :3], relative.T_cur_key[:3, 3]
    distance, normal = scene.plane_distance, None
    if relative.normal is not None:
        normal = R @ relative.normal
    if normal is not None and relative.scaled and relative.distance is not None:
        moved = relative.distance + float(normal @ t)
        distance = moved if moved > 1e-3 * relative.distance else relative.distance
    return Scene(normal, distance, deep=relative.deep)
