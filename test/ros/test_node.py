"""The kp2d node in its own process, driven over real DDS by a probe node (real rclpy)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from kp2d_testing.ros import require_ros_libraries

require_ros_libraries()

import rclpy  # noqa: E402
import torch  # noqa: E402

from kp2d_core import ExtractorConfig, KeypointNet, save_checkpoint  # noqa: E402
from kp2d_core.geometry.coordinates import corner_error  # noqa: E402
from kp2d_core.images import read_image  # noqa: E402
from kp2d_core.inference.probe import sample_photo_path  # noqa: E402
from kp2d_ros.output_messages import cloud_to_arrays  # noqa: E402
from kp2d_testing.ros import (  # noqa: E402
    Probe,
    camera_info_msg,
    diagnostic_values,
    homography_of,
    image_msg,
    ros_environment,
    shifted_frames,
    spin_until,
    start_node,
    stop_node,
    unique_domain_id,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]
HW = (240, 320)
K = np.array([[300.0, 0.0, 159.5], [0.0, 300.0, 119.5], [0.0, 0.0, 1.0]])
T0 = 1_700_000_000_319_492_509  # a wall-clock sensor stamp (ns) in the node clock's past
FRAME_NS = 100_000_000


@pytest.fixture(scope='module')
def session(tmp_path_factory):
    """Node process + probe node on a private DDS domain; yields (probe, node process, log)."""
    saved = dict(os.environ)
    os.environ.update(ros_environment(unique_domain_id()))
    folder = tmp_path_factory.mktemp('node')
    log, weights = folder / 'node.log', folder / 'random.pt'
    torch.manual_seed(0)
    save_checkpoint(weights, KeypointNet())  # the plumbing tests do not need trained weights
    params = {
        'model.weights': str(weights),
        'model.device': 'cpu',
        'model.backend': 'torch',
        'model.precision': 'fp32',
        'detector.top_k': 500,
        'tracker.mode': 'every_frame',  # the contract tested here: top-k fresh keypoints a frame
        'diagnostics_period_s': 0.5,
        'diagnostics.window_s': 2.0,
    }
    proc = start_node(params, {'image': '/test/image', 'camera_info': '/test/camera_info'}, log)
    rclpy.init()
    probe = Probe('/test')
    try:
        handshake = camera_info_msg(K, HW, T0 - 10**10)
        assert probe.wait_for_node(90.0, camera_info=handshake), (
            f'node did not come up:\n{log.read_text()[-3000:]}'
        )
        yield probe, proc, log
    finally:
        probe.node.destroy_node()
        rclpy.shutdown()
        code = stop_node(proc)
        os.environ.clear()
        os.environ.update(saved)
        text = log.read_text()
        assert code == 0 and 'Traceback' not in text, f'node exited with {code}:\n{text[-3000:]}'


def _frames(n: int = 6, start: int = 0):
    return shifted_frames(n, HW, start)


def _diag(probe) -> dict[str, str]:
    return diagnostic_values(probe.received['diag'][-1]) if probe.received['diag'] else {}


def _count(probe, key: str) -> int:
    return int(_diag(probe).get(key, 0))


def _wait_count(probe, key: str, above: int, timeout: float = 10.0) -> bool:
    return spin_until(probe.node, lambda: _count(probe, key) > above, timeout)


def test_homography_odometry_and_headers(session):
    probe, proc, log = session
    frames, H_0to = _frames()
    stamps = [T0 + k * FRAME_NS for k in range(len(frames))]
    for frame, stamp in zip(frames, stamps):
        info = camera_info_msg(K, HW, stamp)
        assert probe.send(image_msg(frame, stamp), info), 'no keypoints for a frame'
    assert proc.poll() is None
    clouds = probe.received['keypoints'][-len(frames) :]
    for cloud, stamp in zip(clouds, stamps):
        assert cloud.header.frame_id == 'camera_optical_frame'
        assert cloud.header.stamp.sec * 10**9 + cloud.header.stamp.nanosec == stamp
        kpts, scores, desc = cloud_to_arrays(cloud)
        assert kpts.shape == (500, 2) and desc.shape == (500, 256)
        assert np.allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-4)
        assert (np.diff(scores) <= 0).all()
    spin_until(probe.node, lambda: len(probe.received['homography']) >= len(frames) - 1, 10)
    homographies = probe.received['homography'][-(len(frames) - 1) :]
    pairs = [[(s - T0) // FRAME_NS for s in homography_of(m)[2:0:-1]] for m in homographies]
    assert len(homographies) == len(frames) - 1, (
        f'(keyframe, frame) pairs: {pairs}\n' + (log.read_text()[-3000:])
    )
    for msg in homographies:
        H, cur, key, inliers, matches = homography_of(msg)
        assert msg.header.frame_id == 'camera_optical_frame'  # pairable by stamp
        assert cur in stamps and key in stamps  # exact nanoseconds: a lookup by stamp works
        k, key_index = (cur - T0) // FRAME_NS, (key - T0) // FRAME_NS
        truth = H_0to[k] @ np.linalg.inv(H_0to[key_index])
        assert inliers >= 4 and matches >= inliers
        assert corner_error(H, truth, *HW) < 0.5, (k, key_index)
    odometry = probe.received['odometry']
    last_stamp = clouds[-1].header.stamp
    assert spin_until(probe.node, lambda: any(m.header.stamp == last_stamp for m in odometry), 10)
    last_msg = next(m for m in odometry if m.header.stamp == last_stamp)
    frame_ids = (last_msg.header.frame_id, last_msg.child_frame_id)
    assert frame_ids == ('kp2d_odom', 'kp2d_camera_optical_frame')
    # Sliding 8 px per frame over a plane at unit distance with f = 300 px: the camera moves
    # by 8/300 per frame along +x and +y (units of the plane distance), without rotating.
    last = last_msg.pose.pose
    shift = 8.0 * (len(frames) - 1) / K[0, 0]
    position = [last.position.x, last.position.y, last.position.z]
    assert np.allclose(position, [shift, shift, 0.0], atol=0.01), position
    assert abs(last.orientation.w) > 0.9999
    covariance = np.asarray(last_msg.pose.covariance).reshape(6, 6)
    assert np.isfinite(covariance).all() and (np.diag(covariance) > 0).all()  # not "certain"
    velocity = last_msg.twist.twist.linear
    assert np.allclose([velocity.x, velocity.y], [8.0 / 300 / 0.1] * 2, rtol=0.05)


def _bad_messages(good):
    """Malformed Image messages, each paired with what is wrong with it."""
    from sensor_msgs.msg import Image

    def variant(**changes):
        msg = Image(
            header=good.header,
            height=good.height,
            width=good.width,
            encoding=good.encoding,
            is_bigendian=0,
            step=good.step,
            data=good.data,
        )
        for key, value in changes.items():
            setattr(msg, key, value)
        return msg

    nan = np.full(HW, np.nan, np.float32)
    return [
        variant(encoding='yuv444_no_such'),
        variant(encoding='e' * 1_000_000),
        variant(step=good.step - 1),
        variant(data=bytes(good.data)[:-7]),
        variant(height=0, width=0, step=0, data=b''),
        variant(height=4, width=4, step=12, data=bytes(48)),
        variant(encoding='32FC1', step=4 * HW[1], data=nan.tobytes()),
    ]


def test_malformed_images_do_not_kill_the_node(session):
    probe, proc, log = session
    frames, _ = _frames(2)
    base = T0 + 10**12
    good = image_msg(frames[0], base)
    for i, bad in enumerate(_bad_messages(good)):
        bad.header.stamp.sec += i + 1
        before = _count(probe, 'dropped')
        for _ in range(10):  # best effort: resend until the node has counted it
            probe.pub_image.publish(bad)
            if _wait_count(probe, 'dropped', before, 3.0):
                break
        assert _count(probe, 'dropped') > before, (
            f'bad image {i} not counted:\n{log.read_text()[-2000:]}'
        )
    later = image_msg(frames[1], base + 10 * 10**9)
    assert probe.send(later), 'node stopped answering after malformed input'
    assert proc.poll() is None
    text = log.read_text()
    assert 'unsupported encoding' in text
    assert max(len(line) for line in text.splitlines()) < 2000  # long fields are not logged


def test_time_jumping_back_resets_tracking_and_continues(session):
    probe, _, log = session
    frames, _ = _frames(4)
    base = T0 + 2 * 10**12
    for loop in range(2):  # a bag played with --loop: the second pass repeats the stamps
        for k, frame in enumerate(frames):
            msg = image_msg(frame, base + k * FRAME_NS)
            probe.pub_image.publish(msg)

            def answered(stamp=msg.header.stamp, times=loop + 1) -> bool:
                return sum(m.header.stamp == stamp for m in probe.received['keypoints']) >= times

            assert spin_until(probe.node, answered, 30.0), f'no answer in loop {loop}, frame {k}'
    assert 'time jumped back' in log.read_text()
    stamp = image_msg(frames[1], base + FRAME_NS).header.stamp
    homographies = [m for m in probe.received['homography'] if m.header.stamp == stamp]
    assert len(homographies) == 2  # tracked again in the second loop, against a new keyframe


@pytest.mark.parametrize(
    ('shift_s', 'nanosec', 'reason'),
    [
        (3600.0, 0, 'stamp_in_future'),  # one hour ahead of the node's clock
        (None, 0, 'stamp_in_future'),  # in 2038
        (0.0, 1_500_000_000, 'invalid_stamp'),
    ],
)
def test_bogus_stamps_are_dropped_without_becoming_the_reference(
    session, shift_s, nanosec, reason
):
    probe, _, _ = session
    frames, _ = _frames(2)
    now = time.time()
    bogus = image_msg(frames[0], 0)
    bogus.header.stamp.sec = int(now + shift_s) if shift_s is not None else 2_147_000_000
    bogus.header.stamp.nanosec = nanosec
    before = _count(probe, f'dropped.{reason}')
    for _ in range(10):
        probe.pub_image.publish(bogus)
        if _wait_count(probe, f'dropped.{reason}', before, 3.0):
            break
    assert _count(probe, f'dropped.{reason}') > before
    normal = image_msg(frames[1], int((now - 1.0) * 1e9))  # a frame from just now
    assert probe.send(normal, timeout=30.0), 'frames after a bogus stamp are not processed'


def test_diagnostics_account_for_superseded_frames(session):
    probe, _, _ = session
    frames, _ = _frames(3)
    base = T0 + 3 * 10**12
    before = _count(probe, 'dropped.superseded')
    for k in range(30):  # far faster than the node processes: most frames are replaced
        probe.pub_image.publish(image_msg(frames[k % 3], base + k * 10**7))
        spin_until(probe.node, lambda: False, 0.005)
    assert _wait_count(probe, 'dropped.superseded', before, 15.0)

    def balanced() -> bool:
        d = _diag(probe)
        return int(d['received']) == int(d['processed']) + int(d['dropped'])

    assert spin_until(probe.node, balanced, 15.0), _diag(probe)
    levels = [m.status[0].level for m in probe.received['diag'][-20:]]
    assert any(level != b'\x00' for level in levels)  # overload is not reported as OK
    assert {'input_hz', 'output_hz', 'latency_p95_s'} <= set(_diag(probe))


def _set_param(probe, name: str, value) -> bool:
    """Set one parameter of the node over its parameter service; True when accepted.

    ``value`` is a Python value; its ROS type follows from it (int, float, str, list of int).
    """
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = probe.node.create_client(SetParameters, '/kp2d/set_parameters')
    try:
        assert client.wait_for_service(timeout_sec=30.0)
        request = SetParameters.Request(
            parameters=[Parameter(name, value=value).to_parameter_msg()]
        )
        future = client.call_async(request)
        assert spin_until(probe.node, future.done, 30.0)
        return future.result().results[0].successful
    finally:
        probe.node.destroy_client(client)


def test_parameter_validation_and_runtime_resize(session):
    probe, _, _ = session
    assert not _set_param(probe, 'detector.top_k', 0)
    assert not _set_param(probe, 'detector.score_threshold', 1.5)
    assert not _set_param(probe, 'tracker.ransac_threshold_px', -1.0)
    assert not _set_param(probe, 'detector.resize', [240, 0])
    assert not _set_param(probe, 'model.weights', '/x.pt')  # read-only
    assert _set_param(probe, 'detector.resize', [120, 160])  # one parameter: settable at runtime
    assert _set_param(probe, 'detector.top_k', 200)
    frames, _ = _frames(1)
    assert probe.send(image_msg(frames[0], T0 + 10**13))
    kpts, _, _ = cloud_to_arrays(probe.received['keypoints'][-1])
    assert len(kpts) == 200 and kpts[:, 0].max() > 200  # input pixels, network at 120x160
    assert _set_param(probe, 'detector.resize', [0, 0])


def test_invalid_camera_info_never_yields_a_nan_pose(session):
    probe, _, _ = session
    frames, _ = _frames(3, start=10)
    base = T0 + 4 * 10**12
    bad = {
        'huge focal': [1e300, 0, 160, 0, 1e300, 120, 0, 0, 1],
        'tiny focal': [1e-300, 0, 160, 0, 1e-300, 120, 0, 0, 1],
        'skew': [300, 1e9, 160, 0, 300, 120, 0, 0, 1],
        'mirrored': [300, 0, 160, 0, 300, 120, 0, 0, -1],
        'nan': [np.nan, 0, 160, 0, 300, 120, 0, 0, 1],
    }
    before = _count(probe, 'camera_info_rejected')
    for k, (name, values) in enumerate(bad.items()):
        stamp = base + k * FRAME_NS
        info = camera_info_msg(np.asarray(values, np.float64).reshape(3, 3), HW, stamp)
        assert probe.send(image_msg(frames[k % 3], stamp), info, timeout=30.0), name
    assert _wait_count(probe, 'camera_info_rejected', before + len(bad) - 1, 10.0)
    for odom in probe.received['odometry']:
        pose = odom.pose.pose
        values = [pose.position.x, pose.position.y, pose.position.z, pose.orientation.w]
        assert np.isfinite(values).all() and np.isfinite(odom.pose.covariance).all()
    after = T0 + 5 * 10**12
    for k, frame in enumerate(frames):  # a valid camera again: finite poses follow
        stamp = after + k * FRAME_NS
        assert probe.send(image_msg(frame, stamp), camera_info_msg(K, HW, stamp))
    spin_until(probe.node, lambda: False, 1.0)
    assert np.isfinite(probe.received['odometry'][-1].pose.pose.position.x)


def test_large_frame_is_shrunk_not_fatal(session):
    """A frame above ``detector.max_input_pixels`` is shrunk for the network, not refused.

    The budget is lowered at runtime so that the frame stays small: best-effort messages larger
    than the test profile's shared-memory segment would fall back to UDP and be lost.
    """
    probe, proc, _ = session
    assert _set_param(probe, 'detector.max_input_pixels', 200_000)
    photo = read_image(sample_photo_path())[..., 1]
    big = np.ascontiguousarray(np.tile(photo, (4, 3))[:960, :960])  # 0.92 Mpx mono8
    try:
        assert probe.send(image_msg(big, T0 + 6 * 10**12), timeout=120.0), 'a large frame was lost'
    finally:
        assert _set_param(probe, 'detector.max_input_pixels', ExtractorConfig().max_input_pixels)
    kpts, _, _ = cloud_to_arrays(probe.received['keypoints'][-1])
    assert kpts[:, 0].max() > 700 and kpts[:, 1].max() > 700  # in the frame's own pixels
    assert proc.poll() is None


def test_debug_image_when_subscribed(session):
    from sensor_msgs.msg import Image

    probe, _, _ = session
    received = []
    probe.node.create_subscription(Image, '/kp2d/debug_image', received.append, 5)
    assert spin_until(
        probe.node, lambda: probe.node.count_subscribers('/kp2d/debug_image') > 0, 10
    )
    frames, _ = _frames(2)
    for k, frame in enumerate(frames):
        assert probe.send(image_msg(frame, T0 + 10**14 + k * FRAME_NS))
    assert spin_until(probe.node, lambda: len(received) >= 2, 10.0)
    debug = received[-1]
    assert (debug.encoding, debug.height, debug.width) == ('bgr8', *HW)
    assert debug.header.frame_id == 'camera_optical_frame'
    pixels = np.frombuffer(bytes(debug.data), np.uint8).reshape(*HW, 3)
    assert not np.array_equal(pixels, frames[-1])  # keypoints and matches are drawn


def test_tracks_and_the_vins_feature_cloud(session):
    from kp2d_ros.output_messages import VINS_CHANNELS

    probe, _, _ = session
    assert 'tracks' in probe.received, 'kp2d_msgs is not built'
    assert _set_param(probe, 'publish.vins_features', True)
    frames, _ = _frames(4, start=20)
    base = T0 + 7 * 10**12
    d = (-0.05, 0.01, 0.0, 0.0, 0.0)  # a mild plumb_bob lens
    stamps = [base + k * FRAME_NS for k in range(len(frames))]
    for frame, stamp in zip(frames, stamps):
        info = camera_info_msg(K, HW, stamp, d, 'plumb_bob')
        assert probe.send(image_msg(frame, stamp), info)
    assert spin_until(probe.node, lambda: len(probe.received['feature_cloud']) >= 3, 10.0)
    assert _set_param(probe, 'publish.vins_features', False)
    by_stamp = {
        m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: m for m in probe.received['tracks']
    }
    last = by_stamp[stamps[-1]]
    count = len(last.ids)
    assert count > 50 and len(last.xy) == len(last.normalized) == len(last.velocity) == 2 * count
    assert len(last.ages) == len(last.scores) == count and last.has_intrinsics
    assert (np.asarray(last.ages) > 0).sum() > count // 2  # continued from earlier frames
    earlier = set(by_stamp[stamps[-2]].ids)
    assert {i for i, a in zip(last.ids, last.ages) if a > 0} <= earlier
    assert np.isfinite(last.normalized).all()
    cloud = next(m for m in probe.received['feature_cloud'] if m.header.stamp == last.header.stamp)
    assert tuple(c.name for c in cloud.channels) == VINS_CHANNELS
    assert len(cloud.points) == count and all(p.z == 1.0 for p in cloud.points)
    ids = np.asarray(cloud.channels[0].values)
    assert np.array_equal(ids, np.asarray(last.ids, np.float32))
    uv = np.stack([cloud.channels[1].values, cloud.channels[2].values], axis=1)
    assert np.allclose(uv, np.asarray(last.xy).reshape(-1, 2))
    xy = np.array([[p.x, p.y] for p in cloud.points])
    assert np.allclose(xy, np.asarray(last.normalized).reshape(-1, 2), atol=1e-6)


def test_bad_distortion_is_refused_and_counted(session):
    probe, _, _ = session
    frames, _ = _frames(2, start=30)
    base = T0 + 8 * 10**12
    bad = [
        ((0.1, 0.0, 0.0), 'plumb_bob'),  # wrong length
        ((float('nan'),) * 5, 'plumb_bob'),
        ((1e30, 0.0, 0.0, 0.0, 0.0), 'plumb_bob'),
        ((0.1, 0.0, 0.0, 0.0, 0.0), 'kannala_brandt_v9'),  # unknown model
    ]
    before = _count(probe, 'camera_info_rejected')
    for k, (d, model) in enumerate(bad):
        stamp = base + k * FRAME_NS
        info = camera_info_msg(K, HW, stamp, d, model)
        assert probe.send(image_msg(frames[k % 2], stamp), info)
    assert _wait_count(probe, 'camera_info_rejected', before + len(bad) - 1, 10.0)
    stamp = image_msg(frames[0], base + FRAME_NS).header.stamp
    tracks = [m for m in probe.received['tracks'] if m.header.stamp == stamp]
    assert tracks and not tracks[0].has_intrinsics  # the node went on without intrinsics
