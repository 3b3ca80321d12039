"""Relative pose from an essential matrix, for scenes with depth (OpenCV, NumPy)."""

from __future__ import annotations

import cv2
import numpy as np

from kp2d_core.geometry.epipolar import MIN_POSE_POINTS, refined_motion
from kp2d_core.geometry.poses import RelativePose, make_pose, normalized_coordinates

ESSENTIAL_METHODS = (cv2.USAC_MAGSAC, cv2.RANSAC)  # both fitted; a tie keeps the first


def pose_from_essential(
    pts_ref: np.ndarray,
    pts_cur: np.ndarray,
    K: np.ndarray,
    threshold_px: float = 1.0,
    noise: tuple[np.ndarray, np.ndarray] | None = None,
) -> RelativePose | None:
    """Relative pose from an essential matrix (for non-planar scenes); unit translation.

    RANSAC (its best five-point sample's matrix) and MAGSAC++ (OpenCV's USAC: local
    optimisation, a final fit on the inliers) on normalised coordinates (USAC finds nothing
    on pixels with a camera matrix in OpenCV 4.14); the fit with more inliers in front of
    both cameras wins, MAGSAC++ on a tie, and is refined on them under each point's
    ``noise`` (:func:`~kp2d_core.geometry.epipolar.refined_motion`). On boxes of 300 points with
    0.3 px noise RANSAC's rotation was 0.3-1.6 deg off, MAGSAC++'s 0.01-0.1; before a
    dominant plane MAGSAC++ may settle on a matrix with half its inliers behind the cameras.
    """
    pts_ref, pts_cur = (np.asarray(p, np.float64).reshape(-1, 2) for p in (pts_ref, pts_cur))
    if len(pts_ref) < MIN_POSE_POINTS:
        return None
    ref = normalized_coordinates(pts_ref, K).reshape(-1, 2).astype(np.float64)
    cur = normalized_coordinates(pts_cur, K).reshape(-1, 2).astype(np.float64)
    threshold = threshold_px / (0.5 * (K[0, 0] + K[1, 1]))
    fits = [_essential_fit(ref, cur, method, threshold) for method in ESSENTIAL_METHODS]
    good, R, t, mask = max(
        (f for f in fits if f is not None), key=lambda f: f[0], default=(0,) * 4
    )
    if good < MIN_POSE_POINTS:
        return None
    inliers = np.asarray(mask).ravel() > 0
    noise = None if noise is None else (noise[0][inliers], noise[1][inliers])
    R, t = refined_motion(R, t.ravel(), K, pts_ref[inliers], pts_cur[inliers], noise)
    return RelativePose(make_pose(R, t), 'essential', support=int(good), inliers=inliers)


def _essential_fit(
    ref: np.ndarray, cur: np.ndarray, method: int, threshold: float
) -> tuple | None:
    """(points in front, R, t, their mask) of one robust essential-matrix fit on (N, 2)
    normalised coordinates, or None when it finds no matrix."""
    eye = np.eye(3)
    try:
        E, mask = cv2.findEssentialMat(ref, cur, eye, method, 0.999, threshold)
        if E is None or E.shape != (3, 3):
            return None
        return cv2.recoverPose(E, ref, cur, eye, mask=mask)  # in front of both cameras
    except cv2.error:  # degenerate samples: no pose, not an error
        return None
