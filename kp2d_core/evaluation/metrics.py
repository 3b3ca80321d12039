"""The KP2D evaluation metrics (repeatability, localisation error, Cor-N, matching score), and
the same homography accuracy measured through the shipped pipeline's matcher and estimator.

Each is a pure NumPy function of one image pair, following the KP2D protocol: keypoints
are (N, 2) pixel (x, y) in the evaluation resolution, ``H`` maps image-0 pixels to image-1
pixels, "top-k" keeps the k highest scores, no NMS. Distances are in pixels. Where the order
of points matters (RANSAC's sampling), it is the reference's: ascending score.
"""

from __future__ import annotations

import cv2
import numpy as np

from kp2d_core.geometry.coordinates import corner_error, in_image, warp_points
from kp2d_core.geometry.homography import estimate_homography
from kp2d_core.inference.matching import match_descriptors
from kp2d_core.model.descriptors import unit_rows
from kp2d_core.vo.keyframe_tracker import TrackerConfig

CORRECT_PX = 3.0  # repeatability (<=), matching score (<) and RANSAC threshold
COR_THRESHOLDS = (1, 3, 5)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores in ascending score order, as the reference keeps them
    (sort ascending, keep the last k; stable here, so ties keep their input order)."""
    order = np.argsort(np.asarray(scores), kind='stable')
    return order[max(0, len(order) - k) :]


def shared_top_k(
    kpts0: np.ndarray,
    scores0: np.ndarray,
    kpts1: np.ndarray,
    scores1: np.ndarray,
    H: np.ndarray,
    shape: tuple[int, int],
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of each image's top-k among the points that warp into the other image
    (the protocol's half-open image test, see :func:`kp2d_core.geometry.coordinates.in_image`)."""
    in0 = np.flatnonzero(in_image(warp_points(H, kpts0), *shape, half_open=True))
    in1 = np.flatnonzero(in_image(warp_points(np.linalg.inv(H), kpts1), *shape, half_open=True))
    return in0[top_k(scores0[in0], k)], in1[top_k(scores1[in1], k)]


def repeatability(
    kpts0: np.ndarray,
    scores0: np.ndarray,
    kpts1: np.ndarray,
    scores1: np.ndarray,
    H: np.ndarray,
    shape: tuple[int, int],
    k: int,
    threshold: float = CORRECT_PX,
) -> dict[str, float]:
    """Repeatability and localisation error of the shared top-k points, both directions.

    A point is repeated when the nearest point of the other image (after warping) lies within
    ``threshold`` (inclusive). Repeatability = repeated / all; the localisation error is the
    mean distance of the repeated ones.

    Returns:
        {'repeatability', 'localization_error'}; NaN when there are no points (or no repeated
        points, for the error).
    """
    idx0, idx1 = shared_top_k(kpts0, scores0, kpts1, scores1, H, shape, k)
    warped0 = warp_points(H, kpts0[idx0])
    if len(idx0) == 0 or len(idx1) == 0:
        return {
            'repeatability': 0.0 if len(idx0) + len(idx1) else float('nan'),
            'localization_error': float('nan'),
        }
    dist = np.linalg.norm(warped0[:, None, :] - kpts1[idx1][None, :, :], axis=2)
    nearest = np.concatenate([dist.min(axis=1), dist.min(axis=0)])
    correct = nearest <= threshold
    loc = float(nearest[correct].mean()) if correct.any() else float('nan')
    return {'repeatability': float(correct.mean()), 'localization_error': loc}


def match_nn(desc0: np.ndarray, desc1: np.ndarray, norm: str, mutual: bool) -> np.ndarray:
    """(M, 2) nearest-neighbour matches with OpenCV brute force ('l2' or 'hamming')."""
    if len(desc0) == 0 or len(desc1) == 0:
        return np.zeros((0, 2), np.int64)
    cv_norm = cv2.NORM_HAMMING if norm == 'hamming' else cv2.NORM_L2
    dtype = np.uint8 if norm == 'hamming' else np.float32
    matcher = cv2.BFMatcher(cv_norm, crossCheck=mutual)
    matches = matcher.match(np.ascontiguousarray(desc0, dtype), np.ascontiguousarray(desc1, dtype))
    return np.array([[m.queryIdx, m.trainIdx] for m in matches], np.int64).reshape(-1, 2)


def homography_accuracy(
    kpts0: np.ndarray,
    desc0: np.ndarray,
    scores0: np.ndarray,
    kpts1: np.ndarray,
    desc1: np.ndarray,
    scores1: np.ndarray,
    H: np.ndarray,
    shape: tuple[int, int],
    k: int,
    norm: str = 'l2',
    thresholds: tuple[float, ...] = COR_THRESHOLDS,
) -> dict[str, float]:
    """Cor-t: does RANSAC on mutual-NN matches of the shared top-k give corners within t px?

    Returns:
        {'cor1', 'cor3', 'cor5' (one per threshold), 'corner_error' (inf on failure),
        'num_matches', 'num_inliers'}.
    """
    idx0, idx1 = shared_top_k(kpts0, scores0, kpts1, scores1, H, shape, k)
    matches = match_nn(desc0[idx0], desc1[idx1], norm, mutual=True)
    error, inliers = float('inf'), 0
    if len(matches) >= 4:
        pts0 = kpts0[idx0][matches[:, 0]].astype(np.float64)
        pts1 = kpts1[idx1][matches[:, 1]].astype(np.float64)
        H_est, mask = cv2.findHomography(pts0, pts1, cv2.RANSAC, CORRECT_PX, maxIters=5000)
        if H_est is not None:
            error = corner_error(H_est, H, *shape)
            inliers = int(mask.sum())
    result = {f'cor{t:g}': float(error <= t) for t in thresholds}
    result.update(corner_error=error, num_matches=float(len(matches)), num_inliers=inliers)
    return result


def pipeline_accuracy(
    kpts0: np.ndarray,
    desc0: np.ndarray,
    scores0: np.ndarray,
    kpts1: np.ndarray,
    desc1: np.ndarray,
    scores1: np.ndarray,
    H: np.ndarray,
    shape: tuple[int, int],
    k: int,
    norm: str = 'l2',
    tracker: TrackerConfig | None = None,
    thresholds: tuple[float, ...] = COR_THRESHOLDS,
) -> dict[str, float]:
    """Cor-t of what the node does: each image's top-k (no shared-view filter, which needs
    the answer), the project's matcher and robust estimator with the tracker's settings.

    Binary descriptors ('hamming') are matched by OpenCV with the same mutual test.

    Returns:
        {'pipe_cor1', 'pipe_cor3', 'pipe_cor5', 'pipe_corner_error' (inf on failure)}.
    """
    cfg = tracker or TrackerConfig()
    i0, i1 = top_k(scores0, k), top_k(scores1, k)
    if norm == 'l2':  # the project's matcher compares unit vectors (SIFT's are not)
        pairs = match_descriptors(
            unit_rows(desc0[i0]),
            unit_rows(desc1[i1]),
            cfg.mutual,
            cfg.max_distance,
            cfg.ratio,
        ).indices
    else:
        pairs = match_nn(desc0[i0], desc1[i1], norm, mutual=cfg.mutual)
    fit = estimate_homography(
        kpts0[i0], kpts1[i1], pairs, cfg.ransac_method, cfg.ransac_threshold_px
    )
    error = corner_error(fit.H, H, *shape) if fit.ok else float('inf')
    result = {f'pipe_cor{t:g}': float(error <= t) for t in thresholds}
    result['pipe_corner_error'] = error
    return result


def _directional_score(kpts_q, desc_q, kpts_r, desc_r, H_r_to_q, shape, norm) -> float:
    matches = match_nn(desc_q, desc_r, norm, mutual=False)
    if len(matches) == 0:
        return 0.0
    back = warp_points(H_r_to_q, kpts_r[matches[:, 1]])
    visible = in_image(back, *shape)
    correct = visible & (np.linalg.norm(back - kpts_q[matches[:, 0]], axis=1) < CORRECT_PX)
    return float(correct.sum() / max(int(visible.sum()), 1))


def matching_score(
    kpts0: np.ndarray,
    desc0: np.ndarray,
    scores0: np.ndarray,
    kpts1: np.ndarray,
    desc1: np.ndarray,
    scores1: np.ndarray,
    H: np.ndarray,
    shape: tuple[int, int],
    k: int,
    norm: str = 'l2',
) -> float:
    """KP2D matching score: share of NN matches that land within 3 px after warping back.

    Top-k of each image without the shared-view filter; each direction counts the matches
    whose matched point warps back into view, and the two directions are averaged.
    """
    i0, i1 = top_k(scores0, k), top_k(scores1, k)
    k0, d0, k1, d1 = kpts0[i0], desc0[i0], kpts1[i1], desc1[i1]
    forward = _directional_score(k0, d0, k1, d1, np.linalg.inv(H), shape, norm)
    backward = _directional_score(k1, d1, k0, d0, H, shape, norm)
    return 0.5 * (forward + backward)
