"""The kp2d node in its own process, driven over real DDS by a probe node (real rclpy)."""

from __future__ import annotations

import os

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='needs rclpy (make test installs the ROS wheels)')

import torch  # noqa: E402

from kp2d_core import KeypointNet, save_checkpoint  # noqa: E402
from kp2d_core.geometry import corner_error  # noqa: E402
from kp2d_core.samples import read_image, sample_photo_path  # noqa: E402
from kp2d_ros.messages import cloud_to_arrays  # noqa: E402
from kp2d_testing.ros import (  # noqa: E402
    Probe,
    camera_info_msg,
    image_msg,
    ros_environment,
    spin_until,
    start_node,
    stop_node,
    unique_domain_id,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]
HW = (240, 320)
K = np.array([[300.0, 0.0, 159.5], [0.0, 300.0, 119.5], [0.0, 0.0, 1.0]])
T0 = 1_700_000_000 * 10**9  # a plausible sensor stamp (ns)
FRAME_NS = 100_000_000


@pytest.fixture(scope='module')
def session(tmp_path_factory):
    """Node process + probe node on a private DDS domain; yields (probe, node process, log)."""
    saved = dict(os.environ)
    os.environ.update(ros_environment(unique_domain_id()))
    folder = tmp_path_factory.mktemp('node')
    log, weights = folder / 'node.log', folder / 'random.pt'
    torch.manual_seed(0)
    save_checkpoint(weights, KeypointNet())  # the plumbing test does not need trained weights
    params = {
        'model.weights': str(weights),
        'model.device': 'cpu',
        'detector.top_k': 500,
        'diagnostics_period_s': 1.0,
    }
    proc = start_node(params, {'image': '/test/image', 'camera_info': '/test/camera_info'}, log)
    rclpy.init()
    probe = Probe('/test')
    try:
        assert probe.wait_for_node(90.0), f'node did not come up:\n{log.read_text()[-3000:]}'
        yield probe, proc, log
    finally:
        probe.node.destroy_node()
        rclpy.shutdown()
        code = stop_node(proc)
        os.environ.clear()
        os.environ.update(saved)
        assert code in (0, -2), f'node exited with {code}:\n{log.read_text()[-3000:]}'


def _frames(n: int = 6):
    """A camera sliding over the bundled photo by whole 8-px cells, with exact homographies.

    Shifts by the network stride make even a random network equivariant, so the node's
    homography must match the truth to a fraction of a pixel: this checks the plumbing and
    the geometry, not the quality of the weights.
    """
    photo = read_image(sample_photo_path())
    frames, H_0to = [], []
    for k in range(n):
        x, y = 60 + 8 * k, 40 + 8 * k
        frames.append(np.ascontiguousarray(photo[y : y + HW[0], x : x + HW[1]]))
        H_0to.append(np.array([[1.0, 0.0, -8.0 * k], [0.0, 1.0, -8.0 * k], [0.0, 0.0, 1.0]]))
    return frames, H_0to


def test_homography_odometry_and_headers(session):
    probe, proc, _ = session
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
    assert len(homographies) == len(frames) - 1
    for msg in homographies:
        values = np.asarray(msg.data)
        H, cur, key = values[:9].reshape(3, 3), values[11], values[12]
        k = int(round((cur - T0 / 1e9) * 10))
        key_index = int(round((key - T0 / 1e9) * 10))
        truth = H_0to[k] @ np.linalg.inv(H_0to[key_index])
        assert values[9] >= 4 and values[10] >= values[9]
        assert corner_error(H, truth, *HW) < 0.5, (k, key_index)
    odometry = probe.received['odometry']
    last_stamp = clouds[-1].header.stamp

    def last_pose_arrived() -> bool:
        return any(m.header.stamp == last_stamp for m in odometry)

    assert spin_until(probe.node, last_pose_arrived, 10)
    # Frame 0 has a pose too when its CameraInfo arrived first (not guaranteed between topics).
    assert len(odometry) >= len(frames) - 1
    last_msg = next(m for m in odometry if m.header.stamp == last_stamp)
    assert last_msg.header.frame_id == 'kp2d_odom'
    assert last_msg.child_frame_id == 'camera_optical_frame'
    # Sliding 8 px per frame over a plane at unit distance with f = 300 px: the camera moves
    # by 8/300 per frame along +x and +y (units of the plane distance), without rotating.
    last = last_msg.pose.pose
    shift = 8.0 * (len(frames) - 1) / K[0, 0]
    position = [last.position.x, last.position.y, last.position.z]
    assert np.allclose(position, [shift, shift, 0.0], atol=0.01), position
    assert abs(last.orientation.w) > 0.9999


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
        variant(encoding='yuv422'),
        variant(step=good.step - 1),
        variant(data=bytes(good.data)[:-7]),
        variant(height=0, width=0, step=0, data=b''),
        variant(height=4, width=4, step=12, data=bytes(48)),
        variant(encoding='32FC1', step=4 * HW[1], data=nan.tobytes()),
    ]


def _dropped(probe) -> int:
    """The node's cumulative dropped-frame count from its latest /diagnostics message."""
    if not probe.received['diag']:
        return 0
    values = {v.key: v.value for v in probe.received['diag'][-1].status[0].values}
    return int(values.get('dropped', 0))


def test_malformed_images_do_not_kill_the_node(session):
    probe, proc, log = session
    frames, _ = _frames(2)
    base = T0 + 10**12
    good = image_msg(frames[0], base)
    for i, bad in enumerate(_bad_messages(good)):
        bad.header.stamp.sec += i + 1
        before = _dropped(probe)
        for _ in range(10):  # best effort: resend until the node has counted it
            probe.pub_image.publish(bad)
            if spin_until(probe.node, lambda b=before: _dropped(probe) > b, 3.0):
                break
        assert _dropped(probe) > before, f'bad image {i} not counted:\n{log.read_text()[-2000:]}'
    later = image_msg(frames[1], base + 10 * 10**9)
    assert probe.send(later), 'node stopped answering after malformed input'
    stale = image_msg(frames[1], base + 5 * 10**9)  # stamp going backwards: dropped
    before = _dropped(probe)
    probe.pub_image.publish(stale)
    assert spin_until(probe.node, lambda: _dropped(probe) > before, 10.0)
    assert not any(m.header.stamp == stale.header.stamp for m in probe.received['keypoints'])
    assert proc.poll() is None
    assert 'unsupported encoding' in log.read_text()


def test_parameter_validation(session):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    probe, _, _ = session
    client = probe.node.create_client(SetParameters, '/kp2d/set_parameters')
    assert client.wait_for_service(timeout_sec=30.0)

    def set_param(name: str, value: ParameterValue) -> bool:
        future = client.call_async(
            SetParameters.Request(parameters=[Parameter(name=name, value=value)])
        )
        assert spin_until(probe.node, future.done, 30.0)
        return future.result().results[0].successful

    def integer(v: int) -> ParameterValue:
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)

    def double(v: float) -> ParameterValue:
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)

    assert not set_param('detector.top_k', integer(0))
    assert not set_param('detector.score_threshold', double(1.5))
    assert not set_param('tracker.ransac_threshold_px', double(-1.0))
    assert not set_param('detector.resize_height', integer(240))  # width still 0
    text = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value='/x.pt')
    assert not set_param('model.weights', text)  # read-only
    assert set_param('detector.top_k', integer(200))
    frames, _ = _frames(1)
    msg = image_msg(frames[0], T0 + 10**13)
    assert probe.send(msg)
    kpts, _, _ = cloud_to_arrays(probe.received['keypoints'][-1])
    assert len(kpts) == 200


def test_missing_weights_stop_the_node_with_a_clear_error(tmp_path, monkeypatch):
    for key, value in ros_environment(unique_domain_id()).items():
        monkeypatch.setenv(key, value)
    log = tmp_path / 'node.log'
    proc = start_node({'model.weights': str(tmp_path / 'missing.pt')}, {}, log)
    assert proc.wait(timeout=120) == 1
    assert 'cannot start: checkpoint not found' in log.read_text()


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
