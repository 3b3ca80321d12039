"""Structure from two views (NumPy, OpenCV): triangulated points, their depths, and the
camera motion that points of known depth give (the scale of an essential matrix's unit
translation, a translation for a known rotation, PnP)."""

from __future__ import annotations

import cv2
import numpy as np

from kp2d_core.geometry.epipolar import cross_matrix
from kp2d_core.geometry.poses import make_pose

MIN_SCALE_POINTS = 16  # fewest points of known depth a scale or a motion is measured from
MIN_PARALLAX_DEG = 0.5  # points seen with less parallax have no usable depth
FIRM_PARALLAX_DEG = 2.0  # ... and with this much, depths within a few per cent
TRANSLATION_REFITS = 6  # least-squares fits of a translation, each on fewer outliers


def triangulate(
    T_cur_ref: np.ndarray,
    K: np.ndarray,
    pts_ref: np.ndarray,
    pts_cur: np.ndarray,
    max_error_px: float,
    min_parallax_deg: float = MIN_PARALLAX_DEG,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) points in the reference camera from their pixels in two views, and the (N,)
    cosine of each one's parallax angle (between its rays from the two camera centres; NaN
    where it cannot be formed).

    Rows of the points are NaN for points behind either camera, seen with less than
    ``min_parallax_deg`` of parallax (their depth is noise) or reprojecting more than
    ``max_error_px`` away.

    Args:
        T_cur_ref: (4, 4) motion from the reference to the current camera.
        K: (3, 3) intrinsics; pts_ref, pts_cur: (N, 2) pixels.
    """
    ref = np.asarray(pts_ref, np.float64).reshape(-1, 2)
    cur = np.asarray(pts_cur, np.float64).reshape(-1, 2)
    if len(ref) == 0:
        return np.zeros((0, 3)), np.zeros(0)
    R, t = T_cur_ref[:3, :3], T_cur_ref[:3, 3]
    X = cv2.triangulatePoints(K @ np.eye(3, 4), K @ T_cur_ref[:3], ref.T, cur.T)
    with np.errstate(divide='ignore', invalid='ignore'):
        X = (X[:3] / X[3]).T
        X_cur = X @ R.T + t
        error = np.maximum(reprojection_errors(K, X, ref), reprojection_errors(K, X_cur, cur))
        to_cur = X + R.T @ t  # from the current camera's centre, in the reference frame
        cosine = np.sum(X * to_cur, axis=1) / np.linalg.norm(X, axis=1)
        cosine /= np.linalg.norm(to_cur, axis=1)
    good = (X[:, 2] > 0) & (X_cur[:, 2] > 0) & (error <= max_error_px)
    good &= cosine <= np.cos(np.radians(min_parallax_deg))
    X[~good] = np.nan
    return X, cosine


def reprojection_errors(K: np.ndarray, X: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N,) pixel distances between (N, 3) camera points projected with K and (N, 2) pixels;
    infinite for points not in front of the camera."""
    uvw = np.asarray(X, np.float64).reshape(-1, 3) @ K.T
    with np.errstate(divide='ignore', invalid='ignore'):
        error = np.linalg.norm(uvw[:, :2] / uvw[:, 2:] - pts, axis=1)
    return np.where(uvw[:, 2] > 0, error, np.inf)


def scale_from_depths(
    T_cur_ref: np.ndarray,
    K: np.ndarray,
    pts_ref: np.ndarray,
    pts_cur: np.ndarray,
    depths: np.ndarray,
    max_error_px: float,
) -> float | None:
    """Length of a motion's translation in the units of ``depths``, or None.

    The motion's points triangulated as given have depths off by one factor from the depths
    known for them (triangulated when the reference view became a keyframe): the median of
    the ratios over the points known in both (at least MIN_SCALE_POINTS).

    Args:
        T_cur_ref: (4, 4) motion with a unit translation (an essential matrix's).
        K: (3, 3) intrinsics; pts_ref, pts_cur: (N, 2) pixels.
        depths: (N,) known depths in the reference camera, NaN where unknown.
    """
    z = triangulate(T_cur_ref, K, pts_ref, pts_cur, max_error_px)[0][:, 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        ratio = np.asarray(depths, np.float64) / z
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    if len(ratio) < MIN_SCALE_POINTS:
        return None
    return float(np.median(ratio))


def plane_distance(
    normal: np.ndarray, K: np.ndarray, pts: np.ndarray, depths: np.ndarray
) -> float | None:
    """Distance of the plane with ``normal`` (reference camera) through points of known depth:
    the median of ``normal . X`` over (N, 2) pixels ``pts`` at (N,) ``depths``, or None when
    it is not in front of the camera or there are none."""
    if len(depths) == 0:
        return None
    distance = float(np.median(back_project(K, pts, depths) @ np.asarray(normal, np.float64)))
    return distance if distance > 0 else None


def back_project(K: np.ndarray, pts: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """(N, 3) camera points of (N, 2) pixels at (N,) depths (z)."""
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    rays = np.column_stack([pts, np.ones(len(pts))]) @ np.linalg.inv(K).T
    return rays * np.asarray(depths, np.float64)[:, None]


def translation_from_points(
    R: np.ndarray,
    points_ref: np.ndarray,
    pts_cur: np.ndarray,
    K: np.ndarray,
    threshold_px: float = 1.0,
) -> np.ndarray | None:
    """(3,) translation of a camera turned by ``R`` that sees points known in the reference
    camera at the given current pixels, in the points' units; None with fewer than
    MIN_SCALE_POINTS consistent points.

    Linear least squares (each ray ``u`` gives ``u x (R X + t) = 0``), refitted on the points
    it reprojects within three median errors, down to ``threshold_px``: mismatches drop out.

    Args:
        R: (3, 3) rotation from the reference to the current camera.
        points_ref: (N, 3) points in the reference camera; pts_cur: (N, 2) current pixels.
        K: (3, 3) intrinsics.
    """
    points = np.asarray(points_ref, np.float64).reshape(-1, 3) @ np.asarray(R).T
    pixels = np.asarray(pts_cur, np.float64).reshape(-1, 2)
    rays = np.column_stack([pixels, np.ones(len(pixels))]) @ np.linalg.inv(K).T
    use = np.ones(len(points), bool)
    for _ in range(TRANSLATION_REFITS):
        if use.sum() < MIN_SCALE_POINTS:
            return None
        crosses = np.stack([cross_matrix(u) for u in rays[use]])  # (M, 3, 3)
        b = -np.einsum('mij,mj->mi', crosses, points[use])
        t = np.linalg.lstsq(crosses.reshape(-1, 3), b.reshape(-1), rcond=None)[0]
        error = reprojection_errors(K, points + t, pixels)
        limit = max(threshold_px, 3.0 * float(np.median(error[use])))
        use = error <= limit
    return t if np.sum(error <= threshold_px) >= MIN_SCALE_POINTS else None


def pose_from_points(
    points_ref: np.ndarray, pts_cur: np.ndarray, K: np.ndarray, threshold_px: float = 1.0
) -> np.ndarray | None:
    """(4, 4) motion from points known in 3D in the reference camera to the camera that sees
    them at ``pts_cur``: PnP in RANSAC (EPnP on samples), refined on its inliers
    (Levenberg-Marquardt); translation in the points' units. None when it fails.

    Args:
        points_ref: (N, 3) points in the reference camera; pts_cur: (N, 2) current pixels.
        K: (3, 3) intrinsics; threshold_px: the inlier reprojection error.
    """
    points = np.ascontiguousarray(points_ref, np.float64).reshape(-1, 3)
    pixels = np.ascontiguousarray(pts_cur, np.float64).reshape(-1, 2)
    if len(points) < MIN_SCALE_POINTS:
        return None
    try:
        ok, rvec, tvec, found = cv2.solvePnPRansac(
            points, pixels, K, None, reprojectionError=threshold_px, flags=cv2.SOLVEPNP_EPNP
        )
        if not ok or found is None or len(found) < MIN_SCALE_POINTS:
            return None
        found = found.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(points[found], pixels[found], K, None, rvec, tvec)
    except cv2.error:  # degenerate samples: no pose, not an error
        return None
    return make_pose(cv2.Rodrigues(rvec)[0], tvec.ravel())


def reprojected_within(
    T: np.ndarray, points_ref: np.ndarray, pts_cur: np.ndarray, K: np.ndarray, px: float
) -> int:
    """How many (N, 3) reference-camera points the motion (4, 4) ``T`` projects within
    ``px`` of their (N, 2) current pixels (in front of the camera)."""
    moved = np.asarray(points_ref, np.float64).reshape(-1, 3) @ T[:3, :3].T + T[:3, 3]
    return int(np.sum(reprojection_errors(K, moved, pts_cur) <= px))
