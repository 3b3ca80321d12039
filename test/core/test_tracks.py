"""Persistent feature tracks: ids, ages, velocities, spreading and continuity on real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kp2d_core import Features
from kp2d_core.data.samples import render_view
from kp2d_core.geometry.coordinates import warp_points
from kp2d_core.geometry.image_points import ImagePoints
from kp2d_core.images import read_image
from kp2d_core.inference.probe import sample_photo_path
from kp2d_core.vo.detection_policy import EVERY_FRAME
from kp2d_core.vo.feature_tracks import FeatureTracker, TrackConfig
from kp2d_core.vo.frame_pipeline import FramePipeline, PipelineConfig

HW = (480, 640)
FRAME_NS = 33_333_333


def _frame(xy: np.ndarray, desc: torch.Tensor) -> tuple[Features, ImagePoints]:
    xy = np.asarray(xy, np.float64)
    scores = torch.linspace(1.0, 0.1, len(xy))
    features = Features(torch.as_tensor(xy, dtype=torch.float32), scores, desc, HW)
    return features, ImagePoints.of(features.keypoints.astype(np.float64), None)


def _scene(count: int = 120, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform([40.0, 40.0], [600.0, 440.0], size=(count, 2))
    desc = torch.nn.functional.normalize(
        torch.randn(count, 32, generator=torch.Generator().manual_seed(seed)), dim=1
    )
    return xy, desc


def test_ids_ages_and_velocities_follow_the_points():
    xy, desc = _scene()
    tracker = FeatureTracker(TrackConfig(max_tracks=500, min_distance_px=0.0))
    first = tracker.update(*_frame(xy, desc), 0)
    assert first.ids.dtype == np.uint64 and (first.ages == 0).all()
    assert (first.velocity == 0).all() and first.normalized is None
    shift = np.array([3.0, -2.0])
    second = tracker.update(*_frame(xy + shift, desc), FRAME_NS)
    assert second.continued.all() and (second.ages == 1).all()
    assert sorted(second.ids.tolist()) == sorted(first.ids.tolist())
    assert np.allclose(second.velocity, shift / (FRAME_NS * 1e-9), atol=0.01)  # float32 xy
    by_id = dict(zip(first.ids.tolist(), first.xy))
    assert all(
        np.allclose(p - shift, by_id[i], atol=1e-3) for i, p in zip(second.ids.tolist(), second.xy)
    )


def test_new_ids_never_reuse_old_ones_and_survive_resets():
    xy, desc = _scene()
    tracker = FeatureTracker(TrackConfig(max_tracks=50, min_distance_px=0.0))
    seen = set(tracker.update(*_frame(xy, desc), 0).ids.tolist())
    other_xy, other_desc = _scene(seed=1)
    fresh = tracker.update(*_frame(other_xy, other_desc), FRAME_NS)  # nothing matches
    assert not fresh.continued.any() and not seen & set(fresh.ids.tolist())
    assert fresh.ids.min() > max(seen)
    tracker.reset()
    after = tracker.update(*_frame(xy, desc), 2 * FRAME_NS)
    assert not after.continued.any() and after.ids.min() > fresh.ids.max()


def test_tracks_keep_their_distance_and_count():
    rng = np.random.default_rng(3)
    xy = rng.uniform([20.0, 20.0], [200.0, 200.0], size=(400, 2))  # crowded corner
    desc = torch.nn.functional.normalize(torch.randn(400, 16), dim=1)
    tracker = FeatureTracker(TrackConfig(max_tracks=60, min_distance_px=15.0))
    tracks = tracker.update(*_frame(xy, desc), 0)
    assert 0 < len(tracks) <= 60
    gaps = np.linalg.norm(tracks.xy[:, None] - tracks.xy[None], axis=2)
    assert gaps[~np.eye(len(tracks), dtype=bool)].min() >= 14.0  # pixel-rounded circles
    assert (
        TrackConfig(max_tracks=0)
        and len(FeatureTracker(TrackConfig(max_tracks=0)).update(*_frame(xy, desc), 0)) == 0
    )


def test_wrong_matches_along_the_epipolar_line_are_refused():
    """A descriptor match to another point on the same row (the epipolar line of a sideways
    motion) fits a fundamental matrix but not the motion: it must end, not continue."""
    xy, desc = _scene(count=80)
    tracker = FeatureTracker(TrackConfig(max_tracks=500, min_distance_px=0.0))
    first = tracker.update(*_frame(xy, desc), 0)
    moved = xy + [4.0, 0.0]
    swapped = moved.copy()
    swapped[0, 0] += 150.0  # same descriptor, 150 px further along the row
    second = tracker.update(*_frame(swapped, desc), FRAME_NS)
    index = int(np.flatnonzero(second.indices == 0)[0])
    assert second.ids[index] not in set(first.ids.tolist())


@pytest.mark.slow
def test_tracks_persist_and_follow_the_true_motion():
    """24 frames of a smooth camera sweep over a poster (the bundled model): at least 80 % of
    the tracked points that stay in view keep their id, and every continued track is within
    3 px of where the exact homography puts its previous position."""
    photo = read_image(sample_photo_path())
    frames, to_view = zip(*(render_view(photo, HW, float(t)) for t in np.linspace(0, 0.3, 24)))
    pipeline = FramePipeline.from_config(PipelineConfig(hybrid=EVERY_FRAME))
    previous, kept, in_view, errors = None, 0, 0, []
    for index, frame in enumerate(frames):
        tracks = pipeline.process(frame, index * FRAME_NS).tracks
        if previous is not None:
            predicted = warp_points(
                to_view[index] @ np.linalg.inv(to_view[index - 1]), previous.xy
            )
            inside = ((predicted > 8) & (predicted < [HW[1] - 8, HW[0] - 8])).all(axis=1)
            alive = set(tracks.ids.tolist())
            kept += sum(int(i) in alive for i in previous.ids[inside])
            in_view += int(inside.sum())
            where = dict(zip(previous.ids.tolist(), predicted))
            errors += [
                float(np.linalg.norm(xy - where[int(i)]))
                for i, xy in zip(tracks.ids[tracks.continued], tracks.xy[tracks.continued])
            ]
        previous = tracks
    assert kept / in_view >= 0.8, kept / in_view
    assert len(errors) > 3000 and max(errors) < 3.0, max(errors)


def test_fit_homography_is_the_homography_verify_motion_fits():
    from kp2d_core.geometry.homography import fit_homography, verify_motion

    xy, _ = _scene(count=40)
    moved = xy * 1.01 + [3.0, -2.0]
    moved[:4] += 40.0  # four wrong matches
    H, inliers = fit_homography(xy, moved, 2.0)
    assert np.array_equal(H, verify_motion(xy, moved, 2.0, 16.0)[1])
    assert not inliers[:4].any() and inliers[4:].all()
    assert fit_homography(xy[:3], moved[:3], 2.0)[0] is None


def test_opencv_estimator_failures_are_failed_fits(monkeypatch):
    """OpenCV's USAC can assert on degenerate samples: a failed fit, not a crash."""
    import cv2

    from kp2d_core.geometry import homography
    from kp2d_core.geometry.homography import verify_motion

    def asserting(*args, **kwargs):
        raise cv2.error('(-215:Assertion failed) !model.empty()')

    xy, _ = _scene(count=40)
    monkeypatch.setattr(homography.cv2, 'findFundamentalMat', asserting)
    inliers, H = verify_motion(xy, xy + [2.0, 1.0], 2.0, 16.0)
    assert H is not None and inliers.all()  # the homography still decides
    monkeypatch.setattr(homography.cv2, 'findHomography', asserting)
    inliers, H = verify_motion(xy, xy + [2.0, 1.0], 2.0, 16.0)
    assert H is None and not inliers.any()


def _texture(seed: int) -> np.ndarray:
    """A textured image unrelated to the bundled photo (blurred noise, full contrast)."""
    import cv2

    noise = np.random.default_rng(seed).uniform(0, 255, (HW[0], HW[1], 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 3.0)
    return cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def test_alternating_unrelated_images_never_keep_an_id():
    """Switching between two unrelated images, descriptor matching still pairs about a
    hundred points by chance and a homography fitted to them verifies 4-5: those tracks
    kept their ids on other physical points (68 over 15 switches). Now no id survives a
    switch, while each image's own tracks continue between its two frames."""
    photo = read_image(sample_photo_path())
    views = [render_view(photo, HW, 0.1)[0], _texture(0)]
    pipeline = FramePipeline.from_config(PipelineConfig(hybrid=EVERY_FRAME))
    across, within = 0, 0
    for index in range(16):
        tracks = pipeline.process(views[(index // 2) % 2], (index + 1) * FRAME_NS).tracks
        switched = index > 0 and index % 2 == 0
        if switched:
            across += int(tracks.continued.sum())
        elif index > 0:
            within += int(tracks.continued.sum())
    assert across == 0
    assert within > 8 * 100


def test_alternating_unrelated_images_in_hybrid_mode_resume_ids_only_on_their_own_image():
    """Hybrid mode (the default) remembers lost tracks and re-identifies them: switching back
    to an image, its tracks may take their ids back, but no id ever moves to the other image
    (every id continued across a switch was seen on the image it continues on)."""
    photo = read_image(sample_photo_path())
    views = [render_view(photo, HW, 0.1)[0], _texture(0)]
    pipeline = FramePipeline.from_config()
    seen: list[set[int]] = [set(), set()]
    resumed = 0
    for index in range(16):
        image = (index // 2) % 2
        tracks = pipeline.process(views[image], (index + 1) * FRAME_NS).tracks
        continued = set(tracks.ids[tracks.continued].tolist())
        if index > 0 and index % 2 == 0:  # switched
            assert not continued & seen[1 - image]
            assert continued <= seen[image]
            resumed += len(continued)
        seen[image] |= set(tracks.ids.tolist())
    assert pipeline.config.hybrid.mode == 'hybrid'
    assert resumed > 100  # the re-identification did work on the way back


def test_a_featureless_frame_starts_no_track():
    photo = read_image(sample_photo_path())
    pipeline = FramePipeline.from_config()
    black = np.zeros((*HW, 3), np.uint8)
    assert len(pipeline.process(black, FRAME_NS).tracks) == 0
    grey = np.full((*HW, 3), 128, np.uint8)
    assert len(pipeline.process(grey, 2 * FRAME_NS).tracks) == 0
    view = render_view(photo, HW, 0.1)[0]
    assert len(pipeline.process(view, 3 * FRAME_NS).tracks) > 100
