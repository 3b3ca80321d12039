"""The package driven with the real ROS 2 tools, as a user would: colcon, ``ros2 launch``
(--show-args, namespace + params file, argument choices, Ctrl-C), ``ros2 param`` (get,
describe, refused sets), ``ros2 lifecycle`` and a ``tf2_ros.Buffer`` lookup of the TF."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
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
    image_msg,
    ros_environment,
    shifted_frames,
    spin_until,
    unique_domain_id,
)
from kp2d_testing.workspace import build_workspace, workspace_environment  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
HW = (240, 320)
K = np.array([[300.0, 0.0, 159.5], [0.0, 300.0, 119.5], [0.0, 0.0, 1.0]])
T0 = 1_700_000_000_123_456_789
CLI = ('--no-daemon', '--spin-time', '5')  # no background daemon, time for discovery
CAMERA_FRAME = 'kp2d_camera_optical_frame'  # frames.camera's default


@pytest.fixture(scope='module')
def tools(tmp_path_factory):
    """(environment, folder, weights) of a colcon workspace holding the package."""
    folder = tmp_path_factory.mktemp('ros_tools')
    built = build_workspace(folder / 'ws')
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    base = {**os.environ, **ros_environment(unique_domain_id() + 7)}
    base['ROS_LOG_DIR'] = str(folder / 'ros_log')
    torch.manual_seed(0)
    weights = folder / 'random.pt'
    save_checkpoint(weights, KeypointNet())  # the plumbing does not need trained weights
    return workspace_environment(folder / 'ws', base), folder, weights


def ros2(env: dict[str, str], *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        ['ros2', *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _params_file(folder: Path, weights: Path, extra: str = '') -> Path:
    path = folder / 'params.yaml'
    path.write_text(
        '/**:\n  ros__parameters:\n'
        f"    model.weights: '{weights}'\n"
        "    model.backend: 'torch'\n"
        "    model.precision: 'fp32'\n"
        '    diagnostics_period_s: 0.5\n' + extra
    )
    return path


class Launch:
    """``ros2 launch kp2d_ros kp2d.launch.py ...`` in its own session, stopped with SIGINT."""

    def __init__(self, env: dict[str, str], log: Path, *arguments: str) -> None:
        self.log = log
        self.handle = open(log, 'w')  # noqa: SIM115 - the child writes until it ends
        self.proc = subprocess.Popen(
            ['ros2', 'launch', 'kp2d_ros', 'kp2d.launch.py', *arguments],
            env=env,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_for(self, text: str, timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if text in self.log.read_text():
                return True
            time.sleep(0.2)
        return text in self.log.read_text()

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the process group, as a terminal sends it."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.handle.close()


def test_show_args_and_argument_choices(tools):
    env, _, _ = tools
    shown = ros2(env, 'launch', 'kp2d_ros', 'kp2d.launch.py', '--show-args')
    assert shown.returncode == 0, shown.stderr
    for name in ('params_file', 'image_topic', 'namespace', 'image_transport', 'lifecycle'):
        assert f"'{name}':" in shown.stdout
    assert "Valid choices are: ['', 'raw', 'compressed']" in shown.stdout
    wrong = ros2(env, 'launch', 'kp2d_ros', 'kp2d.launch.py', 'image_transport:=foo')
    assert wrong.returncode != 0  # refused before any node starts
    assert 'image_transport' in wrong.stdout + wrong.stderr


def test_namespace_params_file_and_parameter_tools(tools):
    """The params file's values hold (the launch file does not override them), ranges show in
    ``ros2 param describe``, wrong values are refused, and Ctrl-C ends everything cleanly."""
    env, folder, weights = tools
    extra = "    image_transport: 'compressed'\n    detector.top_k: 321\n    detector.topk: 5\n"
    params = _params_file(folder, weights, extra)
    launch = Launch(env, folder / 'launch.log', 'namespace:=front', f'params_file:={params}')
    try:
        assert launch.wait_for('kp2d ready'), launch.log.read_text()[-3000:]
        got = ros2(env, 'param', 'get', *CLI, '/front/kp2d', 'image_transport')
        assert 'compressed' in got.stdout, got.stdout + got.stderr
        assert '321' in ros2(env, 'param', 'get', *CLI, '/front/kp2d', 'detector.top_k').stdout
        described = ros2(env, 'param', 'describe', *CLI, '/front/kp2d', 'detector.top_k').stdout
        assert 'Min value: 1' in described and 'Max value: 100000' in described
        refused = ros2(env, 'param', 'set', *CLI, '/front/kp2d', 'detector.top_k', '0')
        assert 'Set parameter successful' not in refused.stdout
        nan = ros2(env, 'param', 'set', *CLI, '/front/kp2d', 'tracker.ransac_threshold_px', 'nan')
        assert 'Set parameter successful' not in nan.stdout
        ok = ros2(env, 'param', 'set', *CLI, '/front/kp2d', 'detector.resize', '[120, 160]')
        assert 'Set parameter successful' in ok.stdout, ok.stdout + ok.stderr
    finally:
        code = launch.interrupt()
    text = launch.log.read_text()
    assert code == 0 and 'Traceback' not in text, text[-3000:]
    assert 'ignoring unknown parameters (misspelled?): detector.topk' in text


def test_switches_take_any_case_and_a_failed_start_says_so(tools):
    """``use_sim_time:=True`` (as users type it) is taken; a node that fails at start-up
    (missing weights) ends the launch with one plain ERROR line beside its FATAL one."""
    env, folder, weights = tools
    params = _params_file(folder, weights)
    launch = Launch(
        env, folder / 'sim.log', 'use_sim_time:=True', 'lifecycle:=False', f'params_file:={params}'
    )
    try:
        assert launch.wait_for('kp2d ready'), launch.log.read_text()[-3000:]
        got = ros2(env, 'param', 'get', *CLI, '/kp2d', 'use_sim_time')
        assert 'True' in got.stdout, got.stdout + got.stderr
    finally:
        assert launch.interrupt() == 0
    missing = _params_file(folder, folder / 'no_such_weights.pt')
    failed = ros2(env, 'launch', 'kp2d_ros', 'kp2d.launch.py', f'params_file:={missing}')
    text = failed.stdout + failed.stderr
    assert 'FATAL' in text and 'kp2d node failed (exit code 1)' in text, text[-3000:]
    wrong = ros2(env, 'launch', 'kp2d_ros', 'kp2d.launch.py', 'use_sim_time:=yes')
    assert 'must be true or false' in wrong.stdout + wrong.stderr


def test_lifecycle_transitions_with_ros2_lifecycle(tools):
    env, folder, weights = tools
    params = _params_file(folder, weights)
    launch = Launch(
        env, folder / 'lifecycle.log', 'lifecycle:=true', 'namespace:=lc', f'params_file:={params}'
    )
    try:
        assert launch.wait_for('process started'), launch.log.read_text()[-2000:]
        for transition in ('configure', 'activate'):
            done = ros2(env, 'lifecycle', 'set', *CLI, '/lc/kp2d', transition, timeout=120)
            assert 'Transitioning successful' in done.stdout, done.stdout + done.stderr
        state = ros2(env, 'lifecycle', 'get', *CLI, '/lc/kp2d').stdout
        assert state.startswith('active'), state
        done = ros2(env, 'lifecycle', 'set', *CLI, '/lc/kp2d', 'deactivate')
        assert 'Transitioning successful' in done.stdout
    finally:
        code = launch.interrupt()
    assert code == 0 and 'Traceback' not in launch.log.read_text()


def test_tf_switched_on_at_runtime_reaches_a_tf2_buffer(tools, monkeypatch):
    """``ros2 param set ... publish.tf true`` on a running node: a tf2_ros.Buffer then looks up
    frames.odom -> frames.camera at the frame's exact stamp."""
    from tf2_ros import Buffer, TransformListener

    env, folder, weights = tools
    for key in (
        'ROS_DOMAIN_ID',
        'ROS_AUTOMATIC_DISCOVERY_RANGE',
        'FASTRTPS_DEFAULT_PROFILES_FILE',
    ):
        monkeypatch.setenv(key, env[key])
    params = _params_file(folder, weights)
    launch = Launch(
        env,
        folder / 'tf.log',
        'namespace:=tf',
        f'params_file:={params}',
        'image_topic:=/tf_test/image',
        'camera_info_topic:=/tf_test/camera_info',
    )
    rclpy.init()
    probe = Probe('/tf_test', node='/tf/kp2d')
    buffer = Buffer()
    TransformListener(buffer, probe.node)
    try:
        assert launch.wait_for('kp2d ready'), launch.log.read_text()[-2000:]
        assert probe.wait_for_node(60.0, camera_info=camera_info_msg(K, HW, T0 - 10**10))
        switched = ros2(env, 'param', 'set', *CLI, '/tf/kp2d', 'publish.tf', 'true')
        assert 'Set parameter successful' in switched.stdout, switched.stdout + switched.stderr
        frames, _ = shifted_frames(3, HW)
        stamps = [T0 + k * 100_000_000 for k in range(3)]
        for frame, stamp in zip(frames, stamps):
            assert probe.send(image_msg(frame, stamp), camera_info_msg(K, HW, stamp))
        when = rclpy.time.Time(nanoseconds=stamps[-1])
        assert spin_until(
            probe.node, lambda: buffer.can_transform('kp2d_odom', CAMERA_FRAME, when), 20.0
        ), launch.log.read_text()[-2000:]
        moved = buffer.lookup_transform('kp2d_odom', CAMERA_FRAME, when).transform.translation
        assert moved.x > 0.0 and moved.y > 0.0  # the camera slid towards +x, +y
    finally:
        probe.node.destroy_node()
        rclpy.try_shutdown()
        code = launch.interrupt()
    assert code == 0 and 'Traceback' not in launch.log.read_text()
