"""A short fuzz of the running node over real DDS: random malformed Images and CameraInfos."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from kp2d_testing.ros import require_ros_libraries

require_ros_libraries()

import rclpy  # noqa: E402
import torch  # noqa: E402

from kp2d_core import KeypointNet, save_checkpoint  # noqa: E402
from kp2d_testing.ros import (  # noqa: E402
    Probe,
    camera_info_msg,
    diagnostic_values,
    image_msg,
    ros_environment,
    spin_until,
    start_node,
    stop_node,
    unique_domain_id,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]
ENCODINGS = ['bgr8', 'rgb8', 'mono8', 'mono16', '32FC1', 'yuv422', 'bayer_rggb8', 'bgra8', 'x']
MESSAGES = 60


def _random_image(rng: np.random.Generator, stamp_ns: int):
    """An Image whose fields are each plausible or broken, at random."""
    height, width = (int(v) for v in rng.integers(0, 90, 2))
    msg = image_msg(rng.integers(0, 256, (max(height, 1), max(width, 1), 3), np.uint8), stamp_ns)
    msg.encoding = str(rng.choice(ENCODINGS))
    msg.height, msg.width = height, width
    msg.step = int(rng.integers(0, 4 * width + 8))
    msg.is_bigendian = int(rng.integers(0, 2))
    msg.data = rng.integers(
        0, 256, int(rng.integers(0, msg.step * height + 16)), np.uint8
    ).tobytes()
    if rng.random() < 0.2:
        msg.header.stamp.nanosec = int(rng.integers(10**9, 2**32))
    return msg


def _random_info(rng: np.random.Generator, stamp_ns: int):
    k = rng.choice([1e-300, -1.0, 0.0, 300.0, 1e300, np.nan, np.inf], size=9)
    return camera_info_msg(k.reshape(3, 3), (int(rng.integers(0, 2000)),) * 2, stamp_ns)


def test_random_messages_never_stop_the_node_or_poison_odometry(tmp_path, monkeypatch):
    for key, value in ros_environment(unique_domain_id() + 3).items():
        monkeypatch.setenv(key, value)
    weights = tmp_path / 'w.pt'
    torch.manual_seed(0)
    save_checkpoint(weights, KeypointNet())
    params = {'model.weights': str(weights), 'model.backend': 'torch', 'diagnostics_period_s': 0.5}
    log = tmp_path / 'node.log'
    proc = start_node(params, {'image': '/fz/image', 'camera_info': '/fz/camera_info'}, log)
    rclpy.init()
    probe = Probe('/fz')
    try:
        k = np.array([[300.0, 0.0, 159.5], [0.0, 300.0, 119.5], [0.0, 0.0, 1.0]])
        assert probe.wait_for_node(90.0, camera_info=camera_info_msg(k, (240, 320), 0))
        rng = np.random.default_rng(int(os.environ.get('KP2D_FUZZ_SEED', '0')))
        for i in range(MESSAGES):
            stamp = 1_700_000_000 * 10**9 + i * 10**7
            probe.pub_info.publish(_random_info(rng, stamp))
            probe.pub_image.publish(_random_image(rng, stamp))
            spin_until(probe.node, lambda: False, 0.02)

        def settled() -> bool:
            if not probe.received['diag']:
                return False
            values = diagnostic_values(probe.received['diag'][-1])
            handled = int(values['processed']) + int(values['dropped'])
            return handled == int(values['received']) and int(values['received']) > 0

        assert spin_until(probe.node, settled, 60.0), log.read_text()[-2000:]
        good = image_msg(np.full((96, 128, 3), 90, np.uint8), time.time_ns())  # now
        assert probe.send(good), 'the node stopped answering after the fuzz'
        for odom in probe.received['odometry']:
            assert (
                np.isfinite(odom.pose.pose.position.x) and np.isfinite(odom.pose.covariance).all()
            )
        assert proc.poll() is None and 'Traceback' not in log.read_text()
    finally:
        probe.node.destroy_node()
        rclpy.shutdown()
        assert stop_node(proc) == 0
