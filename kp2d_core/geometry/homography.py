"""Robust homography estimation between matched keypoints (OpenCV RANSAC / USAC-MAGSAC++)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kp2d_core.geometry.coordinates import warp_points
from kp2d_core.geometry.correspondences import Matches

METHODS = {
    'ransac': cv2.RANSAC,
    'magsac': cv2.USAC_MAGSAC,
    'usac': cv2.USAC_DEFAULT,
    'lmeds': cv2.LMEDS,
}
MIN_CORRESPONDENCES = 4
MIN_FUNDAMENTAL_MATCHES = 8
PLANAR_SHARE = 0.8  # a homography explaining this share of the epipolar inliers wins
MIN_SPREAD_PX = 1.0  # inliers must span at least this much in both principal directions


@dataclass(frozen=True)
class HomographyResult:
    """Outcome of :func:`estimate_homography`.

    Attributes:
        H: (3, 3) float64 homography mapping view 0 pixels to view 1 (H[2,2] = 1), or None.
        inliers: (M,) bool mask over the input correspondences (all False on failure).
        reason: None on success, else why no homography was returned:
            'too_few_matches', 'estimation_failed', 'too_few_inliers' or 'degenerate'.
    """

    H: np.ndarray | None
    inliers: np.ndarray
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.H is not None

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


def _as_numpy(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f'expected points of shape (N, 2), got {points.shape}')
    return points


def paired_points(
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    matches: Matches | np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(M, 2) float64 arrays of corresponding points; ``matches`` None means already paired."""
    pts0, pts1 = _as_numpy(kpts0), _as_numpy(kpts1)
    if matches is None:
        if len(pts0) != len(pts1):
            raise ValueError(f'unpaired point sets of sizes {len(pts0)} and {len(pts1)}')
        return pts0, pts1
    idx = matches.indices if isinstance(matches, Matches) else matches
    idx = np.asarray(idx)
    idx = idx.reshape(-1, 2).astype(np.int64)
    if len(idx) and (
        idx.min() < 0 or idx[:, 0].max() >= len(pts0) or idx[:, 1].max() >= len(pts1)
    ):
        raise ValueError('match indices out of range of the keypoint arrays')
    return pts0[idx[:, 0]], pts1[idx[:, 1]]


def estimate_homography(
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    matches: Matches | np.ndarray | None = None,
    method: str = 'magsac',
    threshold_px: float = 3.0,
    confidence: float = 0.999,
    max_iters: int = 5000,
    min_inliers: int = MIN_CORRESPONDENCES,
) -> HomographyResult:
    """Fit ``H_0to1`` to matched keypoints with a robust estimator.

    Args:
        kpts0: (N0, 2) pixel keypoints of view 0.
        kpts1: (N1, 2) pixel keypoints of view 1.
        matches: (M, 2) index pairs or :class:`Matches`; None if kpts0[i] <-> kpts1[i].
        method: 'magsac' (USAC MAGSAC++), 'ransac', 'usac' or 'lmeds'.
        threshold_px: inlier reprojection threshold in pixels.
        confidence: RANSAC confidence.
        max_iters: iteration cap.
        min_inliers: fewer inliers than this is a failure ('too_few_inliers'; at least 4).

    Returns:
        :class:`HomographyResult`; failures are reported through ``reason``, not raised.
    """
    if method not in METHODS:
        raise ValueError(f'unknown method {method!r}; choose from {sorted(METHODS)}')
    pts0, pts1 = paired_points(kpts0, kpts1, matches)
    no_inliers = np.zeros(len(pts0), dtype=bool)
    finite = np.isfinite(pts0).all(axis=1) & np.isfinite(pts1).all(axis=1)
    if finite.sum() < MIN_CORRESPONDENCES:
        return HomographyResult(None, no_inliers, 'too_few_matches')
    H, mask = robust_fit(
        cv2.findHomography,
        pts0[finite],
        pts1[finite],
        METHODS[method],
        threshold_px,
        maxIters=max_iters,
        confidence=confidence,
    )
    if H is None or mask is None:
        return HomographyResult(None, no_inliers, 'estimation_failed')
    inliers = no_inliers.copy()
    inliers[np.flatnonzero(finite)] = mask.ravel().astype(bool)
    if inliers.sum() < max(min_inliers, MIN_CORRESPONDENCES):
        return HomographyResult(None, no_inliers, 'too_few_inliers')
    if not np.isfinite(H).all() or abs(H[2, 2]) < 1e-12:
        return HomographyResult(None, no_inliers, 'degenerate')
    H = H / H[2, 2]
    if is_degenerate(H, pts0[inliers]):
        return HomographyResult(None, no_inliers, 'degenerate')
    return HomographyResult(H, inliers)


def robust_fit(estimator, *args, **kwargs) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(model, inlier mask) of an OpenCV robust estimator, (None, None) where it fails.

    OpenCV's USAC estimators can assert on degenerate samples (e.g. ``!model.empty()`` in
    findFundamentalMat); that is a failed fit, not an error of the caller.
    """
    try:
        return estimator(*args, **kwargs)
    except cv2.error:
        return None, None


def is_degenerate(H: np.ndarray, support: np.ndarray) -> bool:
    """True if ``H`` cannot be a view-to-view homography of the region ``support`` spans.

    Degenerate means: the support points are (nearly) collinear, or the bounding box of the
    support does not map to a convex, orientation-preserving quadrilateral on one side of the
    homography's vanishing line (a fold or a mirror image). A homography is defined up to
    scale, and its sign is not fixed by ``H[2, 2] = 1``: under a wide turn (about 50 degrees
    at f = 380 px) the true scale puts ``H[2, 2]`` below zero, so the box's depths must share
    one sign, not be positive (a 52 degree pan was rejected as a fold on the rotation sequence).

    Args:
        H: (3, 3) homography.
        support: (K, 2) points of view 0 it was fitted on.
    """
    centred = support - support.mean(axis=0)
    if np.linalg.svd(centred, compute_uv=False)[-1] / np.sqrt(len(support)) < MIN_SPREAD_PX:
        return True
    (x0, y0), (x1, y1) = support.min(axis=0), support.max(axis=0)
    box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    depth = box @ H[2, :2] + H[2, 2]
    if not ((depth > 0).all() or (depth < 0).all()):
        return True
    quad = warp_points(H, box)
    edges = np.roll(quad, -1, axis=0) - quad
    turns = (
        edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1]
        - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    )
    return not (turns > 0).all()


def fit_homography(
    pts0: np.ndarray, pts1: np.ndarray, threshold_px: float
) -> tuple[np.ndarray | None, np.ndarray]:
    """((3, 3) homography or None, (M,) bool inliers) of a MAGSAC++ fit of ``pts0`` -> ``pts1``
    ((M, 2) each) at ``threshold_px``; None with no inliers where fewer than 4 matches or the
    fit fails. The homography of :func:`verify_motion`, without its fundamental matrix."""
    count = len(pts0)
    if count < MIN_CORRESPONDENCES:
        return None, np.zeros(count, bool)
    H, mask = robust_fit(cv2.findHomography, pts0, pts1, cv2.USAC_MAGSAC, threshold_px)
    if H is None or mask is None:
        return None, np.zeros(count, bool)
    return H, mask.ravel().astype(bool)


def verify_motion(
    pts0: np.ndarray, pts1: np.ndarray, threshold_px: float, max_parallax_px: float
) -> np.ndarray:
    """(M,) bool: matches consistent with the motion between two views.

    A homography is fitted (MAGSAC++); with at least 8 matches a fundamental matrix too. The
    homography's inliers are used when it explains at least ``PLANAR_SHARE`` of the
    fundamental matrix's (a plane or a rotation, where a fundamental matrix is degenerate
    and accepts wrong matches anywhere along their epipolar lines). Otherwise a match is
    kept when it fits the fundamental matrix and lies within ``max_parallax_px`` of the
    homography's prediction: descriptor matching is global, and this bound keeps a match on
    the right epipolar line but at the wrong place from passing. 4 to 7 matches: the
    homography alone; fewer: nothing can be verified. The (3, 3) homography (None when
    none was found) predicts where unmatched points went (see ``FeatureTracker``).
    """
    count = len(pts0)
    H, planar = fit_homography(pts0, pts1, threshold_px)
    if H is None:
        return planar, None
    if count < MIN_FUNDAMENTAL_MATCHES:
        return planar, H
    _, mask = robust_fit(
        cv2.findFundamentalMat, pts0, pts1, cv2.USAC_MAGSAC, threshold_px, 0.999, 1000
    )
    general = np.zeros(count, bool) if mask is None else mask.ravel().astype(bool)[:count]
    if planar.sum() >= PLANAR_SHARE * general.sum():
        return planar, H
    near = np.linalg.norm(warp_points(H, pts0) - pts1, axis=1) <= max_parallax_px
    return planar | (general & near), H


def reprojection_rms(
    H: np.ndarray | None, pts0: np.ndarray, pts1: np.ndarray, inliers: np.ndarray
) -> float:
    """RMS distance (px) between ``H`` applied to the inliers of ``pts0`` and ``pts1``."""
    if H is None or not inliers.any():
        return float('nan')
    error = warp_points(H, pts0[inliers]) - pts1[inliers]
    return float(np.sqrt(np.mean(np.sum(error**2, axis=1))))
