"""kp2d_core must import on a machine without ROS and must not pull any ROS module in."""

from __future__ import annotations

import subprocess
import sys

ROS_MODULES = ('rclpy', 'sensor_msgs', 'std_msgs', 'cv_bridge', 'message_filters', 'launch')

SCRIPT = f"""
import sys
for name in {ROS_MODULES!r}:
    sys.modules[name] = None  # any import of these now raises ImportError
import kp2d_core, kp2d_core.data.samples, kp2d_core.viz, kp2d_core.vo.frame_pipeline
import kp2d_ros.parameters
loaded = sorted(m for m in sys.modules if m.split('.')[0] in {ROS_MODULES!r}
                and sys.modules[m] is not None)
print('LOADED', loaded)
"""


def test_core_imports_without_ros():
    out = subprocess.run(
        [sys.executable, '-c', SCRIPT], capture_output=True, text=True, check=False, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert 'LOADED []' in out.stdout
