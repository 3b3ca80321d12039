"""Camera motion from a homography: its decomposition, and the choice among its solutions
(OpenCV, NumPy)."""

from __future__ import annotations

import cv2
import numpy as np

from kp2d_core.geometry.epipolar import MIN_POSE_POINTS, fundamental_matrix, sampson_squared
from kp2d_core.geometry.poses import (
    RelativePose,
    make_pose,
    nearest_rotation,
    normalized_coordinates,
)

PURE_ROTATION_T = 1e-6  # translation / plane distance below which motion is a rotation


NEAR_ROTATION_T = 0.02  # ... below which a decomposition with no visible plane is a rotation


PARALLAX_PX = 1.0  # epipolar distance (px) at which a match stops counting for a motion


PARALLAX_MARGIN = 0.06  # share of the matches a decomposition must win by (planar: < 0.03)


IN_FRONT_SHARE = 0.8  # share of the inliers a plane must be in front of to be a candidate


PRIOR_AGREEMENT = np.cos(np.radians(30.0))  # a solution this close to the prior is its plane


PRIOR_MARGIN = 0.5  # ... or nearer to it than any other solution by this (cosine)


PRIOR_IN_FRONT_SHARE = 0.5  # the prior's plane: in front of at least this share of the inliers


def pose_from_homography(
    H: np.ndarray,
    K: np.ndarray,
    pts_ref: np.ndarray,
    pts_cur: np.ndarray,
    prior_normal: np.ndarray | None = None,
    off_plane: tuple[np.ndarray, np.ndarray] | None = None,
) -> RelativePose | None:
    """The physically valid decomposition of ``H_ref_to_cur`` (pixels) given intrinsics.

    Of OpenCV's up to four solutions, two put the inlier points in front of both cameras,
    with plane normal and translation direction swapped. The points off the plane tell them
    apart: the one whose epipolar geometry clearly more of ``off_plane`` agree with wins (a
    camera moving along a wall otherwise takes the solution translating towards it, its
    rotation degrees off). Only the homography's outliers count: its inliers fit both
    solutions, and those near a solution's epipole fit it whatever their noise. When they do
    not decide (a plane alone, a tiny baseline), the solution whose plane is ``prior_normal``
    (the plane seen so far, in the reference camera: within 30 deg, in front of at least
    half of the inliers), or is clearly nearer to it than the other solution, wins among
    those in front of most inliers; without such a prior, of the solutions with every
    inlier in front, the one facing the reference camera most directly. The translation is
    in units of the reference camera's distance to the plane.

    In a corridor just after its keyframe the homography's plane cuts through the scene:
    the true solution's plane was in front of 72 % of the inliers, 11 deg from the plane
    seen the frame before, and the solution facing the camera, 2.8 deg off, was taken
    alone; a few keyframes on, a prior 37 deg from the true plane and 111 deg from the
    other left the choice to that fallback, 1.0-1.5 deg off.

    Args:
        H: (3, 3) homography from reference to current pixels.
        K: (3, 3) intrinsics (same camera for both views).
        pts_ref, pts_cur: (N, 2) inlier correspondences used to reject solutions.
        prior_normal: (3,) unit normal of the plane in the reference camera, or None.
        off_plane: (M, 2) reference and (M, 2) current pixels of the matches that are not
            the homography's inliers (points off its plane, or mismatches), or None.
    """
    H = in_front(np.asarray(H, np.float64), pts_ref)
    try:
        _, rotations, translations, normals = cv2.decomposeHomographyMat(H, K)
    except cv2.error:
        return None
    # For a near-rotation OpenCV returns the normalised homography itself as the rotation,
    # which a noisy fit leaves a little off SO(3).
    rotations = [nearest_rotation(R) for R in rotations]
    largest = max(float(np.linalg.norm(t)) for t in translations)
    if largest < PURE_ROTATION_T:
        # No translation (e.g. a still camera): every solution is the same rotation and the
        # plane normal is undefined, so the visibility test below cannot choose.
        return RelativePose(make_pose(rotations[0], np.zeros(3)), 'homography', prior_normal)
    ref, cur = normalized_coordinates(pts_ref, K), normalized_coordinates(pts_cur, K)
    try:
        valid = cv2.filterHomographyDecompByVisibleRefpoints(rotations, normals, ref, cur)
    except cv2.error:
        return None
    visible = [] if valid is None else [int(i) for i in np.asarray(valid).ravel()]
    if not visible and largest < NEAR_ROTATION_T:
        return _near_rotation(H, K, prior_normal)
    candidates = _in_front(normals, ref, visible, prior_normal)
    best = _by_parallax(candidates, rotations, translations, K, off_plane, len(ref))
    decided = best is not None
    if best is None:
        best = _by_prior(candidates, normals, prior_normal)
    if best is None and visible:
        best = max(visible, key=lambda i: abs(float(normals[i][2, 0])))  # facing the camera
    if best is None:
        return None
    T = make_pose(rotations[best], translations[best].ravel())
    return RelativePose(T, 'homography', normals[best].ravel(), decided=decided)


def in_front(H: np.ndarray, pts_ref: np.ndarray) -> np.ndarray:
    """``H`` scaled by the sign that puts the (N, 2) reference points in front of the
    current camera (their depths, ``H[2] . (x, y, 1)``, positive; the median decides).

    ``H[2, 2] = 1`` fixes the scale but not this sign: under a wide turn the true homography
    has ``H[2, 2] < 0``, and decomposed as it stands a pure rotation comes out 180 degrees
    off (a 52 degree pan of the rotation sequence did).
    """
    pts = np.asarray(pts_ref, np.float64).reshape(-1, 2)
    if not len(pts):
        return H
    depth = pts @ H[2, :2] + H[2, 2]
    return -H if np.median(depth) < 0 else H


def _by_prior(
    candidates: list[int], normals: list[np.ndarray], prior_normal: np.ndarray | None
) -> int | None:
    """The candidate whose normal is the prior's (within PRIOR_AGREEMENT), or clearly nearer
    to it than every other candidate (by PRIOR_MARGIN in cosine), else None."""
    if prior_normal is None or not candidates:
        return None
    agreement = _agreement(normals, prior_normal)
    ranked = sorted(candidates, key=lambda i: agreement[i], reverse=True)
    best = ranked[0]
    if agreement[best] >= PRIOR_AGREEMENT:
        return best
    if len(ranked) > 1 and agreement[best] - agreement[ranked[1]] >= PRIOR_MARGIN:
        return best
    return None


def _in_front(
    normals: list[np.ndarray],
    ref: np.ndarray,
    visible: list[int],
    prior_normal: np.ndarray | None = None,
) -> list[int]:
    """``visible`` and the solutions whose plane is in front of IN_FRONT_SHARE of the
    reference points: a wall seen at a grazing angle leaves a few inliers off it (OpenCV's
    test needs all). A wrong solution's plane can cut the view in two (half in front).
    The solution whose plane is ``prior_normal``'s (PRIOR_AGREEMENT) needs only
    PRIOR_IN_FRONT_SHARE of them: a homography fitted across a corridor just after its
    keyframe has a plane that cuts through the scene."""
    rays = np.column_stack([np.asarray(ref, np.float64).reshape(-1, 2), np.ones(len(ref))])
    shares = [np.mean(rays @ n.ravel() > 0) for n in normals]
    named = _agreement(normals, prior_normal) >= PRIOR_AGREEMENT
    floors = np.where(named, PRIOR_IN_FRONT_SHARE, IN_FRONT_SHARE)
    mostly = [i for i, (share, floor) in enumerate(zip(shares, floors)) if share >= floor]
    return sorted(set(visible) | set(mostly))


def _agreement(normals: list[np.ndarray], prior_normal: np.ndarray | None) -> np.ndarray:
    """(S,) cosine between each solution's (3, 1) plane normal and ``prior_normal`` (3,);
    zeros without a prior (no solution is its plane)."""
    if prior_normal is None:
        return np.zeros(len(normals))
    return np.array([float(n.ravel() @ prior_normal) for n in normals])


def _by_parallax(
    candidates: list[int],
    rotations: list[np.ndarray],
    translations: list[np.ndarray],
    K: np.ndarray,
    off_plane: tuple[np.ndarray, np.ndarray] | None,
    inliers: int,
) -> int | None:
    """The candidate whose epipolar geometry clearly more of the ``off_plane`` matches agree
    with (MSAC cost, Sampson distances capped at PARALLAX_PX), else None. Clearly: by
    PARALLAX_MARGIN of all the matches (``inliers`` of the homography and the others)."""
    if off_plane is None or len(candidates) < 2:
        return None
    ref, cur = (np.asarray(pts, np.float64).reshape(-1, 2) for pts in off_plane)
    support = {}
    for i in candidates:
        F = fundamental_matrix(rotations[i], translations[i], K)
        cost = np.minimum(sampson_squared(F, ref, cur) / PARALLAX_PX**2, 1.0)
        support[i] = len(ref) - float(cost.sum())
    ranked = sorted(candidates, key=support.get, reverse=True)
    margin = max(MIN_POSE_POINTS, PARALLAX_MARGIN * (len(ref) + inliers))
    return ranked[0] if support[ranked[0]] - support[ranked[1]] >= margin else None


def _near_rotation(H: np.ndarray, K: np.ndarray, prior_normal: np.ndarray | None) -> RelativePose:
    """A rotating camera's pose when no decomposition puts the points in front of a plane.

    Without translation the plane is undefined: noise gives the decompositions arbitrary
    normals and small translations (below NEAR_ROTATION_T), and often none passes the
    visibility test. The camera rotated: the rotation nearest to ``K^-1 H K`` (exact for a
    pure rotation), with no translation.
    """
    M = np.linalg.inv(K) @ np.asarray(H, np.float64) @ K
    R = nearest_rotation(-M if np.linalg.det(M) < 0 else M)  # H is known up to its sign
    return RelativePose(make_pose(R, np.zeros(3)), 'homography', prior_normal)
