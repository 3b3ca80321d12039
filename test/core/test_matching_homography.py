"""match() and estimate_homography() on synthetic correspondences with a known H."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kp2d_core import Features, estimate_homography, match, match_descriptors
from kp2d_core.geometry.coordinates import corner_error, warp_points

H_TRUE = np.array([[0.95, 0.08, 12.0], [-0.05, 1.02, -7.0], [2e-4, -1e-4, 1.0]])


def _features(xy: np.ndarray, desc: torch.Tensor) -> Features:
    kpts = torch.as_tensor(xy, dtype=torch.float32)
    return Features(kpts, torch.ones(len(kpts)), F.normalize(desc, dim=1), (240, 320))


def _grid_points(n: int = 120, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform([20, 20], [300, 220], size=(n, 2))


def test_mutual_nn_recovers_a_permutation(generator):
    desc = torch.randn(50, 256, generator=generator)
    perm = torch.randperm(50, generator=generator)
    noisy = desc[perm] + 0.01 * torch.randn(50, 256, generator=generator)
    m = match(_features(np.zeros((50, 2)), desc), _features(np.zeros((50, 2)), noisy))
    assert len(m) == 50
    assert np.array_equal(perm.numpy()[m.indices[:, 1]], m.indices[:, 0])
    assert (m.distances < 0.1).all()


def test_mutual_check_drops_many_to_one():
    d0 = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1]]), dim=1)
    d1 = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    assert match_descriptors(d0, d1, mutual=True).indices.tolist() == [[0, 0]]
    assert match_descriptors(d0, d1, mutual=False).indices.tolist() == [[0, 0], [1, 0]]


def test_distance_and_ratio_gates():
    d0 = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]), dim=1)
    d1 = F.normalize(torch.tensor([[1.0, 0.01, 0.0], [0.0, 1.0, 0.9], [0.0, 0.9, 1.0]]), dim=1)
    assert len(match_descriptors(d0, d1)) == 2
    assert match_descriptors(d0, d1, max_distance=0.03).indices.tolist() == [[0, 0]]
    # Row 1 has two near-equal candidates: the ratio test removes it.
    assert match_descriptors(d0, d1, ratio=0.8).indices.tolist() == [[0, 0]]


def test_empty_and_bad_shapes():
    empty = match_descriptors(torch.zeros(0, 8), torch.randn(4, 8))
    assert empty.indices.shape == (0, 2) and len(empty) == 0
    with pytest.raises(ValueError, match='descriptor shapes'):
        match_descriptors(torch.zeros(3, 8), torch.zeros(3, 9))


@pytest.mark.parametrize('method', ['magsac', 'ransac', 'usac', 'lmeds'])
def test_exact_correspondences_recover_h(method, generator):
    pts0 = _grid_points()
    pts1 = warp_points(H_TRUE, pts0)
    desc = torch.randn(len(pts0), 256, generator=generator)
    f0, f1 = _features(pts0, desc), _features(pts1, desc)
    result = estimate_homography(f0.keypoints, f1.keypoints, match(f0, f1), method=method)
    assert result.ok and result.reason is None
    assert result.num_inliers == len(pts0)
    assert corner_error(result.H, H_TRUE, 240, 320) < 1.0


def test_outliers_are_flagged():
    rng = np.random.default_rng(1)
    pts0 = _grid_points(200)
    pts1 = warp_points(H_TRUE, pts0) + rng.normal(0, 0.3, size=pts0.shape)
    bad = rng.choice(200, size=60, replace=False)
    pts1[bad] = rng.uniform([0, 0], [320, 240], size=(60, 2))
    result = estimate_homography(pts0, pts1, None, threshold_px=3.0)
    assert result.ok and corner_error(result.H, H_TRUE, 240, 320) < 1.0
    assert not result.inliers[bad].any() or result.inliers[bad].sum() <= 2
    assert result.inliers.sum() >= 135


def test_failure_reasons():
    pts = _grid_points(3)
    few = estimate_homography(pts, warp_points(H_TRUE, pts))
    assert not few.ok and few.reason == 'too_few_matches' and few.inliers.shape == (3,)
    line = np.stack([np.linspace(0, 100, 30), np.linspace(0, 50, 30)], axis=1)
    collinear = estimate_homography(line, line * 1.1)
    assert not collinear.ok and collinear.reason in ('degenerate', 'estimation_failed')
    nan = _grid_points(10)
    nan[:8] = np.nan
    assert estimate_homography(nan, nan).reason == 'too_few_matches'


def test_mirror_image_is_degenerate():
    pts0 = _grid_points()
    mirror = np.array([[-1.0, 0.0, 320.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # Plain RANSAC accepts the fit; our orientation check must refuse it.
    result = estimate_homography(pts0, warp_points(mirror, pts0), method='ransac')
    assert not result.ok and result.reason == 'degenerate'
    assert not estimate_homography(pts0, warp_points(mirror, pts0)).ok


def _pan(degrees: float) -> np.ndarray:
    """Pixel homography of a camera (640x480, f = 380 px) turning about its y axis."""
    K = np.array([[380.0, 0.0, 319.5], [0.0, 380.0, 239.5], [0.0, 0.0, 1.0]])
    angle = np.radians(degrees)
    R = np.array(
        [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    )
    return K @ R @ np.linalg.inv(K)


def test_a_wide_turn_whose_scale_flips_the_sign_is_kept():
    # At 52 degrees the true scale gives H[2, 2] < 0: dividing by it flips every depth's sign.
    H = _pan(-52.0)
    assert H[2, 2] < 0
    pts0 = np.random.default_rng(3).uniform([330, 40], [630, 440], size=(150, 2))
    pts1 = warp_points(H, pts0)
    seen = (pts1 >= 0).all(axis=1) & (pts1 < [640, 480]).all(axis=1)
    assert seen.sum() >= 40
    result = estimate_homography(pts0[seen], pts1[seen])
    assert result.ok, result.reason
    assert corner_error(result.H, H / H[2, 2], 480, 640) < 0.1


def test_a_vanishing_line_through_the_support_is_degenerate():
    pts0 = _grid_points()
    H = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0 / 160.0, 0.0, 1.0]])  # w = 0 at x=160
    result = estimate_homography(pts0, warp_points(H, pts0), method='ransac')
    assert not result.ok and result.reason == 'degenerate'


def test_bad_arguments():
    pts = _grid_points(10)
    with pytest.raises(ValueError, match='unknown method'):
        estimate_homography(pts, pts, method='nope')
    with pytest.raises(ValueError, match=r'\(N, 2\)'):
        estimate_homography(pts[:, :1], pts)
    with pytest.raises(ValueError, match='out of range'):
        estimate_homography(pts, pts, np.array([[0, 10]]))
    with pytest.raises(ValueError, match='unpaired'):
        estimate_homography(pts, pts[:5])
