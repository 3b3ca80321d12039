"""Refinement of a homography by robust maximum likelihood under each point's own noise.

A sample-consensus estimate (:func:`~kp2d_core.geometry.homography.estimate_homography`) stops at
the best model of a minimal sample, polished on inliers that all count alike. Keypoints are found
with the same error in raw image pixels, but a lens's rectification stretches it (several times at
a fisheye's border) and the homography carries view 0's error into view 1: each correspondence here
counts by the inverse of its own covariance, under a Cauchy loss. The robust Gauss-Newton steps and
each match's noise in geometry pixels serve the essential matrix's motion as well
(:func:`~kp2d_core.geometry.epipolar.refined_motion`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from kp2d_core.geometry.camera import CameraModel, as_points
from kp2d_core.geometry.coordinates import warp_points
from kp2d_core.geometry.homography import MIN_CORRESPONDENCES, HomographyResult, is_degenerate
from kp2d_core.geometry.image_points import ImagePoints

ITERATIONS = 10  # Gauss-Newton steps at most
CAUCHY_SCALE_PX = 1.4  # robust scale of a correspondence's whitened residual (raw pixels)
CORNER_GATE_PX = 1.0  # a corner further from the homography's transfer refines nothing
# Corners at most this many times the homography's inliers, the strongest first: where the
# matches are few, the corners alone do not decide the frame (SIFT at night, 76 inliers:
# RPE rotation 0.51 deg/s without corners, 1.33 with all 600, 0.27 with this cap).
CORNERS_PER_INLIER = 2


def refine_homography(
    H: np.ndarray,
    pts0: np.ndarray,
    pts1: np.ndarray,
    jac0: np.ndarray | None = None,
    jac1: np.ndarray | None = None,
) -> np.ndarray:
    """Refine ``H`` on its inliers by robust maximum likelihood under each point's own noise.

    Both points of a correspondence are detected with the same isotropic error in raw image
    pixels; the lens's rectification stretches it (``jac0``, ``jac1``: derivatives of the
    geometry frame's pixels by raw pixels, up to several times at a fisheye's border) and
    ``H`` carries view 0's into view 1. A point whose own error is known (an aligned match,
    :mod:`kp2d_core.vo.photometric_alignment`) passes the derivative times the square root of its
    raw-pixel covariance, in units of a detected keypoint's error. Each residual is whitened by
    that covariance and weighted by a Cauchy loss (Gauss-Newton, coordinates normalised); a
    sample-consensus estimate weighs every inlier alike and stops at its best minimal-sample model.

    Args:
        H: (3, 3) homography from view 0 to view 1 (H[2, 2] != 0).
        pts0, pts1: (M, 2) inlier correspondences in the geometry frame, M >= 4.
        jac0, jac1: (M, 2, 2) derivatives (None: the identity, an undistorted camera), or
            their products with the points' noise (above); not both singular for a point.

    Returns:
        (3, 3) refined homography (H[2, 2] = 1), or ``H`` itself where the refinement does
        not lower the robust cost or its result is degenerate.
    """
    pts0, pts1 = as_points(pts0), as_points(pts1)
    if len(pts0) < MIN_CORRESPONDENCES:
        return H
    eye = np.broadcast_to(np.eye(2), (len(pts0), 2, 2))
    T0, T1 = _normaliser(pts0), _normaliser(pts1)
    x0, x1 = warp_points(T0, pts0), warp_points(T1, pts1)
    J0 = T0[0, 0] * (eye if jac0 is None else jac0)  # normalised pixels by raw pixels
    J1 = T1[0, 0] * (eye if jac1 is None else jac1)
    G = T1 @ H @ np.linalg.inv(T0)
    h = (G / G[2, 2]).ravel()[:8]
    h = robust_gauss_newton(h, lambda h: _robust_cost(h, x0, x1, J0, J1))
    refined = np.linalg.inv(T1) @ np.append(h, 1.0).reshape(3, 3) @ T0
    if not np.isfinite(refined).all() or abs(refined[2, 2]) < 1e-12:
        return H
    refined = refined / refined[2, 2]
    return H if is_degenerate(refined, pts0) else refined


def robust_gauss_newton(params: np.ndarray, state: Callable[[np.ndarray], tuple]) -> np.ndarray:
    """Minimise a robust cost by Gauss-Newton steps, each taken only where it lowers the cost
    (at most :data:`ITERATIONS`).

    Args:
        params: (P,) starting parameters.
        state: parameters -> (cost, (M, k, k) weighted information matrices, (M, k)
            residuals, (M, k, P) derivatives of the residuals by the parameters).

    Returns:
        (P,) the parameters of the lowest cost reached.
    """
    current = state(params)
    for _ in range(ITERATIONS):
        cost, weights, residual, jacobian = current
        weighted = (weights @ jacobian).reshape(-1, len(params))
        normal = jacobian.reshape(-1, len(params)).T @ weighted
        gradient = weighted.T @ residual.ravel()
        try:
            candidate = params - np.linalg.solve(normal, gradient)
        except np.linalg.LinAlgError:
            break
        trial = state(candidate)
        if not trial[0] < cost:
            break
        params, current = candidate, trial
        if cost - trial[0] < 1e-9 * cost:
            break
    return params


def cauchy_weights(squared: np.ndarray) -> tuple[float, np.ndarray]:
    """(cost, (M,) weights) of the Cauchy loss at :data:`CAUCHY_SCALE_PX` for (M,) squared
    whitened residuals; the cost is infinite where it is not finite."""
    scale2 = CAUCHY_SCALE_PX**2
    cost = float(scale2 * np.log1p(squared / scale2).sum())
    return (cost if np.isfinite(cost) else float('inf')), 1.0 / (1.0 + squared / scale2)


def geometry_noise(
    key: ImagePoints,
    cur: ImagePoints,
    indices: np.ndarray,
    noise: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Keyframe and current (M, 2, 2) square roots of each match's covariance in geometry
    pixels, in units of a detected keypoint's error: the lens's derivatives
    (:meth:`~kp2d_core.geometry.image_points.ImagePoints.pixel_jacobians`) times the raw-pixel
    noise.

    Args:
        indices: (M, 2) keyframe and current indices of the matches.
        noise: (M, 2, 2) keyframe and current square roots of each match's covariance in raw
            pixels (:class:`~kp2d_core.vo.photometric_alignment.Alignment`), or None: a detected
            keypoint's.
    """
    jac_key, jac_cur = key.pixel_jacobians(indices[:, 0]), cur.pixel_jacobians(indices[:, 1])
    if noise is None:
        return jac_key, jac_cur
    return jac_key @ noise[0], jac_cur @ noise[1]


@dataclass(frozen=True)
class AlignedCorners:
    """A keyframe's corners aligned into a frame (:mod:`kp2d_core.vo.photometric_alignment`):
    correspondences that only refine a homography (no keypoint, no match, no inlier count).

    Attributes:
        key, cur: (C, 2) keyframe and current points, geometry pixels.
        noise: keyframe and current (C, 2, 2) square roots of their covariances in geometry
            pixels, as :func:`geometry_noise` gives a match's.
    """

    key: np.ndarray
    cur: np.ndarray
    noise: tuple[np.ndarray, np.ndarray]

    @classmethod
    def of(
        cls,
        key_raw: np.ndarray,
        cur_raw: np.ndarray,
        cur_noise: np.ndarray,
        camera: CameraModel | None,
    ) -> AlignedCorners:
        """From (C, 2) raw keyframe and current points and the current points' (C, 2, 2)
        raw-pixel noise (the keyframe's points carry none); ``camera``: their lens, or None."""
        key, cur = ImagePoints.of(key_raw, camera), ImagePoints.of(cur_raw, camera)
        jac_cur = cur.pixel_jacobians(np.arange(len(cur.raw)))
        return cls(key.pixels, cur.pixels, (np.zeros_like(jac_cur), jac_cur @ cur_noise))

    def near(self, H: np.ndarray) -> AlignedCorners:
        """Those within :data:`CORNER_GATE_PX` of where ``H`` carries their keyframe points."""
        if len(self.key) == 0:
            return self
        keep = np.linalg.norm(warp_points(H, self.key) - self.cur, axis=1) <= CORNER_GATE_PX
        return self._select(keep)

    def first(self, count: int) -> AlignedCorners:
        """The first ``count`` of them (a keyframe's corners come strongest first)."""
        return self._select(slice(0, max(count, 0)))

    def _select(self, index) -> AlignedCorners:
        noise = self.noise[0][index], self.noise[1][index]
        return AlignedCorners(self.key[index], self.cur[index], noise)


def refined_result(
    result: HomographyResult,
    key: ImagePoints,
    cur: ImagePoints,
    indices: np.ndarray,
    noise: tuple[np.ndarray, np.ndarray],
    corners: AlignedCorners | None = None,
) -> HomographyResult:
    """``result`` with its homography refined on its inliers under each point's noise through
    the lens (:func:`refine_homography`), and on the ``corners`` near it (the first
    :data:`CORNERS_PER_INLIER` per inlier); the inliers are kept.

    Args:
        indices: (M, 2) keyframe and current indices of the matches.
        noise: the matches' noise in geometry pixels (:func:`geometry_noise`).
    """
    inl = result.inliers
    sel_key, sel_cur = indices[inl, 0], indices[inl, 1]
    pts0, pts1 = key.pixels[sel_key], cur.pixels[sel_cur]
    jac0, jac1 = noise[0][inl], noise[1][inl]
    if corners is not None:
        near = corners.near(result.H).first(CORNERS_PER_INLIER * int(inl.sum()))
        pts0, pts1 = np.concatenate([pts0, near.key]), np.concatenate([pts1, near.cur])
        jac0, jac1 = np.concatenate([jac0, near.noise[0]]), np.concatenate([jac1, near.noise[1]])
    return replace(result, H=refine_homography(result.H, pts0, pts1, jac0, jac1))


def _normaliser(points: np.ndarray) -> np.ndarray:
    """(3, 3) similarity moving ``points`` to zero mean and unit mean distance."""
    centre = points.mean(axis=0)
    scale = 1.0 / max(float(np.linalg.norm(points - centre, axis=1).mean()), 1e-9)
    return np.array(
        [[scale, 0.0, -scale * centre[0]], [0.0, scale, -scale * centre[1]], [0, 0, 1]]
    )


def _robust_cost(
    h: np.ndarray, x0: np.ndarray, x1: np.ndarray, J0: np.ndarray, J1: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """(Cauchy cost, (M, 2, 2) weighted information matrices, (M, 2) residuals, (M, 2, 8)
    derivatives of the prediction by h) of the homography ``h`` (8 entries, h22 = 1)."""
    G = np.append(h, 1.0).reshape(3, 3)
    x, y = x0[:, 0], x0[:, 1]
    depth = G[2, 0] * x + G[2, 1] * y + 1.0
    prediction = warp_points(G, x0)
    u, v = prediction[:, 0], prediction[:, 1]
    transfer = np.empty((len(x0), 2, 2))  # d prediction / d x0
    transfer[:, 0, :] = (G[0, :2] - u[:, None] * G[2, :2]) / depth[:, None]
    transfer[:, 1, :] = (G[1, :2] - v[:, None] * G[2, :2]) / depth[:, None]
    A = transfer @ J0
    covariance = A @ A.transpose(0, 2, 1) + J1 @ J1.transpose(0, 2, 1)
    information = np.linalg.inv(covariance)
    residual = prediction - x1
    squared = np.sum(residual * (information @ residual[:, :, None])[:, :, 0], axis=1)
    cost, cauchy = cauchy_weights(squared)
    weights = information * cauchy[:, None, None]
    jacobian = np.zeros((len(x0), 2, 8))
    jacobian[:, 0, 0:3] = np.stack([x, y, np.ones_like(x)], 1) / depth[:, None]
    jacobian[:, 1, 3:6] = jacobian[:, 0, 0:3]
    jacobian[:, 0, 6:8] = -u[:, None] * x0 / depth[:, None]
    jacobian[:, 1, 6:8] = -v[:, None] * x0 / depth[:, None]
    return cost, weights, residual, jacobian
