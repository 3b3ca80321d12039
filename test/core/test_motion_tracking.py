"""Camera motion from homographies / essential matrices and the keyframe tracker."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from kp2d_core import Features
from kp2d_core.geometry.camera import CameraModel, camera_matrix
from kp2d_core.geometry.essential_motion import pose_from_essential
from kp2d_core.geometry.homography_motion import pose_from_homography
from kp2d_core.geometry.image_points import ImagePoints
from kp2d_core.geometry.poses import (
    invert_pose,
    make_pose,
    quaternion_to_rotation,
    rotation_to_quaternion,
)
from kp2d_core.vo.keyframe_tracker import MIN_TRACK_INLIERS, HomographyTracker, TrackerConfig

K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
R_TRUE = cv2.Rodrigues(np.array([0.05, -0.08, 0.1]))[0]
T_TRUE = np.array([0.3, -0.1, 0.5])
PLANE_DEPTH = 5.0


def _project(points: np.ndarray) -> np.ndarray:
    uvw = points @ K.T
    return uvw[:, :2] / uvw[:, 2:]


def _scene(planar: bool, n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform([-2.5, -1.8], [2.5, 1.8], size=(n, 2))
    z = np.full(n, PLANE_DEPTH) if planar else rng.uniform(4.0, 9.0, n)
    ref = np.column_stack([xy * z[:, None] / PLANE_DEPTH, z])
    cur = ref @ R_TRUE.T + T_TRUE
    return _project(ref), _project(cur)


def test_homography_decomposition_recovers_motion():
    pts_ref, pts_cur = _scene(planar=True)
    H, _ = cv2.findHomography(pts_ref, pts_cur, 0)
    pose = pose_from_homography(H, K, pts_ref, pts_cur)
    assert pose is not None and pose.method == 'homography'
    assert np.allclose(pose.T_cur_ref[:3, :3], R_TRUE, atol=1e-6)
    assert np.allclose(pose.T_cur_ref[:3, 3], T_TRUE / PLANE_DEPTH, atol=1e-6)
    assert np.allclose(pose.normal, [0, 0, 1], atol=1e-6) or np.allclose(
        pose.normal, [0, 0, -1], atol=1e-6
    )


def test_near_pure_rotation_gives_a_rigid_pose():
    """A camera turning in place: the fitted homography is K R K^-1 up to noise, which OpenCV
    hands back as the 'rotation' unless it is projected onto SO(3)."""
    from kp2d_core.geometry.poses import is_pose

    R = cv2.Rodrigues(np.array([0.01, 0.035, -0.004]))[0]
    rng = np.random.default_rng(1)
    pts_ref = rng.uniform([0, 0], [640, 480], size=(300, 2))
    rays = np.column_stack([pts_ref, np.ones(300)]) @ np.linalg.inv(K).T
    pts_cur = _project(rays @ R.T) + rng.normal(0, 0.3, (300, 2))
    H, _ = cv2.findHomography(pts_ref, pts_cur, 0)
    pose = pose_from_homography(H, K, pts_ref, pts_cur)
    assert pose is not None
    T = make_pose(pose.T_cur_ref[:3, :3], np.zeros(3))
    assert is_pose(T)  # orthonormal to 1e-6: it can be chained into a trajectory
    angle = np.degrees(np.linalg.norm(cv2.Rodrigues(pose.T_cur_ref[:3, :3] @ R.T)[0]))
    assert angle < 0.1


def test_a_wide_turn_whose_homography_changes_sign_keeps_its_rotation():
    """Panning 52 degrees at f = 380 px, K R K^-1 has H[2, 2] < 0: normalised to H[2, 2] = 1
    it is the negative of the true scale, and decomposed so the rotation came out 180 degrees
    off."""
    wide = np.array([[380.0, 0.0, 319.5], [0.0, 380.0, 239.5], [0.0, 0.0, 1.0]])
    R = cv2.Rodrigues(np.array([0.0, np.radians(-52.0), 0.0]))[0]
    rng = np.random.default_rng(2)
    rays = np.column_stack([rng.uniform([330, 40], [630, 440], (300, 2)), np.ones(300)])
    rays = rays @ np.linalg.inv(wide).T
    turned = rays @ R.T
    seen = turned[:, 2] > 0.2
    pts_ref = (rays[seen] @ wide.T)[:, :2]
    cur = turned[seen] @ wide.T
    pts_cur = cur[:, :2] / cur[:, 2:] + rng.normal(0, 0.2, (seen.sum(), 2))
    H, _ = cv2.findHomography(pts_ref, pts_cur, 0)
    assert H[2, 2] > 0 and (pts_ref @ H[2, :2] + H[2, 2] < 0).all()  # the flipped sign
    pose = pose_from_homography(H / H[2, 2], wide, pts_ref, pts_cur)
    assert pose is not None
    angle = np.degrees(np.linalg.norm(cv2.Rodrigues(pose.T_cur_ref[:3, :3] @ R.T)[0]))
    assert angle < 0.2


def test_rotating_wide_angle_camera_gets_its_rotation_when_no_plane_is_visible(monkeypatch):
    """A wide view turning in place with 2 px noise: the decompositions' translations are
    noise, their planes cut through the points, and often none passes the visibility test.
    The rotation is still there to be had (the sequence benchmark's rotating camera)."""
    import kp2d_core.geometry.homography_motion as motion

    wide = np.array([[250.0, 0.0, 320.0], [0.0, 250.0, 240.0], [0.0, 0.0, 1.0]])

    def poses(rng):
        for _ in range(20):
            R = cv2.Rodrigues(rng.normal(size=3) * np.radians(2.0))[0]
            ref = rng.uniform([-100, -40], [740, 540], (400, 2))
            cur = cv2.perspectiveTransform(ref[None], wide @ R @ np.linalg.inv(wide))[0]
            cur += rng.normal(0, 2.0, cur.shape)
            H, _ = cv2.findHomography(ref, cur, 0)
            yield R, pose_from_homography(H, wide, ref, cur, rng.normal(size=3))

    for R, pose in poses(np.random.default_rng(0)):
        assert pose is not None
        angle = np.degrees(np.linalg.norm(cv2.Rodrigues(pose.T_cur_ref[:3, :3] @ R.T)[0]))
        assert angle < 0.2 and np.linalg.norm(pose.T_cur_ref[:3, 3]) < motion.NEAR_ROTATION_T
    monkeypatch.setattr(motion, 'NEAR_ROTATION_T', 0.0)  # the visibility test alone
    assert sum(pose is None for _, pose in poses(np.random.default_rng(0))) >= 5


def _along_a_wall(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(pts_ref, pts_cur, R, n_wall): a camera stepping 0.1 forward and turning 0.6 deg
    beside a wall (x = -1, depths 2-8: the first n_wall points) above a floor (y = 0.8);
    0.3 px noise."""
    rng = np.random.default_rng(seed)
    n_wall, n_floor = 200, 100
    on_wall = [np.full(n_wall, -1.0), rng.uniform(-0.8, 0.8, n_wall), rng.uniform(2, 8, n_wall)]
    on_floor = [rng.uniform(-0.9, 1.0, n_floor), np.full(n_floor, 0.8), rng.uniform(2, 8, n_floor)]
    points = np.vstack([np.column_stack(on_wall), np.column_stack(on_floor)])
    R = cv2.Rodrigues(np.array([0.0, 0.01, 0.0]))[0]
    ref = _project(points) + rng.normal(0, 0.3, (len(points), 2))
    cur = _project(points @ R.T + [0.0, 0.0, -0.1]) + rng.normal(0, 0.3, (len(points), 2))
    return ref, cur, R, n_wall


def test_points_off_the_plane_choose_the_homography_decomposition():
    """Moving along a wall, the wall's homography has two decompositions that put its points
    in front of the cameras; the one facing the camera (plane across the view, camera
    translating sideways) is 5-6 deg off. The floor's points agree only with the epipolar
    geometry of the true one. With the wall and mismatches alone nothing decides, and the
    fallback stays."""
    for seed in range(3):
        ref, cur, R, n_wall = _along_a_wall(seed)
        wall_ref, wall_cur = ref[:n_wall], cur[:n_wall]
        H, _ = cv2.findHomography(wall_ref, wall_cur, 0)
        floor = (ref[n_wall:], cur[n_wall:])
        pose = pose_from_homography(H, K, wall_ref, wall_cur, None, floor)
        error = np.linalg.norm(cv2.Rodrigues(pose.T_cur_ref[:3, :3] @ R.T)[0])
        assert np.degrees(error) < 0.3
        direction = pose.T_cur_ref[:3, 3] / np.linalg.norm(pose.T_cur_ref[:3, 3])
        assert direction @ [0.0, 0.0, -1.0] > 0.99
        assert abs(pose.normal @ [-1.0, 0.0, 0.0]) > 0.99 and pose.decided
        rng = np.random.default_rng(seed)
        mismatches = (rng.uniform(0, 480, (100, 2)), rng.uniform(0, 480, (100, 2)))
        alone = pose_from_homography(H, K, wall_ref, wall_cur, None, mismatches)
        without = pose_from_homography(H, K, wall_ref, wall_cur)
        assert np.allclose(alone.T_cur_ref, without.T_cur_ref) and not alone.decided


def _beside_a_wall_with_far_floor_inliers(seed: int, prior: np.ndarray | None) -> float:
    """Rotation error (deg) of the decomposition of the wall's homography when 20 floor points
    on the far side of the image are among its inliers and mismatches are the outliers."""
    ref, cur, R, n_wall = _along_a_wall(seed)
    H, _ = cv2.findHomography(ref[:n_wall], cur[:n_wall], 0)
    far_floor = n_wall + np.flatnonzero(ref[n_wall:, 0] > 400)[:20]
    inliers = np.r_[np.arange(n_wall), far_floor]
    rng = np.random.default_rng(seed)
    mismatches = (rng.uniform(0, 480, (100, 2)), rng.uniform(0, 480, (100, 2)))
    pose = pose_from_homography(H, K, ref[inliers], cur[inliers], prior, mismatches)
    assert not pose.decided
    return np.degrees(np.linalg.norm(cv2.Rodrigues(pose.T_cur_ref[:3, :3] @ R.T)[0]))


def test_the_plane_seen_before_chooses_when_the_points_off_it_do_not():
    """Beside a wall, with a few floor points on the far side of the image among the
    homography's inliers: OpenCV's visibility test (every inlier in front) drops the true
    solution, and the one facing the camera is 5-6 deg off. The wall seen so far (within
    30 deg) names the true one among the solutions in front of most inliers; a prior that is
    neither solution's plane leaves the fallback."""
    wall = cv2.Rodrigues(np.radians([0.0, 0.0, 20.0]))[0] @ [-1.0, 0.0, 0.0]
    for seed in range(3):
        assert _beside_a_wall_with_far_floor_inliers(seed, wall) < 0.3
        for prior in (None, np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])):
            assert _beside_a_wall_with_far_floor_inliers(seed, prior) > 4.0


def _corridor_wall(seed: int, prior: np.ndarray | None, across: int = 100) -> float:
    """Rotation error (deg) of the decomposition of the wall's homography when ``across`` of
    its inliers lie across the view from the wall (points of the corridor's other side that
    happen to fit it: the plane of a homography fitted across a corridor just after its
    keyframe cuts through the scene), without points off it to decide."""
    ref, cur, R, n_wall = _along_a_wall(seed)
    H, _ = cv2.findHomography(ref[:n_wall], cur[:n_wall], 0)
    rng = np.random.default_rng(seed)
    other = rng.uniform([420, 40], [620, 440], (across, 2))  # right of the image: x > 0
    fitted = cv2.perspectiveTransform(other[None], H)[0] if across else other
    inlier_ref, inlier_cur = np.vstack([ref[:n_wall], other]), np.vstack([cur[:n_wall], fitted])
    pose = pose_from_homography(H, K, inlier_ref, inlier_cur, prior)
    return np.degrees(np.linalg.norm(cv2.Rodrigues(pose.T_cur_ref[:3, :3] @ R.T)[0]))


def test_the_plane_seen_before_is_a_candidate_in_front_of_most_inliers():
    """The wall's plane is in front of two thirds of the inliers, below the share that makes
    a candidate without a prior (the fallback facing the camera is 5-6 deg off); the wall
    seen so far makes it one and names it. With the wall's points alone both solutions are
    candidates: a prior 40 deg from the wall, outside the usual agreement but clearly nearer
    it than the other solution's plane, names it; one as near to both leaves the fallback."""
    wall = np.array([-1.0, 0.0, 0.0])
    tilted = cv2.Rodrigues(np.radians([0.0, 0.0, 40.0]))[0] @ wall
    between = np.array([-1.0, 0.0, 1.0]) / np.sqrt(2.0)
    for seed in range(3):
        assert _corridor_wall(seed, None) > 4.0
        assert _corridor_wall(seed, wall) < 0.3
        assert _corridor_wall(seed, None, across=0) > 4.0
        assert _corridor_wall(seed, tilted, across=0) < 0.3
        assert _corridor_wall(seed, between, across=0) > 4.0


def test_essential_fallback_recovers_rotation_and_direction():
    pts_ref, pts_cur = _scene(planar=False)
    pose = pose_from_essential(pts_ref, pts_cur, K)
    assert pose is not None and pose.method == 'essential'
    assert np.allclose(pose.T_cur_ref[:3, :3], R_TRUE, atol=1e-3)
    assert np.allclose(pose.T_cur_ref[:3, 3], T_TRUE / np.linalg.norm(T_TRUE), atol=1e-3)
    assert pose_from_essential(pts_ref[:5], pts_cur[:5], K) is None


def test_pose_helpers():
    T = make_pose(R_TRUE, T_TRUE)
    assert np.allclose(T @ invert_pose(T), np.eye(4))
    x, y, z, w = rotation_to_quaternion(R_TRUE)
    angle = 2 * np.arccos(w)
    axis_angle = np.array([x, y, z]) / np.sin(angle / 2) * angle
    assert np.allclose(axis_angle, [0.05, -0.08, 0.1], atol=1e-9)
    for R in (np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, 1.0])):
        q = np.array(rotation_to_quaternion(R))
        assert np.isclose(np.linalg.norm(q), 1.0) and np.isclose(abs(q[:3]).max(), 1.0)
        assert np.allclose(quaternion_to_rotation(*q), R)
    assert np.allclose(quaternion_to_rotation(*rotation_to_quaternion(R_TRUE)), R_TRUE)
    assert np.allclose(quaternion_to_rotation(0, 0, 0, 2.0), np.eye(3))  # normalised
    for bad in ((0, 0, 0, 0), (np.nan, 0, 0, 1)):
        with pytest.raises(ValueError, match='quaternion'):
            quaternion_to_rotation(*bad)
    with pytest.raises(ValueError):
        camera_matrix([0, 0, 0, 0, 0, 0, 0, 0, 1])
    assert np.allclose(camera_matrix(K.ravel().tolist()), K)


CAMERA = CameraModel.create(K.ravel(), image_hw=(480, 640))
MS = 1_000_000  # ns


def _features(pts: np.ndarray, desc: torch.Tensor) -> Features:
    return Features(
        torch.as_tensor(pts, dtype=torch.float32), torch.ones(len(pts)), desc, (480, 640)
    )


def _update(tracker, features: Features, stamp_ns: int, camera=CAMERA):
    points = ImagePoints.of(features.keypoints.astype(np.float64), camera)
    return tracker.update(features, points, stamp_ns)


def test_tracker_pose_and_no_drift_when_still():
    pts_ref, pts_cur = _scene(planar=True)
    desc = torch.nn.functional.normalize(torch.randn(len(pts_ref), 64), dim=1)
    tracker = HomographyTracker(TrackerConfig(min_keyframe_inliers=20))
    first = _update(tracker, _features(pts_ref, desc), 0)
    assert first.reason == 'first_frame' and first.new_keyframe
    assert np.allclose(first.T_world_cur, np.eye(4))
    assert (np.diag(first.covariance) > 0).all()  # the origin, but never a zero covariance
    for stamp in (100 * MS, 200 * MS, 300 * MS):  # a still camera: same view again and again
        still = _update(tracker, _features(pts_ref, desc), stamp)
        assert still.num_inliers == len(pts_ref) and not still.new_keyframe
        assert np.allclose(still.H_key_to_cur, np.eye(3), atol=1e-6)
        assert np.allclose(still.T_world_cur, np.eye(4), atol=1e-6)
    moved = _update(tracker, _features(pts_cur, desc), 400 * MS)
    expected = invert_pose(make_pose(R_TRUE, T_TRUE / PLANE_DEPTH))
    assert moved.pose_method == 'homography' and moved.key_stamp_ns == 0
    assert np.allclose(moved.T_world_cur, expected, atol=1e-4)


def test_tracker_without_intrinsics_and_keyframe_renewal():
    pts_ref, pts_cur = _scene(planar=True)
    desc = torch.nn.functional.normalize(torch.randn(len(pts_ref), 64), dim=1)
    tracker = HomographyTracker(TrackerConfig(min_keyframe_inliers=250))
    _update(tracker, _features(pts_ref, desc), 1_000 * MS, None)
    result = _update(tracker, _features(pts_cur, desc), 2_000 * MS, None)
    H_true, _ = cv2.findHomography(pts_ref, pts_cur, 0)
    assert result.T_world_cur is None and result.H_key_to_cur is not None
    assert np.allclose(result.H_key_to_cur, H_true, atol=1e-5)
    assert result.new_keyframe  # 200 inliers < 250: the frame becomes the keyframe
    assert tracker.key_stamp_ns == 2_000 * MS
    shuffled = desc[torch.randperm(len(desc), generator=torch.Generator().manual_seed(0))]
    lost = _update(tracker, _features(pts_ref, shuffled), 3_000 * MS, None)
    assert lost.H_key_to_cur is None and lost.reason is not None
    assert not lost.new_keyframe and tracker.key_stamp_ns == 2_000 * MS  # kept
    # The next frame fails against the keyframe too but matches the lost frame: the camera
    # moved on, and the lost frame becomes the keyframe.
    on = _update(tracker, _features(pts_ref, shuffled), 4_000 * MS, None)
    assert on.key_stamp_ns == 3_000 * MS and np.allclose(on.H_key_to_cur, np.eye(3), atol=1e-6)


def _random_view() -> tuple[Features, CameraModel]:
    """60 seeded random keypoints and descriptors in a 240x320 view, and its camera."""
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=generator) * 300
    desc = torch.nn.functional.normalize(torch.randn(60, 16, generator=generator), dim=1)
    features = Features(xy, torch.linspace(1, 0.1, 60), desc, (240, 320))
    camera = CameraModel.create([300.0, 0, 160, 0, 300.0, 120, 0, 0, 1], image_hw=(240, 320))
    return features, camera


def test_a_non_finite_pose_is_never_chained_and_the_keyframe_stays(monkeypatch):
    import kp2d_core.vo.keyframe_tracker as tracking
    import kp2d_core.vo.odometry as odometry

    tracker = tracking.HomographyTracker()
    features, camera = _random_view()
    _update(tracker, features, 0, camera)
    broken = odometry.Relative(np.full((4, 4), np.nan), 'homography')
    monkeypatch.setattr(tracking, 'relative_motion', lambda *args: broken)
    result = _update(tracker, features, 100 * MS, camera)
    assert result.T_world_cur is None and result.reason == 'non_finite_pose'
    assert result.H_key_to_cur is None and not result.new_keyframe
    assert result.key_stamp_ns == 0 and tracker.key_stamp_ns == 0  # the keyframe stays
    monkeypatch.undo()
    result = _update(tracker, features, 200 * MS, camera)  # the trajectory goes on, finite
    assert result.reason is None and result.key_stamp_ns == 0
    assert np.allclose(result.T_world_cur, np.eye(4), atol=1e-6)  # no jump: the same view
    assert np.isfinite(result.covariance).all()
    assert (np.diag(result.covariance) > 0).all()


def test_after_a_blackout_the_trajectory_goes_on_from_the_keyframe():
    """Frames of sensor noise (a covered lens) have no pose and are never chained; the first
    frame after them is measured against the keyframe from before: no jump, no drift."""
    rng = np.random.default_rng(4)
    pts_ref, pts_cur = _scene(planar=True)
    desc = torch.nn.functional.normalize(torch.randn(len(pts_ref), 64), dim=1)
    tracker = HomographyTracker()
    _update(tracker, _features(pts_ref, desc), 0)
    for k in range(1, 11):  # noise: random keypoints and descriptors on every frame
        noise = rng.uniform([0, 0], [640, 480], (300, 2))
        random = torch.nn.functional.normalize(torch.randn(300, 64), dim=1)
        dark = _update(tracker, _features(noise, random), k * 100 * MS)
        assert dark.T_world_cur is None and dark.H_key_to_cur is None
        assert tracker.key_stamp_ns == 0
    back = _update(tracker, _features(pts_cur, desc), 1_100 * MS)
    assert back.key_stamp_ns == 0 and back.pose_method == 'homography'
    expected = invert_pose(make_pose(R_TRUE, T_TRUE / PLANE_DEPTH))
    assert np.allclose(back.T_world_cur, expected, atol=1e-4)


def test_track_ids_match_points_that_descriptors_cannot_tell_apart():
    """Repetitive texture: every keypoint has one of four descriptors. Descriptors alone find
    no homography; the ids of the tracks that followed the points give the true one, and the
    keypoints without an id are matched by their descriptors."""
    pts_ref, pts_cur = _scene(planar=True)
    rng = np.random.default_rng(6)
    four = torch.nn.functional.normalize(torch.randn(4, 64), dim=1)
    desc = four[torch.as_tensor(rng.integers(0, 4, len(pts_ref)))]
    ids = np.arange(len(pts_ref), dtype=np.int64)
    order = rng.permutation(len(pts_ref))  # the frame lists its keypoints in another order
    plain = HomographyTracker()
    _update(plain, _features(pts_ref, desc), 0)
    assert _update(plain, _features(pts_cur[order], desc[order]), 100 * MS).H_key_to_cur is None
    tracker = HomographyTracker()
    points = ImagePoints.of(pts_ref, CAMERA)
    tracker.update(_features(pts_ref, desc), points, 0, ids)
    unique = torch.nn.functional.normalize(torch.randn(len(pts_ref), 64), dim=1)
    extra = torch.cat([desc[order], unique[:20]])  # 20 keypoints the tracks do not hold
    cur = np.concatenate([pts_cur[order], rng.uniform([0, 0], [640, 480], (20, 2))])
    result = tracker.update(
        _features(cur, extra),
        ImagePoints.of(cur, CAMERA),
        100 * MS,
        np.concatenate([ids[order], np.full(20, -1)]),
    )
    H_true, _ = cv2.findHomography(pts_ref, pts_cur, 0)
    assert result.num_inliers == len(pts_ref)
    assert np.allclose(result.H_key_to_cur, H_true, atol=1e-5)


def test_a_chance_fit_of_a_few_matches_is_no_homography():
    pts_ref, pts_cur = _scene(planar=True)
    rng = np.random.default_rng(5)
    few = MIN_TRACK_INLIERS - 1
    cur = np.concatenate([pts_cur[:few], rng.uniform([0, 0], [640, 480], (150, 2))])
    desc = torch.nn.functional.normalize(torch.randn(len(cur), 64), dim=1)
    tracker = HomographyTracker()
    _update(tracker, _features(pts_ref[: len(cur)], desc), 0)
    result = _update(tracker, _features(cur, desc), 100 * MS)
    assert result.H_key_to_cur is None and result.reason == 'too_few_inliers'


def test_a_keyframe_without_a_pose_takes_the_last_measured_one(monkeypatch):
    """Not the old keyframe's: the camera moved since, and the trajectory would jump back."""
    from kp2d_core.geometry.poses import is_pose
    import kp2d_core.vo.keyframe_tracker as tracking
    import kp2d_core.vo.odometry as odometry

    tracker = HomographyTracker()
    features, camera = _random_view()
    _update(tracker, features, 0, camera)
    moved = make_pose(R_TRUE, [0.1, 0.0, 0.0])  # T_cur_key of the next frame
    relative = odometry.Relative(moved, 'essential', scaled=False)
    monkeypatch.setattr(tracking, 'relative_motion', lambda *args: relative)
    measured = _update(tracker, features, 100 * MS, camera)
    assert not measured.new_keyframe and is_pose(measured.T_world_cur)
    monkeypatch.setattr(tracking, 'relative_motion', lambda *args: None)  # no pose, and ...
    monkeypatch.setattr(tracker, 'cfg', TrackerConfig(min_keyframe_inliers=1000))
    lost = _update(tracker, features, 200 * MS, camera)  # ... too few inliers: new keyframe
    assert lost.T_world_cur is None and lost.new_keyframe
    monkeypatch.undo()
    after = _update(tracker, features, 300 * MS, camera)  # the same view as the keyframe
    assert after.key_stamp_ns == 200 * MS
    assert np.allclose(after.T_world_cur, measured.T_world_cur, atol=1e-6)
    assert np.all(np.diag(after.covariance) >= np.diag(measured.covariance))


def test_a_decided_plane_is_the_prior_of_the_keyframe_s_next_frames(monkeypatch):
    """The plane that the points off it named is the prior of the frames after it against
    the same keyframe, not an undecided frame's; a keyframe renewed on an essential matrix
    (no scale) carries the normal turned by its rotation."""
    from kp2d_core.geometry.poses import RelativePose
    import kp2d_core.vo.odometry as odometry

    priors, answers = [], []

    def decompose(H, K, pts_ref, pts_cur, prior_normal, off_plane):
        priors.append(prior_normal)
        normal, decided = answers.pop(0)
        step = make_pose(np.eye(3), [0.01, 0.0, 0.0])
        return RelativePose(step, 'homography', normal, decided=decided)

    monkeypatch.setattr(odometry, 'pose_from_homography', decompose)
    monkeypatch.setattr(odometry, 'pose_from_essential', lambda *args: None)
    tracker = HomographyTracker(TrackerConfig(min_keyframe_inliers=20))
    features, camera = _random_view()
    _update(tracker, features, 0, camera)
    wall, floor = np.array([-1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0])
    answers[:] = [(floor, False), (wall, True), (floor, False), (floor, False)]
    for i in range(1, 5):
        _update(tracker, features, i * 100 * MS, camera)
    assert priors[0] is None and priors[1] is None
    assert np.allclose(priors[2], wall) and np.allclose(priors[3], wall)
    turn = cv2.Rodrigues(np.array([0.0, 0.2, 0.0]))[0]
    essential = RelativePose(make_pose(turn, [0, 0, 1.0]), 'essential', None, 1000)
    monkeypatch.setattr(odometry, 'pose_from_essential', lambda *args: essential)
    monkeypatch.setattr(odometry, 'prefers_homography', lambda *args: False)
    monkeypatch.setattr(tracker, 'cfg', TrackerConfig(min_keyframe_inliers=1000))
    answers[:] = [(floor, False)]  # the homography's translation sizes the essential matrix's
    renewed = _update(tracker, features, 500 * MS, camera)
    assert renewed.pose_method == 'essential' and renewed.new_keyframe
    monkeypatch.setattr(odometry, 'pose_from_essential', lambda *args: None)
    monkeypatch.setattr(tracker, 'cfg', TrackerConfig(min_keyframe_inliers=20))
    answers[:] = [(floor, False)]
    _update(tracker, features, 600 * MS, camera)
    assert np.allclose(priors[-1], turn @ wall)


def _in_view(points: np.ndarray) -> np.ndarray:
    """(N,) bool: the (N, 2) pixels inside a 640x480 image."""
    return np.all((points > 0) & (points < [640, 480]), axis=1)


def _tracked_step(pts_ref: np.ndarray, pts_cur: np.ndarray):
    """The TrackResult of ``pts_cur`` tracked against ``pts_ref`` as its keyframe (random
    descriptors, the same for both frames: every point matches its partner)."""
    desc = torch.randn(len(pts_ref), 64, generator=torch.Generator().manual_seed(0))
    desc = torch.nn.functional.normalize(desc, dim=1)
    tracker = HomographyTracker(TrackerConfig(min_keyframe_inliers=20))
    _update(tracker, _features(pts_ref, desc), 0)
    return _update(tracker, _features(pts_cur, desc), 100 * MS)


def _rotation_error_deg(result, R: np.ndarray) -> float:
    """Angle (deg) between the camera rotation ``result`` tracked and the true ``R``."""
    R_cur = invert_pose(result.T_world_cur)[:3, :3]
    return float(np.degrees(np.linalg.norm(cv2.Rodrigues(R_cur @ R.T)[0])))


def _corridor(rng, planar: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pts_ref, pts_cur, R) of a camera stepping 0.15 forward and turning 0.9 deg inside a
    box corridor (walls at x = +-1, floor and ceiling at y = +-0.8, depths 2-7), or before
    a wall at depth 4; 0.3 px noise."""
    n = 300
    side, depth, s = rng.integers(0, 4, n), rng.uniform(2, 7, n), rng.uniform(-1, 1, n)
    x = np.select([side == 0, side == 1], [-1.0, 1.0], s)
    y = np.select([side == 2, side == 3], [-0.8, 0.8], 0.8 * s)
    points = np.column_stack([x * 2, y * 2, np.full(n, 4.0)] if planar else [x, y, depth])
    R = cv2.Rodrigues(np.array([0.0, 0.015, 0.0]))[0]
    ref = _project(points) + rng.normal(0, 0.3, (n, 2))
    cur = _project(points @ R.T + [0.0, 0.0, -0.15]) + rng.normal(0, 0.3, (n, 2))
    inside = _in_view(ref) & _in_view(cur)
    return ref[inside], cur[inside], R


@pytest.mark.parametrize('seed', [0, 11, 21, 45])
def test_a_corridor_step_takes_the_essential_matrix_rotation(seed):
    """After a short step down a corridor a homography still explains 85 % of the matches
    within 3 px, but its decomposition bends the rotation (by 2.0 deg for seed 0, which the
    former inlier-share rule accepted). The model choice (GRIC) takes the essential matrix;
    before a wall, the homography. It weighs the homography as sample consensus fitted it,
    not as refined: the refinement settles on one of the corridor's planes, and with seeds
    11, 21 and 45 that refined homography would have tipped GRIC to itself."""
    for planar in (False, True):
        pts_ref, pts_cur, R = _corridor(np.random.default_rng(seed), planar)
        result = _tracked_step(pts_ref, pts_cur)
        assert result.inliers.mean() > 0.8
        assert result.pose_method == ('homography' if planar else 'essential')
        assert _rotation_error_deg(result, R) < 0.5


def _plane_with_errors_along_the_motion(rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pts_ref, pts_cur, R) of a camera moving 0.12 sideways and turning 2 deg before a
    plane at depth 4: 0.3 px noise on both views, and on the current one an error along each
    point's image motion of 1 px (motion blur, Lucas-Kanade drifting along the motion)."""
    n = 300
    points = np.column_stack([rng.uniform([-2.5, -1.8], [2.5, 1.8], (n, 2)), np.full(n, 4.0)])
    R = cv2.Rodrigues(np.array([0.01, 0.03, 0.02]))[0]
    ref_true, cur_true = _project(points), _project(points @ R.T + [0.12, 0.03, 0.0])
    flow = cur_true - ref_true
    along = flow / np.linalg.norm(flow, axis=1, keepdims=True) * rng.normal(0, 1.0, (n, 1))
    ref = ref_true + rng.normal(0, 0.3, (n, 2))
    cur = cur_true + rng.normal(0, 0.3, (n, 2)) + along
    inside = _in_view(ref) & _in_view(cur)
    return ref[inside], cur[inside], R


@pytest.mark.parametrize('seed', [0, 1, 5, 6])
def test_errors_along_the_motion_on_a_plane_keep_the_homography(seed):
    """An essential matrix absorbs every error along its epipolar lines; on a plane seen
    under motion blur its residuals put the noise too low, and GRIC took it (rotation
    0.23-0.32 deg off for these seeds; the homography's 0.03-0.05). Until the keyframe has
    seen depth the noise is taken to be at least PLANAR_GRIC_SIGMA_PX; the corridor step
    above still takes the essential matrix."""
    pts_ref, pts_cur, R = _plane_with_errors_along_the_motion(np.random.default_rng(seed))
    result = _tracked_step(pts_ref, pts_cur)
    assert result.pose_method == 'homography'
    assert _rotation_error_deg(result, R) < 0.15


def test_twist_of_consecutive_poses():
    from kp2d_core.geometry.poses import make_pose, twist

    angle = 0.1
    R = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    T0 = make_pose(np.eye(3), np.zeros(3))
    T1 = make_pose(R, np.array([0.5, 0.0, 0.0]))
    linear, angular = twist(T0, T1, 0.5)
    assert np.allclose(angular, [0, 0, 0.2])  # rad/s about z
    assert np.allclose(R @ linear, [1.0, 0, 0])  # 1 m/s along world x, expressed in the body
