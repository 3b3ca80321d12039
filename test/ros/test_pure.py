"""kp2d_ros pieces that need no ROS graph: parameters, CameraInfo pairing, message layouts."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from kp2d_ros.bookkeeping import CameraInfoCache, FrameStats
from kp2d_ros.params import DEFAULTS, options_from_values

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


def test_frame_stats_summary():
    stats = FrameStats()
    assert stats.summary() == {'processed': '0', 'dropped': '0'}
    stats.drop('ImageError')
    stats.drop('ImageError')
    for ms in (10, 20, 30, 40):
        stats.done(ms / 1e3, 2 * ms / 1e3)
    summary = stats.summary()
    assert summary['processed'] == '4' and summary['dropped.ImageError'] == '2'
    assert summary['processing_ms.p50'] == '25.0' and summary['latency_ms.p50'] == '50.0'
    assert summary['processing_fps'] == '40.00'


def test_cloud_and_homography_layouts():
    pytest.importorskip('sensor_msgs')
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Float64MultiArray, Header, MultiArrayDimension

    from kp2d_ros.messages import cloud_to_arrays, features_to_cloud, homography_array

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
    msg = homography_array(Float64MultiArray, MultiArrayDimension, np.eye(3) * 2, 30, 50, 1.5, 1.0)
    assert list(msg.data) == [2, 0, 0, 0, 2, 0, 0, 0, 2, 30, 50, 1.5, 1.0]
