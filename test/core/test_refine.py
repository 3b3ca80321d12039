"""Homography refinement: each correspondence counts by its own noise through the lens."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kp2d_core.geometry.camera import CameraModel
from kp2d_core.geometry.coordinates import corner_error, warp_points
from kp2d_core.geometry.homography import estimate_homography
from kp2d_core.geometry.image_points import ImagePoints
from kp2d_core.geometry.refinement import refine_homography
from kp2d_core.inference.features import Features
from kp2d_core.vo.keyframe_tracker import HomographyTracker

HW = (480, 640)
FISHEYE = CameraModel.create(
    [300.0, 0.0, 319.5, 0.0, 300.0, 239.5, 0.0, 0.0, 1.0],
    [0.03, -0.01, 0.002, 0.0],
    'equidistant',
    image_hw=HW,
)
PINHOLE = CameraModel.create([400.0, 0.0, 319.5, 0.0, 400.0, 239.5, 0.0, 0.0, 1.0], image_hw=HW)
H_TRUE = np.array([[1.03, 0.04, 5.0], [-0.03, 0.98, -3.0], [4e-5, -2e-5, 1.0]])
NOISE_PX = (0.1, 1.5)  # each detection's own error in raw pixels: log-uniform in this range
TRIALS = 20


def _seen_twice(camera: CameraModel, rng: np.random.Generator, count: int = 400):
    """(key, current) ImagePoints of the same plane points (``H_TRUE`` between the geometry
    frames) inside both images, each detected with an isotropic error in raw pixels of its
    own size (some keypoints are sharp, some are not)."""
    raw_key = rng.uniform([0.0, 0.0], [HW[1] - 1.0, HW[0] - 1.0], (count, 2))
    pixels_cur = warp_points(H_TRUE, ImagePoints.of(raw_key, camera).pixels)
    rays = np.c_[pixels_cur, np.ones(count)] @ np.linalg.inv(camera.P).T
    raw_cur = camera.distort(rays[:, :2] / rays[:, 2:]) if camera.distorted else pixels_cur
    inside = np.flatnonzero(((raw_cur >= 0) & (raw_cur <= [HW[1] - 1, HW[0] - 1])).all(axis=1))
    sigma = np.exp(rng.uniform(*np.log(NOISE_PX), (len(inside), 1)))
    key = ImagePoints.of(raw_key[inside] + sigma * rng.normal(size=(len(inside), 2)), camera)
    cur = ImagePoints.of(raw_cur[inside] + sigma * rng.normal(size=(len(inside), 2)), camera)
    return key, cur


def _errors(camera: CameraModel) -> dict[str, float]:
    """Mean corner errors (px) over seeded trials: the sample-consensus estimate, its
    refinement through the lens, and the refinement that ignores the lens."""
    rng = np.random.default_rng(7)
    errors: dict[str, list[float]] = {'consensus': [], 'lens': [], 'no_lens': []}
    for _ in range(TRIALS):
        key, cur = _seen_twice(camera, rng)
        result = estimate_homography(key.pixels, cur.pixels, threshold_px=3.0)
        assert result.ok
        idx = np.flatnonzero(result.inliers)
        pts_key, pts_cur = key.pixels[idx], cur.pixels[idx]
        jacobians = key.pixel_jacobians(idx), cur.pixel_jacobians(idx)
        estimates = {
            'consensus': result.H,
            'lens': refine_homography(result.H, pts_key, pts_cur, *jacobians),
            'no_lens': refine_homography(result.H, pts_key, pts_cur),
        }
        for name, H in estimates.items():
            errors[name].append(corner_error(H, H_TRUE, *HW))
    return {name: float(np.mean(values)) for name, values in errors.items()}


def test_refinement_through_a_fisheye_beats_the_consensus_estimate():
    errors = _errors(FISHEYE)
    assert errors['lens'] < 0.8 * errors['consensus'], errors
    # Counting the border's stretched points as much as the centre's would be worse.
    assert errors['lens'] < errors['no_lens'], errors


def test_refinement_without_a_lens_beats_the_consensus_estimate():
    errors = _errors(PINHOLE)
    assert errors['lens'] < 0.8 * errors['consensus'], errors
    assert errors['lens'] == pytest.approx(errors['no_lens'])  # identity Jacobians


def test_the_tracker_s_homography_is_refined():
    rng = np.random.default_rng(3)
    tracked, consensus = [], []
    for _ in range(5):
        key, cur = _seen_twice(FISHEYE, rng)
        count = len(key.raw)
        desc = rng.normal(size=(count, 32)).astype(np.float32)
        desc /= np.linalg.norm(desc, axis=1, keepdims=True)
        tracker = HomographyTracker()
        for stamp, points in enumerate((key, cur)):
            features = Features(points.raw.astype(np.float32), np.ones(count), desc, HW)
            cv2.setRNGSeed(0)
            result = tracker.update(features, points, stamp * 50_000_000)
        assert result.num_inliers > 0.8 * count
        cv2.setRNGSeed(0)
        H = estimate_homography(key.pixels, cur.pixels, threshold_px=3.0).H
        tracked.append(corner_error(result.H_key_to_cur, H_TRUE, *HW))
        consensus.append(corner_error(H, H_TRUE, *HW))
    assert np.mean(tracked) < 0.8 * np.mean(consensus), (tracked, consensus)


def test_exact_correspondences_keep_their_homography():
    rng = np.random.default_rng(1)
    pts = rng.uniform([0, 0], [640, 480], (50, 2))
    refined = refine_homography(H_TRUE, pts, warp_points(H_TRUE, pts))
    assert np.allclose(refined, H_TRUE / H_TRUE[2, 2], atol=1e-9)


def test_what_cannot_be_refined_comes_back_unchanged():
    H = np.eye(3)
    three = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    assert refine_homography(H, three, three + 1.0) is H
    line = np.c_[np.linspace(0, 100, 20), np.linspace(0, 50, 20)]
    assert refine_homography(H, line, line + 0.5) is H  # collinear: degenerate
    with pytest.raises(ValueError, match='shape'):
        refine_homography(H, np.zeros((5, 3)), np.zeros((5, 2)))


def test_pixel_jacobians_follow_the_lens():
    centre = np.array([[319.5, 239.5]])
    corner = np.array([[5.0, 5.0]])
    both = ImagePoints.of(np.r_[centre, corner], FISHEYE)
    at_centre, at_corner = both.pixel_jacobians(np.arange(2))
    assert np.allclose(at_centre, np.eye(2), atol=1e-3)
    assert np.linalg.det(at_corner) > 1.5  # the rectified frame stretches the border
    plain = ImagePoints.of(np.r_[centre, corner], PINHOLE).pixel_jacobians(np.arange(2))
    assert np.array_equal(plain, np.broadcast_to(np.eye(2), (2, 2, 2)))


def test_aligned_corners_near_the_homography_refine_it_and_far_ones_do_not():
    """Forty matches 1 px (sd) off and 300 corners 0.05 px off (the keyframe's corners
    aligned into the frame, the keyframe's points exact; the first 80, two per inlier, are
    used): refined on both, the homography is
    several times closer to the truth than on the matches alone; corners 5 px off (beyond
    the gate) leave the matches' refinement as it was; corners after the first 80, 0.6 px
    off, change nothing."""
    from kp2d_core.geometry.refinement import AlignedCorners, refined_result

    rng = np.random.default_rng(11)
    key = ImagePoints.of(rng.uniform([20.0, 20.0], [620.0, 460.0], (40, 2)), PINHOLE)
    cur = ImagePoints.of(warp_points(H_TRUE, key.pixels) + rng.normal(0, 1.0, (40, 2)), PINHOLE)
    result = estimate_homography(key.pixels, cur.pixels, threshold_px=3.0)
    assert result.ok
    pairs = np.stack([np.arange(40), np.arange(40)], axis=1)
    noise = key.pixel_jacobians(pairs[:, 0]), cur.pixel_jacobians(pairs[:, 1])
    corners = rng.uniform([20.0, 20.0], [620.0, 460.0], (300, 2))
    exact = warp_points(H_TRUE, corners)
    sigma = np.broadcast_to(0.05 * np.eye(2), (300, 2, 2))
    near = AlignedCorners.of(corners, exact + rng.normal(0, 0.05, exact.shape), sigma, PINHOLE)
    far = AlignedCorners.of(corners, exact + [5.0, 0.0], sigma, PINHOLE)
    error = {
        name: corner_error(refined_result(result, key, cur, pairs, noise, a).H, H_TRUE, *HW)
        for name, a in (('matches', None), ('near', near), ('far', far))
    }
    assert error['near'] < 0.3 * error['matches'], error
    assert error['far'] == pytest.approx(error['matches']), error
    # Two per inlier at most, the first ones: corners after them change nothing.
    skewed = AlignedCorners.of(corners, np.r_[exact[:80], exact[80:] + [0.6, 0.0]], sigma, PINHOLE)
    first = AlignedCorners.of(corners[:80], exact[:80], sigma[:80], PINHOLE)
    assert result.inliers.sum() == 40
    H_skewed = refined_result(result, key, cur, pairs, noise, skewed).H
    assert np.array_equal(H_skewed, refined_result(result, key, cur, pairs, noise, first).H)
