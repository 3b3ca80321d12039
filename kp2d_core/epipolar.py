"""Epipolar geometry of two views (NumPy): the fundamental matrix of a motion, Sampson
distances, and Torr's GRIC choice between a homography and an essential matrix."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kp2d_core.geometry import warp_points

if TYPE_CHECKING:
    from kp2d_core.motion import RelativePose

MIN_POSE_POINTS = 8  # fewest correspondences a pose or a model choice is made from
GRIC_LAMBDA3 = 2.0  # residual cap of GRIC, in units of (4 - model dimension) sigma^2
MIN_GRIC_SIGMA_PX = 0.25  # the noise estimate never goes below this
CHI2_1_MEDIAN = 0.4549  # median of a chi-square with one degree of freedom


def fundamental_matrix(R: np.ndarray, t: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(3, 3) F of a camera moving by (R, t) (reference to current) with intrinsics K
    (x_cur' F x_ref = 0 in pixels)."""
    K_inv = np.linalg.inv(K)
    return K_inv.T @ cross_matrix(t) @ R @ K_inv


def prefers_homography(
    H: np.ndarray, essential: RelativePose, K: np.ndarray, pts_ref: np.ndarray, pts_cur: np.ndarray
) -> bool:
    """Whether the homography models the matches better than the essential matrix (GRIC).

    Torr's geometric robust information criterion on the essential matrix's inliers: each
    model pays for its residuals (capped, so outliers cost the same whatever they are) and
    for the dimension of its manifold and its parameters. A plane or a rotation favours the
    homography (it explains the points with fewer degrees of freedom); parallax of more than
    about the noise level favours the essential matrix, whose rotation a homography fitted
    to a scene with depth would bend. The noise is estimated from the epipolar residuals.

    Args:
        H: (3, 3) homography from reference to current pixels.
        essential: the pose from :func:`~kp2d_core.motion.pose_from_essential` (with its
            inliers).
        K: (3, 3) intrinsics.
        pts_ref, pts_cur: (N, 2) the correspondences the essential matrix was fitted to.
    """
    mask = essential.inliers if essential.inliers is not None else slice(None)
    ref = np.asarray(pts_ref, np.float64)[mask]
    cur = np.asarray(pts_cur, np.float64)[mask]
    if len(ref) < MIN_POSE_POINTS:
        return True
    F = fundamental_matrix(essential.T_cur_ref[:3, :3], essential.T_cur_ref[:3, 3], K)
    epipolar = sampson_squared(F, ref, cur)
    sigma = max(MIN_GRIC_SIGMA_PX, float(np.sqrt(np.median(epipolar) / CHI2_1_MEDIAN)))
    transfer = 0.25 * (
        np.sum((warp_points(H, ref) - cur) ** 2, axis=1)
        + np.sum((warp_points(np.linalg.inv(H), cur) - ref) ** 2, axis=1)
    )
    return gric(transfer, sigma, 2, 8) <= gric(epipolar, sigma, 3, 7)


def gric(residuals_sq: np.ndarray, sigma: float, dim: int, params: int) -> float:
    """Torr's GRIC of a model of manifold dimension ``dim`` with ``params`` parameters, from
    (N,) squared residuals in pixels (correspondences are 4-dimensional: r = 4)."""
    n, r = len(residuals_sq), 4
    rho = np.minimum(np.asarray(residuals_sq) / sigma**2, GRIC_LAMBDA3 * (r - dim))
    return float(rho.sum() + np.log(r) * dim * n + np.log(r * n) * params)


def sampson_squared(F: np.ndarray, pts_ref: np.ndarray, pts_cur: np.ndarray) -> np.ndarray:
    """(N,) squared Sampson distances (px^2) of correspondences to ``F`` (x_cur' F x_ref = 0)."""
    x0 = np.column_stack([pts_ref, np.ones(len(pts_ref))])
    x1 = np.column_stack([pts_cur, np.ones(len(pts_cur))])
    Fx0, Ftx1 = x0 @ F.T, x1 @ F
    numerator = np.sum(x1 * Fx0, axis=1) ** 2
    denominator = Fx0[:, 0] ** 2 + Fx0[:, 1] ** 2 + Ftx1[:, 0] ** 2 + Ftx1[:, 1] ** 2
    return numerator / np.maximum(denominator, 1e-300)


def cross_matrix(v: np.ndarray) -> np.ndarray:
    """(3, 3) matrix of the cross product with ``v``: ``cross_matrix(v) @ w = v x w``."""
    x, y, z = np.asarray(v, np.float64).ravel()
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
