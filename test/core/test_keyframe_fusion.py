"""A new keyframe's pose from the keyframe before the last as well (fuse_previous_keyframe)."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from kp2d_core.evaluation.scenes import SCENES, render_sequence
from kp2d_core.evaluation.sequences import read_sequence
from kp2d_core.evaluation.vo import run_sequence
from kp2d_core.geometry.poses import blend_poses, make_pose
from kp2d_core.images import read_image
from kp2d_core.inference.probe import sample_photo_path
from kp2d_core.vo import keyframe_tracker
from kp2d_core.vo.detection_policy import EVERY_FRAME, HybridConfig
from kp2d_core.vo.frame_pipeline import FramePipeline


def _angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def test_blend_poses_moves_along_the_arc_and_the_line():
    """Weight 0 and 1 give the two poses; between, the rotation turns about the axis between
    them by that share of the angle and the position lies on the line; a rotation given
    with the far quaternion still takes the short way."""
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    R_a = cv2.Rodrigues(np.array([0.1, 0.2, -0.3]))[0]
    R_b = R_a @ cv2.Rodrigues(axis * np.radians(40.0))[0]
    T_a, T_b = make_pose(R_a, [1.0, 2.0, 3.0]), make_pose(R_b, [3.0, 2.0, -1.0])
    assert np.allclose(blend_poses(T_a, T_b, 0.0), T_a) and np.allclose(
        blend_poses(T_a, T_b, 1.0), T_b
    )
    quarter = blend_poses(T_a, T_b, 0.25)
    turned = R_a.T @ quarter[:3, :3]
    assert _angle_deg(turned) == pytest.approx(10.0, abs=1e-6)
    assert np.allclose(cv2.Rodrigues(turned)[0].ravel() / np.radians(10.0), axis)
    assert np.allclose(quarter[:3, 3], [1.5, 2.0, 2.0])
    R_far = R_a @ cv2.Rodrigues(axis * np.radians(350.0))[0]  # -10 degrees
    between = blend_poses(T_a, make_pose(R_far, [1.0, 2.0, 3.0]), 0.5)
    assert _angle_deg(R_a.T @ between[:3, :3]) == pytest.approx(5.0, abs=1e-6)


@pytest.fixture(scope='module')
def handheld(tmp_path_factory):
    photo = read_image(sample_photo_path())
    spec = next(s for s in SCENES if s.name == 'poster_handheld')
    out = tmp_path_factory.mktemp('fusion')
    return read_sequence(
        render_sequence(spec, [photo] * 12, out, seed=1, frames=30, hw=(240, 320))
    )


@pytest.fixture(scope='module')
def bundled():
    return FramePipeline.from_config().extractor


def _hybrid(extractor, fuse: bool | None = None) -> FramePipeline:
    """A hybrid pipeline; ``fuse`` sets ``fuse_previous_keyframe`` (None: the default)."""
    pipeline = FramePipeline(extractor, hybrid=HybridConfig(mode='hybrid'))
    pipeline.tracker.cfg = replace(pipeline.tracker.cfg, fuse_previous_keyframe=fuse)
    return pipeline


def test_a_new_keyframe_s_pose_lies_between_its_two_measurements(handheld, bundled, monkeypatch):
    """In hybrid mode (by default) each keyframe made in a scene without depth, after the
    first two, takes the pose between the one measured through the last keyframe and the one
    measured from the keyframe before it (a weight strictly between 0 and 1); that frame
    reports the blended pose, and only one keyframe back is kept. Off in every-frame mode,
    whose keyframes give way for lost inliers only, and where it is switched off."""
    blends = []

    def recording(T_a, T_b, weight):
        blended = blend_poses(T_a, T_b, weight)
        blends.append((T_a, T_b, weight, blended))
        return blended

    monkeypatch.setattr(keyframe_tracker, 'blend_poses', recording)
    pipeline = _hybrid(bundled)
    record = run_sequence(pipeline, handheld)
    renewed = len(blends)
    assert renewed >= 3, renewed
    for T_a, T_b, weight, blended in blends:
        assert 0.0 < weight < 1.0
        assert _angle_deg(T_a[:3, :3].T @ T_b[:3, :3]) < 1.0  # the two measurements agree
        assert any(np.array_equal(blended, pose) for pose in record.poses.values())
    key = pipeline.tracker.key
    assert key.previous is not None and key.previous.previous is None
    assert FramePipeline(bundled, hybrid=HybridConfig(mode='hybrid')).tracker.cfg.fuses
    assert not FramePipeline(bundled, hybrid=EVERY_FRAME).tracker.cfg.fuses
    run_sequence(_hybrid(bundled, fuse=False), handheld)
    assert len(blends) == renewed


def test_too_few_tracks_back_to_the_older_keyframe_leave_the_pose_alone(
    handheld, bundled, monkeypatch
):
    """Where fewer than FUSION_MIN_INLIERS inliers measure the frame against the keyframe
    before the last (blur, dropped frames), the new keyframe keeps the pose through the last
    one: the same poses as without fusion."""
    plain = run_sequence(_hybrid(bundled, fuse=False), handheld)
    monkeypatch.setattr(keyframe_tracker, 'FUSION_MIN_INLIERS', 100_000)
    gated = run_sequence(_hybrid(bundled), handheld)
    assert sorted(gated.poses) == sorted(plain.poses)
    assert all(np.array_equal(gated.poses[s], plain.poses[s]) for s in plain.poses)


def test_without_fusion_the_keyframe_takes_the_pose_through_the_last(handheld, bundled):
    """fuse_previous_keyframe off: the same tracks and frames with a pose, no keyframe
    remembers the one before it, and the poses are not the blended ones."""
    fused, plain = _hybrid(bundled), _hybrid(bundled, fuse=False)
    with_fusion, without = run_sequence(fused, handheld), run_sequence(plain, handheld)
    assert plain.tracker.key.previous is None and fused.tracker.key.previous is not None
    assert with_fusion.track_lengths == without.track_lengths
    assert sorted(with_fusion.poses) == sorted(without.poses)
    differ = [s for s in without.poses if not np.allclose(with_fusion.poses[s], without.poses[s])]
    assert differ
