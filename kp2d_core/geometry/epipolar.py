"""Epipolar geometry of two views (NumPy): the fundamental matrix of a motion, Sampson
distances, a motion's refinement on them, and Torr's GRIC choice between a homography and an
essential matrix."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from kp2d_core.geometry.coordinates import warp_points
from kp2d_core.geometry.refinement import cauchy_weights, robust_gauss_newton

if TYPE_CHECKING:
    from kp2d_core.geometry.poses import RelativePose

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
    H: np.ndarray,
    essential: RelativePose,
    K: np.ndarray,
    pts_ref: np.ndarray,
    pts_cur: np.ndarray,
    min_sigma_px: float = MIN_GRIC_SIGMA_PX,
) -> bool:
    """Whether the homography models the matches better than the essential matrix (GRIC).

    Torr's geometric robust information criterion on the essential matrix's inliers: each
    model pays for its residuals (capped, so outliers cost the same whatever they are) and
    for the dimension of its manifold and its parameters. A plane or a rotation favours the
    homography (it explains the points with fewer degrees of freedom); parallax of more than
    about the noise level favours the essential matrix, whose rotation a homography fitted
    to a scene with depth would bend. The noise is estimated from the epipolar residuals,
    never below ``min_sigma_px``.

    Args:
        H: (3, 3) homography from reference to current pixels.
        essential: the pose from
            :func:`~kp2d_core.geometry.essential_motion.pose_from_essential` (with its inliers).
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
    sigma = max(min_sigma_px, float(np.sqrt(np.median(epipolar) / CHI2_1_MEDIAN)))
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
    return sampson_residuals(F, pts_ref, pts_cur) ** 2


def sampson_residuals(
    F: np.ndarray,
    pts_ref: np.ndarray,
    pts_cur: np.ndarray,
    cov_ref: np.ndarray | None = None,
    cov_cur: np.ndarray | None = None,
) -> np.ndarray:
    """(N,) signed Sampson distances of (N, 2) correspondences to ``F`` (x_cur' F x_ref = 0):
    the epipolar error over its standard deviation to first order, each point with its own
    (N, 2, 2) covariance (None: the identity, so distances in pixels)."""
    return _sampson(F, None, _homogeneous(pts_ref), _homogeneous(pts_cur), cov_ref, cov_cur)[0]


def _homogeneous(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return np.column_stack([points, np.ones(len(points))])


def _sampson(F, dF, x0, x1, cov0, cov1) -> tuple[np.ndarray, np.ndarray | None]:
    """(N,) Sampson residuals of (N, 3) homogeneous points x0, x1 (covariances as in
    :func:`sampson_residuals`) and their (N, P) derivatives by P parameters, given the
    (P, 3, 3) derivatives ``dF`` of F by them (None: no derivatives)."""
    Fx0, Ftx1 = x0 @ F.T, x1 @ F
    error = np.sum(x1 * Fx0, axis=1)
    across_cur, across_ref = Fx0[:, :2], Ftx1[:, :2]  # the error's derivatives by each point
    spread_cur, spread_ref = _times(cov1, across_cur), _times(cov0, across_ref)
    variance = np.sum(across_cur * spread_cur, axis=1) + np.sum(across_ref * spread_ref, axis=1)
    scale = 1.0 / np.sqrt(np.maximum(variance, 1e-300))
    residual = error * scale
    if dF is None:
        return residual, None
    dFx0, dFtx1 = x0 @ dF.transpose(0, 2, 1), x1 @ dF  # (P, N, 3)
    d_error = np.sum(dFx0 * x1, axis=2)
    d_variance = np.sum(dFx0[:, :, :2] * spread_cur, axis=2)
    d_variance += np.sum(dFtx1[:, :, :2] * spread_ref, axis=2)
    return residual, (scale * d_error - residual * scale**2 * d_variance).T


def _times(covariance: np.ndarray | None, vectors: np.ndarray) -> np.ndarray:
    """(N, 2) covariances times (N, 2) vectors (None: the identity)."""
    return vectors if covariance is None else np.einsum('nij,nj->ni', covariance, vectors)


def refined_motion(
    R: np.ndarray,
    t: np.ndarray,
    K: np.ndarray,
    pts_ref: np.ndarray,
    pts_cur: np.ndarray,
    noise: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A rotation and unit translation refined by robust maximum likelihood on the epipolar
    errors of correspondences, each under its points' own noise.

    A sample-consensus essential matrix is its best minimal sample's, or one polished on
    inliers that all count alike; here each correspondence's Sampson distance is whitened by
    its points' covariances (an aligned match is ten times surer than a detected one, a
    fisheye stretches a point's error at its border) and weighed by a Cauchy loss, in
    Gauss-Newton steps on the rotation (a turn before it) and the direction of the
    translation (two steps across it): 5 degrees of freedom.

    Args:
        R: (3, 3) rotation and t: (3,) translation from the reference to the current camera.
        K: (3, 3) intrinsics.
        pts_ref, pts_cur: (N, 2) the correspondences (the essential matrix's inliers), pixels.
        noise: reference and current (N, 2, 2) square roots of each point's covariance in
            pixels, in units of a detected keypoint's error
            (:func:`~kp2d_core.geometry.refinement.geometry_noise`); None: the identity.

    Returns:
        (R (3, 3), t (3,) unit vector), unchanged with fewer than MIN_POSE_POINTS
        correspondences or where no step lowers the cost.
    """
    length = float(np.linalg.norm(t))
    if len(pts_ref) < MIN_POSE_POINTS or not np.isfinite(length) or length == 0.0:
        return R, t
    x0, x1 = _homogeneous(pts_ref), _homogeneous(pts_cur)
    covariances = (None, None) if noise is None else [n @ n.transpose(0, 2, 1) for n in noise]
    direction = np.asarray(t, np.float64).ravel() / length
    across = np.linalg.svd(direction[None, :])[2][1:].T  # (3, 2) across the direction
    K_inv = np.linalg.inv(K)

    def motion(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        moved = direction + across @ p[3:]
        return cv2.Rodrigues(p[:3])[0] @ R, moved / np.linalg.norm(moved)

    def state(p: np.ndarray) -> tuple:
        R_p, t_p = motion(p)
        slide = (np.eye(3) - np.outer(t_p, t_p)) @ across
        slide /= np.linalg.norm(direction + across @ p[3:])  # d t_p / d p[3:]
        dE = [cross_matrix(t_p) @ cross_matrix(axis) @ R_p for axis in np.eye(3)]
        dE += [cross_matrix(slide[:, k]) @ R_p for k in range(2)]
        dF = K_inv.T @ np.stack(dE) @ K_inv
        F = fundamental_matrix(R_p, t_p, K)
        residual, jacobian = _sampson(F, dF, x0, x1, *covariances)
        cost, weights = cauchy_weights(residual * residual)
        return cost, weights[:, None, None], residual[:, None], jacobian[:, None, :]

    return motion(robust_gauss_newton(np.zeros(5), state))


def cross_matrix(v: np.ndarray) -> np.ndarray:
    """(3, 3) matrix of the cross product with ``v``: ``cross_matrix(v) @ w = v x w``."""
    x, y, z = np.asarray(v, np.float64).ravel()
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
