"""kp2d_ros pieces that need no ROS graph: parameters, CameraInfo pairing, message layouts."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from kp2d_ros.bookkeeping import (
    CameraInfoCache,
    FrameStats,
    HealthThresholds,
    StampPolicy,
    Verdict,
    health,
)
from kp2d_ros.params import DEFAULTS, options_from_values
from kp2d_ros.worker import LatestSlotWorker

K = [300.0, 0.0, 160.0, 0.0, 300.0, 120.0, 0.0, 0.0, 1.0]


def test_defaults_are_valid_and_map_to_core_configs():
    options = options_from_values(DEFAULTS)
    extractor, tracker = options.pipeline.extractor, options.pipeline.tracker
    assert extractor.top_k == 1000 and extractor.resize is None
    assert tracker.ratio is None and tracker.ransac_method == 'magsac'
    assert options.publish == {
        'keypoints': True,
        'homography': True,
        'odometry': True,
        'tf': False,
        'debug_image': True,
    }


@pytest.mark.parametrize(
    ('name', 'value', 'message'),
    [
        ('detector.top_k', 0, 'top_k'),
        ('detector.score_threshold', 1.0, 'score_threshold'),
        ('detector.nms_radius', -2.0, 'nms_radius'),
        ('detector.resize', [240], 'detector.resize'),
        ('detector.resize', [240, 0], 'detector.resize'),
        ('detector.resize', [8, 8], 'resize must be at least'),
        ('no.such.parameter', 1, 'unknown parameters'),
        ('matcher.ratio', 1.5, 'ratio'),
        ('matcher.max_distance', 3.0, 'max_distance'),
        ('tracker.ransac_method', 'fancy', 'ransac_method'),
        ('tracker.min_keyframe_inliers', 2, 'min_keyframe_inliers'),
        ('diagnostics_period_s', 0.0, 'diagnostics_period_s'),
        ('odom_frame', '', 'odom_frame'),
    ],
)
def test_invalid_values_are_named(name, value, message):
    with pytest.raises(ValueError, match=message):
        options_from_values({**DEFAULTS, name: value})


def test_resize_pair():
    options = options_from_values({**DEFAULTS, 'detector.resize': [240, 320]})
    assert options.pipeline.extractor.resize == (240, 320)


def test_camera_info_cache_pairs_by_stamp():
    cache = CameraInfoCache(size=3)
    assert cache.lookup(1.0, 0.5) is None
    cache.add(1.0, K)
    K2 = list(K)
    K2[0] = 310.0
    cache.add(2.0, K2)
    assert cache.lookup(1.1, 0.5)[0, 0] == 300.0
    assert cache.lookup(1.9, 0.5)[0, 0] == 310.0
    assert cache.lookup(5.0, 0.5) is None  # too old
    with pytest.raises(ValueError):
        cache.add(3.0, [0.0] * 9)
    for stamp in (3.0, 4.0, 5.0):
        cache.add(stamp, K)
    assert cache.lookup(2.0, 0.1) is None  # evicted


def test_frame_stats_window_and_health():
    stats = FrameStats(window_s=10.0)
    assert stats.summary(0.0)['processed'] == '0'
    for i in range(100):  # 10 Hz in, 1 Hz out, 2.5 s latency
        stats.arrived(i * 0.1)
        if i % 10 == 0:
            stats.done(i * 0.1, 0.5, 2.5)
        else:
            stats.drop('superseded')
    stats.note('camera_info_rejected')
    figures = stats.window(9.95)
    assert figures['input_hz'] == pytest.approx(10.0, rel=0.02)
    assert figures['output_hz'] == pytest.approx(1.0, rel=0.02)
    summary = stats.summary(9.95)
    assert summary['dropped.superseded'] == '90' and summary['camera_info_rejected'] == '1'
    level, message = health(figures, HealthThresholds())
    assert level == 1 and 'processed' in message and 'latency' in message
    assert health(figures, HealthThresholds(error_latency_s=2.0))[0] == 2
    stalled = {'input_hz': 5.0, 'output_hz': 0.0}
    assert health(stalled, HealthThresholds())[0] == 2
    assert (
        health({'input_hz': 5.0, 'output_hz': 5.0, 'latency_p95_s': 0.1}, HealthThresholds())[0]
        == 0
    )
    assert stats.window(100.0)['input_hz'] == 0.0  # the window slides


def test_stamp_policy():
    policy = StampPolicy(max_future_s=10.0)
    now = 1000.0
    assert policy.check(990, 0, now).action == 'ok'
    assert policy.check(991, 0, now).action == 'ok'
    assert policy.check(991, 0, now) == Verdict('drop', 'duplicate_stamp')
    assert policy.check(991, 1_000_000_000, now) == Verdict('drop', 'invalid_stamp')
    assert policy.check(5000, 0, now) == Verdict('drop', 'stamp_in_future')
    assert policy.check(992, 0, now).action == 'ok'  # the bogus stamp did not become the reference
    assert policy.check(10, 0, now) == Verdict('reset', 'time_jumped_back')
    assert policy.check(11, 0, now).action == 'ok'
    assert policy.check(10**9, 0, 0.0).action == 'ok'  # a clock at zero is not compared


def test_worker_keeps_only_the_newest_item():
    import threading

    release, started, seen = threading.Event(), threading.Event(), []

    def handler(item):
        started.set()
        release.wait(5.0)
        seen.append(item)
        if item == 'boom':
            raise RuntimeError('handler bug')

    worker = LatestSlotWorker(handler)
    assert not worker.submit(1)  # taken at once, blocks in the handler
    assert started.wait(5.0)
    assert not worker.submit(2)
    assert worker.submit(3)  # 2 was still waiting: replaced
    release.set()
    deadline = time.monotonic() + 5
    while not worker.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [1, 3]
    worker.submit('boom')  # an exception in the handler does not end the thread
    worker.submit(4)
    deadline = time.monotonic() + 5
    while 4 not in seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 4 in seen
    worker.stop()


def test_cloud_and_homography_layouts():
    pytest.importorskip('sensor_msgs')
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    from kp2d_ros.messages import cloud_to_arrays, features_to_cloud

    rng = np.random.default_rng(0)
    kpts, scores = rng.random((7, 2)) * 100, np.linspace(1, 0.1, 7)
    desc = rng.random((7, 256))
    header = Header(frame_id='cam')
    cloud = features_to_cloud(PointCloud2, PointField, header, kpts, scores, desc)
    assert cloud.width == 7 and cloud.point_step == 1036 and cloud.header.frame_id == 'cam'
    assert [f.name for f in cloud.fields] == ['x', 'y', 'score', 'descriptor']
    back = cloud_to_arrays(
        SimpleNamespace(point_step=cloud.point_step, width=cloud.width, data=cloud.data)
    )
    assert np.allclose(back[0], kpts, atol=1e-4) and np.allclose(back[2], desc, atol=1e-6)
    from sensor_msgs.msg import JointState

    from kp2d_core.tracking import TrackResult
    from kp2d_ros.messages import HOMOGRAPHY_NAMES, homography_joint_state

    empty = np.zeros((0, 2))
    track = TrackResult(
        np.eye(3) * 2, None, 50, 30, 1.0, False, None, None, empty, empty, np.zeros(0, bool), 0.4
    )
    msg = homography_joint_state(JointState, header, track)
    assert msg.header.frame_id == 'cam' and list(msg.name) == HOMOGRAPHY_NAMES
    assert list(msg.position) == pytest.approx([2, 0, 0, 0, 2, 0, 0, 0, 2, 30, 50, 1.0, 0.4])


@pytest.mark.parametrize(
    ('k', 'message'),
    [
        ([1e300, 0, 160, 0, 1e300, 120, 0, 0, 1], 'implausible'),
        ([1e-300, 0, 160, 0, 1e-300, 120, 0, 0, 1], 'implausible'),
        ([300, 1e9, 160, 0, 300, 120, 0, 0, 1], 'skew'),
        ([300, 0, 160, 0, 300, 120, 0, 0, -1], 'K\\[2\\]'),
        ([300, 0, 160, 0, 300, 120, 0, 0, 2], 'K\\[2\\]'),
        ([300, 0, 160, 0, 3, 120, 0, 0, 1], 'similar'),
        ([300, 0, 9000, 0, 300, 120, 0, 0, 1], 'principal point'),
        ([float('nan'), 0, 160, 0, 300, 120, 0, 0, 1], 'non-finite'),
        ([-300, 0, 160, 0, -300, 120, 0, 0, 1], 'positive'),
    ],
)
def test_camera_info_is_validated_as_a_camera(k, message):
    cache = CameraInfoCache()
    with pytest.raises(ValueError, match=message):
        cache.add(1.0, k, (240, 320))
    assert cache.lookup(1.0, 1.0) is None  # nothing was stored
    cache.add(1.0, K, (240, 320))
    cache.add(2.0, K, (0, 0))  # CameraInfo without an image size: the generic checks only
    assert cache.lookup(1.0, 1.0) is not None
