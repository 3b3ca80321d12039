"""Hybrid tracking: Lucas-Kanade between frames, the network where it is needed, and ids that
come back after an occlusion."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kp2d_core.data.samples import render_view
from kp2d_core.geometry.camera import CameraModel
from kp2d_core.geometry.coordinates import warp_points
from kp2d_core.geometry.image_points import ImagePoints
from kp2d_core.geometry.lens_warp import frame_map, resample_into
from kp2d_core.images import read_image
from kp2d_core.inference.extractor import KeypointExtractor
from kp2d_core.inference.features import Features
from kp2d_core.inference.probe import sample_photo_path
from kp2d_core.model.files import CheckpointNotFoundError, bundled_weights_path
from kp2d_core.vo import frame_pipeline, hybrid_tracks
from kp2d_core.vo.detection_policy import EVERY_FRAME, DetectionPolicy, HybridConfig
from kp2d_core.vo.frame_pipeline import (
    FramePipeline,
    PipelineConfig,
    _frame_kind,
    recovery_weights,
)
from kp2d_core.vo.hybrid_tracks import HybridTracker, TrackSet
from kp2d_core.vo.keyframe_tracker import (
    IN_DEPTH_KEYFRAMES,
    HomographyTracker,
    TrackerConfig,
    _Keyframe,
    _renewal,
    _renewal_ratio,
)
from kp2d_core.vo.lk_propagation import frame_motion, propagate
from kp2d_core.vo.odometry import Matched, Relative, Scene

HW = (240, 320)
FRAME_NS = 66_666_667  # 15 Hz


def _views(count: int, start: float = 0.1, speed: float = 0.004):
    photo = read_image(sample_photo_path())
    return zip(*(render_view(photo, HW, start + speed * i) for i in range(count)))


def _empty_frame(hw: tuple[int, int] = (48, 64)) -> tuple[Features, ImagePoints]:
    """A frame of the size ``hw`` without keypoints: (features, points without a camera)."""
    features = Features(np.zeros((0, 2)), np.zeros(0), np.zeros((0, 8)), hw)
    return features, ImagePoints.of(np.zeros((0, 2)), None)


def _track_set(xy: np.ndarray, ids: np.ndarray | None = None, stamps=None) -> TrackSet:
    """Tracks at the (N, 2) pixels ``xy``: ids 0..N-1 unless given, one frame old, all the
    same descriptor and score, seen at stamp 0 unless given."""
    count = len(xy)
    return TrackSet(
        np.arange(count, dtype=np.uint64) if ids is None else ids,
        np.ones(count, np.int64),
        np.asarray(xy, np.float64),
        np.ones((count, 4)) / 2,
        np.ones(count, np.float32),
        np.zeros(count, np.int64) if stamps is None else stamps,
    )


def test_lk_follows_a_known_homography_and_drops_what_it_loses():
    photo = read_image(sample_photo_path())
    (image0, H0), (image1, H1) = render_view(photo, HW, 0.1), render_view(photo, HW, 0.105)
    gray0, gray1 = (cv2.cvtColor(i, cv2.COLOR_BGR2GRAY) for i in (image0, image1))
    corners = cv2.goodFeaturesToTrack(gray0, 300, 0.01, 8).reshape(-1, 2).astype(np.float64)
    truth = warp_points(H1 @ np.linalg.inv(H0), corners)
    # A region of the second frame is replaced (an occluder): what was there is lost.
    occluder = np.random.default_rng(0).integers(0, 255, (100, 120), np.uint8)
    gray1[20:120, 30:150] = cv2.GaussianBlur(occluder, (0, 0), 1.5)
    moved, ok = propagate(gray0, gray1, corners)
    hidden = (truth[:, 0] > 36) & (truth[:, 0] < 144) & (truth[:, 1] > 26) & (truth[:, 1] < 114)
    near = (truth[:, 0] > 18) & (truth[:, 0] < 162) & (truth[:, 1] > 8) & (truth[:, 1] < 132)
    inside = (truth > 12).all(axis=1) & (truth < [HW[1] - 12, HW[0] - 12]).all(axis=1)
    visible = ~near & inside  # LK's 21x21 window sees none of the occluder
    assert hidden.sum() > 10 and visible.sum() > 100
    assert ok[visible].mean() > 0.9
    assert np.median(np.linalg.norm(moved[visible & ok] - truth[visible & ok], axis=1)) < 0.1
    assert ok[hidden].mean() < 0.2  # the forward-backward check drops the occluded points
    assert np.array_equal(moved[~ok], corners[~ok])  # a lost point keeps its old position


def test_lk_guided_by_the_frame_motion_stays_on_points_of_a_rotating_view():
    """A view that turns by 10 degrees and grows by 5 % between two frames: Lucas-Kanade's
    window (a translation) alone lands about a pixel off; guided by the frame's motion it
    keeps more of the points, within a tenth of a pixel."""
    photo = read_image(sample_photo_path())
    gray0 = cv2.cvtColor(render_view(photo, HW, 0.1)[0], cv2.COLOR_BGR2GRAY)
    H = np.vstack([cv2.getRotationMatrix2D((HW[1] / 2, HW[0] / 2), 10.0, 1.05), [0, 0, 1]])
    H[:2, 2] += (12.0, -8.0)
    gray1 = cv2.warpPerspective(gray0, H, HW[::-1], flags=cv2.INTER_LINEAR)
    corners = cv2.goodFeaturesToTrack(gray0, 300, 0.01, 8).reshape(-1, 2).astype(np.float64)
    truth = warp_points(H, corners)
    inside = (truth > 12).all(axis=1) & (truth < [HW[1] - 12, HW[0] - 12]).all(axis=1)
    errors = {}
    for guided in (False, True):
        moved, ok = propagate(gray0, gray1, corners, guided=guided)
        kept = ok & inside
        errors[guided] = np.median(np.linalg.norm(moved[kept] - truth[kept], axis=1))
        if guided:
            assert ok[inside].mean() > 0.75
    assert errors[False] > 0.5 and errors[True] < 0.1, errors


def test_lk_guided_by_a_predicted_motion_follows_a_turn_it_cannot_estimate():
    """Frame drops: the view turns by 25 degrees between two frames. Plain Lucas-Kanade
    cannot estimate that motion (the guide fails) and keeps hardly a point right; given the
    last frame's motion (a turn of 21 degrees) as the prediction, the motion is estimated in
    the previous frame warped by it, and most points are kept within a tenth of a pixel."""
    photo = read_image(sample_photo_path())
    gray0 = cv2.cvtColor(render_view(photo, HW, 0.1)[0], cv2.COLOR_BGR2GRAY)

    def turn(degrees):
        centre = (HW[1] / 2, HW[0] / 2)
        return np.vstack([cv2.getRotationMatrix2D(centre, degrees, 1.0), [0, 0, 1]])

    H = turn(25.0)
    gray1 = cv2.warpPerspective(gray0, H, HW[::-1], borderMode=cv2.BORDER_REFLECT)
    corners = cv2.goodFeaturesToTrack(gray0, 300, 0.01, 8).reshape(-1, 2).astype(np.float64)
    truth = warp_points(H, corners)
    inside = (truth > 12).all(axis=1) & (truth < [HW[1] - 12, HW[0] - 12]).all(axis=1)
    assert inside.sum() > 100 and frame_motion(gray0, gray1, corners[inside]) is None
    moved, ok = propagate(gray0, gray1, corners)
    assert (ok & (np.linalg.norm(moved - truth, axis=1) < 0.5))[inside].mean() < 0.1
    moved, ok = propagate(gray0, gray1, corners, predicted=turn(21.0))
    assert ok[inside].mean() > 0.9
    assert np.median(np.linalg.norm(moved[ok & inside] - truth[ok & inside], axis=1)) < 0.1
    unguided, _ = propagate(gray0, gray1, corners, guided=False, predicted=turn(21.0))
    assert np.array_equal(unguided, propagate(gray0, gray1, corners, guided=False)[0])


def test_the_policy_runs_the_network_only_when_needed():
    policy = DetectionPolicy(HybridConfig(mode='hybrid', detect_interval=4, min_tracks=50))
    second = 10**9
    assert policy.decide(0, 100.0, 0) == 'first_frame'
    policy.observed(0, 100.0, True)
    reasons = []
    for i in range(1, 9):
        reason = policy.decide(i * second // 10, 100.0, 200)
        reasons.append(reason)
        policy.observed(i * second // 10, 100.0, bool(reason))
    assert reasons == ['', '', '', 'interval', '', '', '', 'interval']
    assert policy.decide(9 * second // 10, 100.0, 20) == 'few_tracks'
    assert policy.decide(2 * second, 100.0, 200) == 'frame_gap'  # a dropped second
    assert policy.decide(9 * second // 10, 150.0, 200) == 'brightness'
    policy.request('keyframe')
    assert policy.decide(9 * second // 10, 100.0, 200) == 'keyframe'


class CountingExtractor:
    """The bundled model, counting its calls."""

    def __init__(self, extractor) -> None:
        self.extractor, self.calls = extractor, 0
        self.cfg = extractor.cfg

    def extract(self, image):
        self.calls += 1
        return self.extractor.extract(image)


@pytest.fixture(scope='module')
def bundled():
    return FramePipeline.from_config().extractor


def test_the_network_runs_on_the_frames_the_policy_names(bundled):
    counting = CountingExtractor(bundled)
    hybrid = HybridConfig(mode='hybrid', detect_interval=5)
    pipeline = FramePipeline(counting, hybrid=hybrid)
    images, _ = _views(20)
    reasons = [
        pipeline.process(image, (i + 1) * FRAME_NS).detection for i, image in enumerate(images)
    ]
    assert counting.calls == sum(1 for r in reasons if r)
    assert reasons[0] == 'first_frame' and 3 <= counting.calls <= 8, reasons
    allowed = {'first_frame', 'interval', 'keyframe', 'few_tracks', 'lk_failed', ''}
    assert set(reasons) <= allowed


def test_where_lucas_kanade_failed_the_recovery_network_runs_smaller(bundled, monkeypatch):
    """A jump of the view Lucas-Kanade cannot follow (the camera turned half a circle in a
    dropped second) loses its tracks: the recovery network runs on that frame at
    ``recovery_scale`` of its input size, its keypoints in the frame's pixels; every other
    detection frame runs the tracking network at full size."""
    photo = read_image(sample_photo_path())
    positions = [0.1, 0.104, 0.108, 0.112, 0.5, 0.504, 0.508]
    images = [render_view(photo, HW, position)[0] for position in positions]
    images[4:] = [cv2.rotate(image, cv2.ROTATE_180) for image in images[4:]]
    calls = []

    def recording(name: str) -> KeypointExtractor:
        extractor = KeypointExtractor(bundled.backend, bundled.cfg)
        run = extractor.extract

        def extract(image, keep_dense=False, scale=1.0):
            calls.append((name, scale))
            return run(image, keep_dense, scale)

        monkeypatch.setattr(extractor, 'extract', extract)
        return extractor

    hybrid = HybridConfig(mode='hybrid', recovery_scale=0.5)
    pipeline = FramePipeline(recording('tracking'), hybrid=hybrid, recovery=recording('light'))
    reasons, widths = [], []
    for index, image in enumerate(images):
        frame = pipeline.process(image, (index + 1) * FRAME_NS)
        reasons.append(frame.detection)
        widths.append(frame.features.keypoints[:, 0].max())
    assert reasons[4] == 'lk_failed', reasons
    expected = [('light', 0.5) if r == 'lk_failed' else ('tracking', 1.0) for r in reasons if r]
    assert calls == expected
    assert widths[4] > 0.8 * HW[1] and len(pipeline.hybrid.live) >= 100  # the frame's pixels
    with pytest.raises(ValueError, match='recovery_scale'):
        HybridConfig(recovery_scale=0.05)
    with pytest.raises(ValueError, match='recovery_model'):
        HybridConfig(recovery_model='tiny')


def test_the_light_model_recovers_only_beside_the_bundled_default_model(tmp_path):
    """'auto' pairs the bundled default model with the light one, whose descriptors match
    its; any other tracking network recovers by itself, and asking for 'light' beside one is
    an error that names the reason."""
    default, light = bundled_weights_path('default'), bundled_weights_path('light')
    assert recovery_weights('auto', default) == recovery_weights('light', default) == light
    assert recovery_weights('same', default) is None
    assert recovery_weights('auto', light) is None and recovery_weights('light', light) is None
    own = tmp_path / 'retrained.pt'
    assert recovery_weights('auto', own) is None and recovery_weights('same', own) is None
    with pytest.raises(ValueError, match='bundled default model'):
        recovery_weights('light', own)
    pipeline = FramePipeline.from_config()
    assert pipeline.recovery is not None and pipeline.recovery.weights == light
    assert FramePipeline.from_config(variant='light').recovery is None
    every_frame = PipelineConfig(hybrid=EVERY_FRAME)
    assert FramePipeline.from_config(every_frame).recovery is None
    same = PipelineConfig(hybrid=HybridConfig(recovery_model='same'))
    assert FramePipeline.from_config(same).recovery is None


def test_without_the_bundled_default_model_other_weights_recover_by_themselves(
    tmp_path, monkeypatch
):
    """An install that ships the light model but not the default one: the user's own
    weights recover by themselves under 'auto' (the default model's lookup raised before),
    and 'light' beside them is refused for its reason."""
    light = bundled_weights_path('light')

    def light_only(variant):
        if variant == 'light':
            return light
        raise CheckpointNotFoundError(f'bundled {variant} weights not found')

    monkeypatch.setattr(frame_pipeline, 'bundled_weights_path', light_only)
    own = tmp_path / 'retrained.pt'
    assert recovery_weights('auto', own) is None
    assert recovery_weights('auto', light) is None
    with pytest.raises(ValueError, match='bundled default model'):
        recovery_weights('light', own)


def test_ids_come_back_after_a_blackout_and_never_land_on_another_point(bundled):
    """15 frames, one second of black frames (the lens covered) while the camera moves on,
    15 frames again: nine in ten tracks alive before the blackout resume with their ids
    (three in four where only detections bring them back: the network does not find every
    point again where it was), each within 3 px of where the exact homography puts the point
    it had."""
    images, to_view = _views(45, speed=0.002)
    images = list(images)
    for i in range(15, 30):
        images[i] = np.zeros_like(images[i])
    pipeline = FramePipeline(bundled, hybrid=HybridConfig(mode='hybrid'))
    seen: dict[int, tuple[int, np.ndarray]] = {}
    wrong, before, resumed = 0, set(), set()
    for index, image in enumerate(images):
        tracks = pipeline.process(image, (index + 1) * FRAME_NS).tracks
        if index == 14:
            before = set(tracks.ids.tolist())
        for track_id, xy in zip(tracks.ids.tolist(), tracks.xy):
            if track_id in seen:
                last, last_xy = seen[track_id]
                expected = warp_points(
                    to_view[index] @ np.linalg.inv(to_view[last]), last_xy[None]
                )
                wrong += int(np.linalg.norm(expected[0] - xy) > 3.0)
            seen[track_id] = (index, xy)
            if index >= 30 and track_id in before:
                resumed.add(track_id)
        if 15 <= index < 30:
            assert len(tracks) == 0  # nothing is tracked on black frames
    assert len(before) > 100
    assert len(resumed) >= 0.9 * len(before), (len(resumed), len(before))
    assert wrong == 0


def _renewals(pipeline: FramePipeline, images) -> dict[str, int]:
    """Run ``images`` (a plane, no camera: no depth) in hybrid mode; check that a keyframe
    gives way exactly when the network ran on the frame for a keyframe, when its inliers fell
    below the hybrid share of its first frame's (or the minimum) on a frame the network ran
    on, or when they moved further than the hybrid shift from it; that on a frame Lucas-Kanade
    carried alone it waits instead (with at least the minimum of inliers) and the next frame
    runs the network; and count the renewals by reason."""
    cfg = pipeline.tracker.cfg
    ratio, shift_px = cfg.planar_keyframe_inlier_ratio, cfg.max_keyframe_shift_px
    first: dict[int, int] = {}
    renewed = {'inliers': 0, 'shift': 0, 'waits': 0, 'for_keyframe': 0}
    waited = False
    for index, image in enumerate(images):
        frame = pipeline.process(image, (index + 1) * FRAME_NS)
        track, kind = frame.track, _frame_kind(frame.detection)
        assert not waited or frame.detection, index  # the frame after a wait runs the network
        waited = track.waits
        if track.H_key_to_cur is None:
            continue
        reference = first.setdefault(track.key_stamp_ns, track.num_inliers)
        below = track.num_inliers < max(ratio * reference, cfg.min_keyframe_inliers)
        moved = track.pts_cur[track.inliers] - track.pts_key[track.inliers]
        far = np.median(np.linalg.norm(moved, axis=1)) > shift_px
        waits = below and kind == 'carried' and track.num_inliers >= cfg.min_keyframe_inliers
        assert track.waits == (waits and kind != 'for_keyframe'), (index, track.num_inliers)
        expected = kind == 'for_keyframe' or (below and not waits) or far
        assert track.new_keyframe == expected, (index, kind, track.num_inliers, reference)
        renewed['for_keyframe'] += int(kind == 'for_keyframe')
        renewed['waits'] += int(track.waits)
        renewed['inliers'] += int(track.new_keyframe and below and kind == 'detected')
        renewed['shift'] += int(track.new_keyframe and far and not below and kind == 'carried')
    return renewed


def test_hybrid_keyframes_give_way_once_a_quarter_of_their_inliers_is_lost_or_far(bundled):
    """Lucas-Kanade keeps tracks matched to the keyframe long after descriptor matches would
    have gone: in hybrid mode a keyframe gives way at 75 % of its first frame's inliers, and
    once its inliers moved ``keyframe_shift_px`` (median) from it. For want of inliers it
    gives way only to a frame the network ran on: on a frame Lucas-Kanade carried alone it
    waits, and the next frame runs the network and becomes the keyframe."""
    hybrid = HybridConfig(mode='hybrid')
    ratio = hybrid.keyframe_inlier_ratio
    pipeline = FramePipeline(bundled, hybrid=hybrid)
    assert ratio == 0.75 and pipeline.tracker.cfg.planar_keyframe_inlier_ratio == ratio
    assert pipeline.tracker.cfg.max_keyframe_shift_px == hybrid.keyframe_shift_px == 20.0
    pipeline.configure(pipeline.config)
    assert pipeline.tracker.cfg.planar_keyframe_inlier_ratio == ratio
    assert pipeline.tracker.cfg.keyframe_inlier_ratio == 0.5  # in a scene with depth
    images, _ = _views(40, speed=0.015)  # tracks leave the view: the inliers fall
    assert _renewals(pipeline, images)['shift'] >= 1
    unlimited = HybridConfig(mode='hybrid', keyframe_shift_px=10_000.0)
    counts = _renewals(FramePipeline(bundled, hybrid=unlimited), images)
    assert counts['waits'] >= 1 and counts['for_keyframe'] >= counts['waits'], counts
    every_frame = FramePipeline(bundled, hybrid=EVERY_FRAME)
    assert every_frame.tracker.cfg.keyframe_inlier_ratio == 0.5
    assert every_frame.tracker.cfg.planar_keyframe_inlier_ratio is None
    assert every_frame.tracker.cfg.max_keyframe_shift_px is None
    with pytest.raises(ValueError, match='keyframe_shift_px'):
        HybridConfig(keyframe_shift_px=0.0)
    with pytest.raises(ValueError, match='max_keyframe_shift_px'):
        TrackerConfig(max_keyframe_shift_px=-1.0)


def _renewal_after(cfg, shift_px=0.0, inliers=100, kind='detected', **state):
    """What a keyframe (100 inliers on its first frame) does after a frame whose first
    ``inliers`` of 100 matches are inliers, moved ``shift_px`` from it."""
    key_xy = np.random.default_rng(0).uniform(0, 600, (100, 2))
    features, points = _empty_frame((480, 640))
    key = _Keyframe(features, points, 0, np.eye(4), np.zeros(6), reference_inliers=100)
    for name, value in state.items():
        setattr(key, name, value)
    kept = np.arange(100) < inliers
    m = Matched(key_xy, key_xy + (shift_px, 0.0), np.arange(100), np.arange(100), kept)
    return _renewal(cfg, key, m, kind)


def test_a_keyframe_gives_way_for_its_distance_only_where_no_depth_was_seen() -> None:
    """Renewed for distance in a corridor, keyframes too young to show the depth kept the
    homography's poses, degrees off (docs/hybrid_tracking.md): only a keyframe of a scene
    without depth gives way once its inliers moved ``max_keyframe_shift_px`` from it."""
    cfg = TrackerConfig(planar_keyframe_inlier_ratio=0.75, max_keyframe_shift_px=20.0)
    deep = dict(in_depth=IN_DEPTH_KEYFRAMES, scene=Scene(deep=True))
    assert _renewal_after(cfg, 25.0) == 'far'
    assert _renewal_after(cfg, 15.0) == 'stays'
    assert _renewal_after(cfg, 15.0, inliers=70) == 'inliers'  # below 75 % of the first's
    assert _renewal_after(cfg, 25.0, depth_seen=True) == 'stays'
    assert _renewal_after(cfg, 25.0, in_depth=1, scene=Scene(deep=True)) == 'stays'
    assert _renewal_after(cfg, 25.0, **deep) == 'stays'
    assert _renewal_after(cfg, 25.0, inliers=70, **deep) == 'stays'  # 0.5 in depth
    assert _renewal_after(cfg, 25.0, inliers=40, **deep) == 'inliers'
    cfg = TrackerConfig(planar_keyframe_inlier_ratio=0.75)
    assert _renewal_after(cfg, 200.0) == 'stays'  # no distance limit outside hybrid mode


def test_a_keyframe_without_depth_is_made_only_from_a_frame_the_network_ran_on() -> None:
    """A keyframe made from a frame Lucas-Kanade carried alone holds only the tracks it kept:
    where the next frames lost them (fast motion, blur), they had a few tracks and stale
    descriptors to match, and one pose 4 deg off (docs/hybrid_tracking.md). Where no depth
    was seen, such a frame leaves the keyframe in place ('waits', down to the minimum of
    inliers), and a frame the network ran on for a keyframe takes its place."""
    cfg = TrackerConfig(planar_keyframe_inlier_ratio=0.75, min_keyframe_inliers=40)
    assert _renewal_after(cfg, inliers=70, kind='carried') == 'waits'
    assert _renewal_after(cfg, inliers=39, kind='carried') == 'inliers'  # below the minimum
    assert _renewal_after(cfg, inliers=70, kind='detected') == 'inliers'
    assert _renewal_after(cfg, inliers=90, kind='carried') == 'stays'
    assert _renewal_after(cfg, inliers=90, kind='for_keyframe') == 'for_keyframe'
    for depth in (dict(depth_seen=True), dict(scene=Scene(deep=True))):
        assert _renewal_after(cfg, inliers=70, kind='carried', **depth) == 'inliers'
        assert _renewal_after(cfg, inliers=90, kind='for_keyframe', **depth) == 'stays'
    assert _frame_kind('') == 'carried' and _frame_kind('interval') == 'detected'
    assert _frame_kind('keyframe') == _frame_kind('lk_failed') == 'for_keyframe'
    with pytest.raises(ValueError, match='kind'):
        HomographyTracker(cfg).update(*_empty_frame(), 0, kind='network')


def test_keyframes_in_a_scene_with_depth_give_way_at_the_every_frame_share() -> None:
    # Renewed at 0.75 in a corridor (two keyframes in a row made from an essential matrix),
    # the hybrid mode's rotation drifted 2.5x more than at 0.5 (docs/hybrid_tracking.md); one such
    # keyframe among planar ones (fast motion, frame drops) does not count.
    cfg = TrackerConfig(planar_keyframe_inlier_ratio=0.75)
    assert _renewal_ratio(cfg, deep=False) == 0.75
    assert _renewal_ratio(cfg, deep=True) == cfg.keyframe_inlier_ratio == 0.5
    assert _renewal_ratio(TrackerConfig(), deep=False) == 0.5
    tracker = HomographyTracker(cfg)
    features, points = _empty_frame()
    key = _Keyframe(features, points, 0, np.eye(4), np.zeros(6))
    runs = []
    for stamp, method in enumerate(['essential', 'homography', 'essential', 'pnp', 'essential']):
        relative = Relative(np.eye(4), method, deep=method != 'homography')
        key = tracker._successor(
            key, features, points, stamp + 1, np.eye(4), np.eye(6), relative, None
        )
        runs.append(key.in_depth)
    assert runs == [1, 0, 1, 2, 3]
    assert IN_DEPTH_KEYFRAMES == 2  # so a single keyframe made with depth keeps 0.75
    with pytest.raises(ValueError, match='planar_keyframe_inlier_ratio'):
        TrackerConfig(planar_keyframe_inlier_ratio=1.5)


def test_a_scene_with_depth_stays_so_while_its_points_place_the_frames() -> None:
    """Once two keyframes in a row were made with depth, a frame the keyframe's points of firm
    depth placed (a homography's rotation with their translation) keeps the scene's depth when
    it becomes the keyframe: made flat, a corridor's next homographies turned the poses by 1-4
    degrees per frame (docs/hybrid_tracking.md). A homography not placed by them, or a scene
    whose depth is not yet established, still makes the keyframe flat."""
    tracker = HomographyTracker(TrackerConfig())
    features, points = _empty_frame()
    key = _Keyframe(features, points, 0, np.eye(4), np.zeros(6))
    steps = [
        ('essential', True, True),
        ('essential', True, True),
        ('homography', False, True),  # placed by the points of firm depth
        ('homography', False, False),
        ('essential', True, True),
        ('homography', False, True),  # depth seen by one keyframe only
    ]
    runs, deep = [], []
    for stamp, (method, seen, placed) in enumerate(steps):
        relative = Relative(np.eye(4), method, deep=seen, placed=placed)
        key = tracker._successor(
            key, features, points, stamp + 1, np.eye(4), np.eye(6), relative, None
        )
        runs.append(key.in_depth)
        deep.append(key.scene.deep)
    assert runs == [1, 2, 3, 0, 1, 0]
    assert deep == [True, True, True, False, True, False]


def _carried(monkeypatch, lost: int) -> tuple[np.ndarray, np.ndarray]:
    """Carry 300 tracks through a camera moving sideways past two planes (200 points move 4 px,
    the nearer plane's 100 move 10 px, along the same epipolar lines), of which Lucas-Kanade
    loses ``lost``, half on each plane; 20 of the far plane's points it moves 5 px off, along
    their epipolar line. (carried (300,) bool, plane (300,) int: 0 far, 1 near, 2 off)."""
    rng = np.random.default_rng(3)
    xy = rng.uniform([10, 10], [310, 230], (300, 2))
    plane = np.repeat([0, 1], [200, 100])
    moved = xy + np.where(plane[:, None] == 1, [10.0, 0.0], [4.0, 0.0])
    moved[180:200, 0] += 5.0  # wrong, yet on their epipolar lines
    plane[180:200] = 2
    ok = np.ones(300, bool)
    ok[: lost // 2] = ok[200 : 200 + lost // 2] = False  # half of each plane's losses

    def propagate(previous, current, points, predicted=None):
        assert np.array_equal(points, xy)
        return moved, ok

    monkeypatch.setattr(hybrid_tracks, 'propagate', propagate)
    tracker = HybridTracker(HybridConfig(mode='hybrid'))
    tracker.gray = np.zeros(HW, np.uint8)
    _, carried = tracker._carry(_track_set(xy), np.zeros(HW, np.uint8), None)
    return carried, plane


def test_where_lucas_kanade_failed_its_points_must_fit_the_frame_homography(monkeypatch):
    """A fundamental matrix admits a point anywhere along its epipolar line. On an ordinary
    frame the tracks of both planes are carried (parallax within ``max_parallax_px``); on a
    frame where Lucas-Kanade lost more than ``max_lost_share`` of the tracks (a gain swing
    under moving shadows: 47 of the 95 wrong ids of ``poster_shadows`` were such points,
    docs/hybrid_tracking.md), only the points that fit the frame's homography."""
    carried, plane = _carried(monkeypatch, lost=40)  # 13 %: an ordinary frame
    assert carried.sum() == 260  # both planes and the wrong points on their epipolar lines
    carried, plane = _carried(monkeypatch, lost=100)  # 33 %: Lucas-Kanade failed
    assert carried.sum() == 130 and (plane[carried] == 0).all()  # the far plane's right ones


def test_the_lost_tracks_remembered_are_the_newest_within_the_window_and_the_cap() -> None:
    """Re-identification matches every remembered lost track on each detection frame: the
    pool keeps the tracks lost within ``reid_window_s``, the newest ``reid_max_lost`` of
    them, and the snapshots of only the moments those were lost at."""
    second = 10**9
    tracker = HybridTracker(HybridConfig(mode='hybrid', reid_window_s=2.0, reid_max_lost=5))
    for frame in range(6):  # three tracks lost on every frame, one frame a second
        ids = np.arange(3 * frame, 3 * frame + 3, dtype=np.uint64)
        stamps = np.full(3, frame * second, np.int64)
        live = _track_set(np.ones((3, 2)), ids, stamps)
        tracker._lose(live, np.zeros(3, bool), None, False)
        tracker._forget(frame * second)
        assert len(tracker.lost) <= 5
    # Frames 3-5 are within 2 s of frame 5; of their 9 tracks the newest 5 stay: all of
    # frame 5's and the first two of frame 4's.
    assert sorted(tracker.lost.ids.tolist()) == [12, 13, 15, 16, 17]
    assert sorted(tracker.event_stamps.values()) == [4 * second, 5 * second]
    assert len(tracker.snapshots) == 2
    with pytest.raises(ValueError, match='reid_max_lost'):
        HybridConfig(reid_max_lost=-1)


def test_the_snapshots_of_a_loss_follow_a_camera_change() -> None:
    """The pixels of the tracks live at a loss are computed once, in the camera's geometry
    frame; when CameraInfo arrives later (or changes) they are computed again from the raw
    pixels, so re-identification compares positions in one frame."""
    K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
    camera = CameraModel.create(K, [-0.3, 0.1, 0, 0, 0], 'plumb_bob', image_hw=HW)
    tracker = HybridTracker(HybridConfig(mode='hybrid'))
    xy = np.array([[10.0, 20.0], [300.0, 220.0], [160.0, 120.0]])
    live = _track_set(xy)
    tracker._lose(live, np.array([True, False, True]), None, False)
    assert np.array_equal(tracker.snapshots[0].pixels, xy)  # no camera: the raw pixels
    tracker._snapshots_for(camera)
    expected = ImagePoints.of(xy, camera).pixels
    assert np.allclose(tracker.snapshots[0].pixels, expected)
    assert np.abs(expected - xy).max() > 1.0  # the lens model moved them
    tracker._lose(live, np.array([False, True, True]), camera, False)
    assert np.allclose(tracker.snapshots[1].pixels, expected)


def _blackout_candidates(anchors: int):
    """A tracker that lost 40 tracks at once (ids 100-139, ``anchors`` more carried on) and
    what they look like 6 px away: 20 found by mutual nearest descriptors; 15 with a decoy
    elsewhere whose descriptor is nearer than their own detection's (mutual matching pairs
    them with the decoy, which the motion refuses); 5 back with descriptors beyond the gate.
    Returns the tracker and ``_reidentify``'s other arguments."""
    rng = np.random.default_rng(7)
    grid = np.stack(np.meshgrid(np.arange(8), np.arange(5 + 4)), -1).reshape(-1, 2)
    xy = 30.0 + 35.0 * grid[: 40 + anchors] + rng.uniform(-3, 3, (40 + anchors, 2))
    descriptors = rng.standard_normal((40 + anchors, 16))
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    tracker = HybridTracker(HybridConfig(mode='hybrid'))
    live = _track_set(xy, np.arange(100, 140 + anchors, dtype=np.uint64))
    live.descriptors = descriptors
    tracker._lose(live, np.arange(40 + anchors) >= 40, None, False)
    seen = descriptors[:40] + 0.08 * rng.standard_normal((40, 16))
    seen[35:] = rng.standard_normal((5, 16))  # beyond the gate
    decoys = rng.uniform(0, 300, (15, 2)) + [400.0, 0.0]  # far from every prediction
    now_xy = np.concatenate([xy[:40] + [6.0, -4.0], decoys])
    now_desc = np.concatenate([seen, descriptors[20:35]])
    now_desc /= np.linalg.norm(now_desc, axis=1, keepdims=True)
    features = Features(now_xy, np.ones(55, np.float32), now_desc, (480, 720))
    alive = (live.ids[40:], xy[40:] + [6.0, -4.0])
    return tracker, (np.arange(55), features, ImagePoints.of(now_xy, None), alive)


def test_lost_tracks_that_mutual_matching_misses_are_found_where_their_motion_puts_them():
    """Where none of the tracks of a loss is alive again (a blackout), the motion of the 20
    that mutual matching found finds the 15 with decoys at their detections, and takes
    neither a decoy nor a point beyond the gate. Where tracks of that moment were carried on
    (anchors), the lost ones were lost for a cause: only mutual matches come back."""
    tracker, arguments = _blackout_candidates(anchors=0)
    lost_idx, rows, _ = tracker._reidentify(*arguments)
    assert sorted(lost_idx.tolist()) == list(range(35))
    assert np.array_equal(rows, lost_idx)  # each at its own detection, no decoy
    tracker, arguments = _blackout_candidates(anchors=30)
    lost_idx, rows, _ = tracker._reidentify(*arguments)
    assert sorted(lost_idx.tolist()) == list(range(20))
    assert np.array_equal(rows, lost_idx)


def test_against_anchors_a_re_identified_point_must_sit_close_to_their_motion():
    """Tracks carried through gain swings drift by pixels over seconds: against the motion of
    the tracks of its moment alive again, a re-identified point must be within
    ``REID_ANCHORED_PX`` (1.5 px) of where that motion puts it, not the 2 px a blackout's
    candidates are held to among themselves."""
    grid = np.stack(np.meshgrid(np.arange(6), np.arange(6)), -1).reshape(-1, 2)
    xy = 20.0 + 40.0 * grid.astype(np.float64)
    tracker = HybridTracker(HybridConfig(mode='hybrid'))
    tracker._lose(_track_set(xy), np.arange(36) >= 4, None, False)  # 4 lost, 32 carried on
    shift = np.array([5.0, 3.0])
    alive = (np.arange(4, 36, dtype=np.uint64), xy[4:] + shift)
    off = np.array([[1.2, 0.0], [0.0, -1.4], [1.7, 0.0], [0.0, 1.9]])
    near, motion = tracker._agree(0, xy[:4], xy[:4] + shift + off, alive)
    assert near.tolist() == [True, True, False, False]
    assert motion is None  # anchors' motion finds no other lost track


LENS = CameraModel.create(
    [[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]], [-0.3, 0.1, 0, 0, 0], 'plumb_bob', image_hw=HW
)


def _lost_in_a_blackout(camera: CameraModel | None, keep_frame: bool):
    """A tracker that lost 60 corners of a view at once (Lucas-Kanade failed: a blackout),
    the view after it (turned by 4 degrees, shifted by 9 px in the geometry frame, through
    ``camera``'s lens; its top left quarter covered), the motion between the two views and the
    exact raw pixels of the corners after it."""
    photo = read_image(sample_photo_path())
    image0, _ = render_view(photo, HW, 0.1)
    gray0 = cv2.cvtColor(image0, cv2.COLOR_BGR2GRAY)
    angle = np.deg2rad(4.0)
    motion = np.array(
        [[np.cos(angle), -np.sin(angle), 9.0], [np.sin(angle), np.cos(angle), -6.0], [0, 0, 1]]
    )
    gray1, _ = resample_into(gray0, camera, np.linalg.inv(motion), HW)
    gray1[: HW[0] // 2, : HW[1] // 2] = 90  # an occluder now covers what was there
    corners = cv2.goodFeaturesToTrack(gray0, 60, 0.01, 10).reshape(-1, 2).astype(np.float64)
    tracker = HybridTracker(HybridConfig(mode='hybrid'))
    tracker.gray = gray0
    live = _track_set(corners)
    tracker._lose(live, np.zeros(len(corners), bool), camera, keep_frame)
    tracker.lost = live
    tracker.lost.stamps = np.zeros(len(corners), np.int64)  # loss event 0
    return tracker, gray1, motion, frame_map(camera, motion, corners)


@pytest.mark.parametrize('camera', [None, LENS], ids=['pinhole', 'plumb_bob'])
def test_lost_tracks_whose_detections_are_missing_are_found_by_their_patches(camera):
    """After a blackout the network detects only some of the points it had before; the
    motion those found again give puts the others where Lucas-Kanade finds their patches from
    the frame before the loss (mapped through the lens): within 0.1 px of the truth, none
    where the view changed (an occluder), none under a motion 3 px off, none where that frame
    was not kept."""
    tracker, gray, motion, truth = _lost_in_a_blackout(camera, keep_frame=True)
    found = (np.arange(10), np.arange(10))  # the first ten, found by their descriptors
    points = ImagePoints.of(truth[:10], camera)
    index, xy = tracker._realign({0: motion}, found, gray, points)
    visible = ~(truth < [HW[1] / 2 + 12, HW[0] / 2 + 12]).all(axis=1)  # clear of the occluder
    visible &= (truth > 12).all(axis=1) & (truth < [HW[1] - 12, HW[0] - 12]).all(axis=1)
    covered = (truth < [HW[1] / 2, HW[0] / 2]).all(axis=1)
    assert not np.isin(index, np.arange(10)).any()
    assert np.isin(np.flatnonzero(visible[10:]) + 10, index).mean() >= 0.8
    assert not covered[index].any()
    assert np.abs(xy - truth[index]).max() < 0.1
    off = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ motion
    assert len(tracker._realign({0: off}, found, gray, points)[0]) == 0
    tracker, gray, motion, truth = _lost_in_a_blackout(camera, keep_frame=False)
    assert len(tracker._realign({0: motion}, found, gray, points)[0]) == 0


def test_keypoints_added_to_a_frame_s_features_keep_them_in_score_order():
    """A track found again by its patch becomes a keypoint of the frame: the frame's
    keypoints stay in decreasing score order and each old and new row is told where it went."""
    rng = np.random.default_rng(3)
    features = Features(
        rng.uniform(0, 60, (5, 2)), np.linspace(0.9, 0.1, 5), rng.standard_normal((5, 4)), HW
    )
    xy, scores, descriptors = rng.uniform(0, 60, (3, 2)), [0.95, 0.5, 0.05], np.eye(3, 4)
    out, moved_to, added_at = features.appended(xy, np.array(scores), descriptors)
    assert np.all(np.diff(out.scores) <= 0)
    assert np.array_equal(out.keypoints[moved_to], features.keypoints)
    assert np.array_equal(out.descriptors[moved_to], features.descriptors)
    assert np.allclose(out.keypoints[added_at], xy)
    assert added_at.tolist() == [0, 4, 7]  # a tie: after the old one


def test_only_the_newest_losses_keep_their_frames() -> None:
    """A camera where Lucas-Kanade fails on every frame for seconds: only the frames of the
    newest ``KEPT_FRAMES`` losses are kept for finding tracks by their patches; a loss where
    Lucas-Kanade did not fail keeps none."""
    tracker = HybridTracker(HybridConfig(mode='hybrid'))
    live = _track_set(np.array([[10.0, 20.0], [30.0, 40.0]]))
    for index in range(hybrid_tracks.KEPT_FRAMES + 5):
        tracker.gray = np.full((8, 8), index, np.uint8)
        tracker._lose(live, np.array([True, False]), None, True)
    tracker._lose(live, np.array([True, False]), None, False)
    kept = [event for event, snap in tracker.snapshots.items() if snap.gray is not None]
    assert kept == list(range(5, hybrid_tracks.KEPT_FRAMES + 5))
    assert [int(tracker.snapshots[event].gray[0, 0]) for event in kept] == kept
