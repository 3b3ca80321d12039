"""The examples a user starts from work against real messages."""

from __future__ import annotations

from pathlib import Path
import signal
import subprocess
import sys
import time

import pytest

from kp2d_testing.ros import require_ros_libraries, ros_environment, unique_domain_id

require_ros_libraries(('rclpy',))
kp2d_msgs = pytest.importorskip('kp2d_msgs', reason='tools/build_msgs.py builds kp2d_msgs')

import rclpy  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ros(monkeypatch):
    for key, value in ros_environment(unique_domain_id() + 3).items():
        monkeypatch.setenv(key, value)
    rclpy.init()
    yield
    rclpy.try_shutdown()


def test_the_track_listener_reads_the_tracks_topic(ros, tmp_path):
    from kp2d_msgs.msg import FeatureTracks

    log = tmp_path / 'listener.log'
    with open(log, 'w') as handle:
        listener = subprocess.Popen(
            [sys.executable, str(ROOT / 'examples' / 'track_listener.py'), '--count', '1'],
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    node = rclpy.create_node('tracks_source')
    publisher = node.create_publisher(FeatureTracks, '/kp2d/tracks', 10)
    msg = FeatureTracks(ids=[7, 9], ages=[3, 0], xy=[10.0, 20.0, 30.0, 40.0])
    msg.normalized = [0.1, 0.2, float('nan'), float('nan')]
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 5
    try:
        deadline = time.monotonic() + 60
        while listener.poll() is None and time.monotonic() < deadline:
            publisher.publish(msg)
            rclpy.spin_once(node, timeout_sec=0.2)
        code = listener.wait(timeout=10)
    finally:
        if listener.poll() is None:
            listener.send_signal(signal.SIGINT)
            listener.wait(timeout=10)
        node.destroy_node()
    text = log.read_text()
    assert code == 0, text
    assert '12.000000005: 2 tracks, 1 continued' in text
    assert 'id 7 at (10.0, 20.0) px, normalised (0.1000, 0.2000)' in text
