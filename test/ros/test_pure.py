"""kp2d_ros pieces that need no ROS graph: parameters, stamps, CameraInfo pairing, layouts."""

from __future__ import annotations

import time

import numpy as np
import pytest

from kp2d_ros.frame_health import FrameStats, HealthThresholds, health
from kp2d_ros.frame_worker import LatestSlotWorker
from kp2d_ros.parameters import DEFAULTS, options_from_values
from kp2d_ros.stamps import StampPolicy, Verdict
from kp2d_testing.ros import missing_ros_libraries

NEEDS_ROS = pytest.mark.skipif(
    bool(missing_ros_libraries(('rclpy', 'message_filters', 'sensor_msgs_py'))),
    reason='needs rclpy, message_filters and sensor_msgs_py (tools/build_ros_deps.py, '
    'KP2D_ROS_SRC)',
)

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
        'tracks': True,
        'vins_features': False,
        'tf': False,
        'debug_image': True,
    }
    assert options.pipeline.tracks.max_tracks == 300


@pytest.mark.parametrize(
    ('name', 'value', 'message'),
    [
        ('detector.top_k', 0, r'detector.top_k must be in \[1, 100000\], got 0'),
        ('detector.top_k', 1.5, 'detector.top_k must be integer, got double 1.5'),
        ('detector.top_k', 'many', "detector.top_k must be integer, got string 'many'"),
        ('detector.score_threshold', 1.0, 'score_threshold'),
        ('detector.score_threshold', float('nan'), 'must be finite'),
        ('detector.nms_radius', -2.0, 'nms_radius'),
        ('detector.nms_radius', float('inf'), 'must be finite'),
        ('detector.resize', [240], 'detector.resize'),
        ('detector.resize', [240, 0], 'detector.resize'),
        ('detector.resize', [8, 8], 'detector.resize'),
        ('detector.resize', 5, 'detector.resize must be integer array, got integer 5'),
        ('detector.resize', [8000, 8000], 'exceeds detector.max_input_pixels'),
        ('no.such.parameter', 1, 'unknown parameters'),
        ('matcher.ratio', 1.5, 'ratio'),
        ('matcher.max_distance', 3.0, 'max_distance'),
        ('tracker.ransac_method', 'fancy', 'ransac_method'),
        ('tracker.ransac_threshold_px', float('nan'), 'ransac_threshold_px must be finite'),
        ('tracker.min_keyframe_inliers', 2, 'min_keyframe_inliers'),
        ('diagnostics_period_s', 0.0, 'diagnostics_period_s'),
        ('diagnostics_period_s', 1e-9, r'diagnostics_period_s must be in \[0.1, 3600\]'),
        ('diagnostics_period_s', 1e300, 'diagnostics_period_s must be in'),
        ('diagnostics_period_s', 5, 'must be double, got integer 5 .write it with a decimal'),
        ('publish.odometry', 'yes', "publish.odometry must be bool, got string 'yes'"),
        ('publish.odometry', 1, 'publish.odometry must be bool, got integer 1'),
        ('model.device', 'x', 'model.device must be'),
        ('frames.odom', '', 'frames.odom'),
    ],
)
def test_invalid_values_are_named(name, value, message):
    with pytest.raises(ValueError, match=message):
        options_from_values({**DEFAULTS, name: value})


def test_the_light_recovery_model_needs_the_bundled_default_model(tmp_path):
    light = {**DEFAULTS, 'tracker.recovery_model': 'light'}
    options = options_from_values(light)
    assert options.pipeline.hybrid.recovery_model == 'light'
    retrained = {**light, 'model.weights': str(tmp_path / 'retrained.pt')}
    with pytest.raises(ValueError, match='tracker.recovery_model: .*bundled default model'):
        options_from_values(retrained)
    options_from_values({**retrained, 'tracker.recovery_model': 'auto'})
    options_from_values({**retrained, 'tracker.mode': 'every_frame'})


def test_resize_pair():
    options = options_from_values({**DEFAULTS, 'detector.resize': [240, 320]})
    assert options.pipeline.extractor.resize == (240, 320)


def _camera_info(stamp_ns: int, k=K, d=(), model=''):
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo(height=240, width=320, k=[float(v) for v in k], d=list(d))
    msg.distortion_model = model
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    return msg


@NEEDS_ROS
def test_camera_info_pairs_by_stamp_through_message_filters():
    from kp2d_ros.camera_info import CameraInfoPairing

    pairing = CameraInfoPairing(size=3)
    second = 10**9
    assert pairing.lookup(second, second // 2) is None
    pairing.add(_camera_info(second))
    K2 = list(K)
    K2[0] = 310.0
    pairing.add(_camera_info(2 * second, K2))
    assert pairing.lookup(second + second // 10, second // 2).K[0, 0] == 300.0
    assert pairing.lookup(2 * second - second // 10, second // 2).K[0, 0] == 310.0
    assert pairing.lookup(2 * second + 1, 1).K[0, 0] == 310.0  # 1 ns apart: exact integers
    assert pairing.lookup(5 * second, second // 2) is None  # too old
    with pytest.raises(ValueError):
        pairing.add(_camera_info(3 * second, [0.0] * 9))
    for stamp in (3, 4, 5):
        pairing.add(_camera_info(stamp * second))
    assert pairing.lookup(2 * second, second // 10) is None  # evicted from the Cache


@NEEDS_ROS
@pytest.mark.parametrize(
    ('d', 'model', 'message'),
    [
        ((0.1, 0.0, 0.0), 'plumb_bob', 'takes'),
        ((float('nan'),) * 5, 'plumb_bob', 'not finite'),
        ((1e30, 0, 0, 0, 0), 'plumb_bob', 'exceed'),
        ((0.1, 0, 0, 0, 0), 'no_such_model', 'unknown distortion_model'),
    ],
)
def test_bad_distortion_is_refused_like_bad_intrinsics(d, model, message):
    from kp2d_ros.camera_info import CameraInfoPairing

    pairing = CameraInfoPairing()
    with pytest.raises(ValueError, match=message):
        pairing.add(_camera_info(10**9, d=d, model=model))
    assert pairing.lookup(10**9, 10**9) is None
    good = pairing.add(_camera_info(10**9, d=(-0.2, 0.05, 0, 0, 0), model='plumb_bob'))
    assert good.distorted and pairing.lookup(10**9, 1) is good


def test_frame_stats_window_and_health():
    stats = FrameStats(window_s=10.0)
    assert stats.summary(0.0)['processed'] == '0'
    for i in range(100):  # 10 Hz in, 1 Hz out, 2.5 s latency
        stats.arrived(i * 0.1)
        if i % 10 == 0:
            stats.done(i * 0.1, 0.5, 2.5, network=i % 20 == 0)  # hybrid: every other one
        else:
            stats.drop('superseded')
    stats.note('camera_info_rejected')
    figures = stats.window(9.95)
    assert figures['input_hz'] == pytest.approx(10.0, rel=0.02)
    assert figures['output_hz'] == pytest.approx(1.0, rel=0.02)
    assert figures['network_share'] == 0.5
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
    second = 10**9
    policy = StampPolicy(max_future_s=10.0)
    now = 1000 * second
    assert policy.check(990, 0, now).action == 'ok'
    assert policy.check(991, 0, now).action == 'ok'
    assert policy.check(991, 0, now) == Verdict('drop', 'duplicate_stamp')
    assert policy.check(991, 1, now).action == 'ok'  # 1 ns later is a new frame
    assert policy.check(991, 1_000_000_000, now) == Verdict('drop', 'invalid_stamp')
    assert policy.check(0, 0, now) == Verdict('drop', 'invalid_stamp')  # an unset header
    assert policy.check(-5, 0, now) == Verdict('drop', 'invalid_stamp')
    assert policy.check(5000, 0, now) == Verdict('drop', 'stamp_in_future')
    assert policy.check(992, 0, now).action == 'ok'  # the bogus stamp did not become the reference
    assert policy.check(10, 0, now) == Verdict('reset', 'time_jumped_back')
    assert policy.check(11, 0, now).action == 'ok'
    assert policy.check(10**9, 0, 0).action == 'ok'  # a clock at zero is not compared


def test_a_stamp_from_another_clock_is_refused_like_stamp_0():
    second = 10**9
    wall = 1_764_000_000 * second  # the node's clock: 2025
    policy = StampPolicy()
    assert policy.check(1_763_999_999, 0, wall).action == 'ok'
    verdict = policy.check(0, 1, wall)  # 1 ns after the epoch
    assert verdict.action == 'drop' and verdict.reason == 'invalid_stamp'
    assert 'use_sim_time' in verdict.detail
    assert policy.check(1_764_000_000, 0, wall).action == 'ok'  # no reset happened
    simulated = StampPolicy()
    assert simulated.check(0, 1, 5 * second).action == 'ok'  # simulated time: plausible
    assert simulated.check(12, 0, 20 * second).action == 'ok'


def test_each_distinct_refusal_is_logged_once_and_all_are_counted():
    from kp2d_ros.refusal_log import RefusalLog

    class Logger:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def warning(self, text: str) -> None:
            self.lines.append(text)

    logger = Logger()
    log = RefusalLog(logger, max_reasons=3)
    for size in range(1000, 1040):  # one reason, different numbers: logged once
        log.refuse('frame dropped (ImageError)', f'data has {size} bytes, expected 921600')
    log.refuse('CameraInfo refused', 'k: focal lengths are not positive')
    log.refuse('CameraInfo refused', 'k: focal lengths are not positive')
    log.refuse('CameraInfo refused', 'd: plumb_bob takes 5, 8, 12 or 14 coefficients')
    assert len(logger.lines) == 3
    assert logger.lines[1].startswith('CameraInfo refused: k: focal lengths')
    assert 'counted on /diagnostics' in logger.lines[0]
    assert sum(log.counts.values()) == 43
    log.refuse('CameraInfo refused', 'a fourth reason')  # beyond max_reasons: counted only
    assert len(logger.lines) == 3 and sum(log.counts.values()) == 44


@NEEDS_ROS
def test_a_camera_info_of_another_size_is_scaled_or_refused():
    from kp2d_ros.camera_info import camera_for_image, camera_model

    info = _camera_info(10**9)
    info.width, info.height = 160, 120  # a binned calibration; the frames are 320x240
    small = K[:]
    small[0], small[2], small[4], small[5] = 150.0, 79.75, 150.0, 59.75
    info.k = small
    camera = camera_model(info)
    same, why = camera_for_image(camera, (120, 160), scale=False)
    assert same is camera and why == ''
    refused, why = camera_for_image(camera, (240, 320), scale=False)
    assert refused is None and 'for 160x120 images, the frame is 320x240' in why
    scaled, why = camera_for_image(camera, (240, 320), scale=True)
    assert why == '' and scaled.image_hw == (240, 320)
    assert np.allclose(scaled.K, np.array(K).reshape(3, 3))  # about pixel centres
    cropped, why = camera_for_image(camera, (240, 400), scale=True)
    assert cropped is None and 'another aspect ratio' in why


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


def test_worker_lets_go_of_a_frame_once_it_is_handled():
    """A large frame's bytes must not stay in memory until the next frame comes."""
    import gc
    import weakref

    class Frame(bytearray):
        pass

    handled = []
    worker = LatestSlotWorker(lambda item: handled.append(len(item)))
    frame = Frame(1 << 20)
    alive = weakref.ref(frame)
    worker.submit(frame)
    del frame
    deadline = time.monotonic() + 5
    while not (handled and worker.idle()) and time.monotonic() < deadline:
        time.sleep(0.01)
    gc.collect()
    assert handled == [1 << 20] and alive() is None
    worker.stop()


@NEEDS_ROS
def test_cloud_and_homography_layouts():
    from std_msgs.msg import Header

    from kp2d_core.vo.keyframe_tracker import TrackResult
    from kp2d_ros.output_messages import cloud_to_arrays, features_to_cloud, homography_msg

    rng = np.random.default_rng(0)
    kpts, scores = rng.random((7, 2)) * 100, np.linspace(1, 0.1, 7)
    desc = rng.random((7, 256))
    header = Header(frame_id='cam')
    cloud = features_to_cloud(header, kpts, scores, desc)
    assert cloud.width == 7 and cloud.point_step == 1036 and cloud.header.frame_id == 'cam'
    assert [f.name for f in cloud.fields] == ['x', 'y', 'score', 'descriptor']
    assert cloud.fields[3].count == 256 and cloud.is_dense
    back = cloud_to_arrays(cloud)
    assert np.allclose(back[0], kpts, atol=1e-4) and np.allclose(back[2], desc, atol=1e-6)
    empty = np.zeros((0, 2))
    track = TrackResult(
        np.eye(3) * 2, None, 50, 30, 10**9, False, None, None, empty, empty, np.zeros(0, bool), 0.4
    )
    from builtin_interfaces.msg import Time

    from kp2d_msgs.msg import HomographyStamped

    msg = homography_msg(HomographyStamped, Time, header, track)
    assert msg.header.frame_id == 'cam' and list(msg.homography) == [2, 0, 0, 0, 2, 0, 0, 0, 2]
    assert (msg.inliers, msg.matches, msg.keyframe_stamp.sec) == (30, 50, 1)
    assert msg.residual_px == pytest.approx(0.4) and not msg.rectified
