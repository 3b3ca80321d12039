"""How the node is started: namespaces and params files, transports and QoS, simulated time,
the lifecycle variant, start-up failures and shutdown (real rclpy, node in its own process)."""

from __future__ import annotations

import os
import signal
import time

import cv2
import numpy as np
import pytest

from kp2d_testing.ros import require_ros_libraries

require_ros_libraries()

import rclpy  # noqa: E402
import torch  # noqa: E402

from kp2d_core import KeypointNet, save_checkpoint  # noqa: E402
from kp2d_core.images import read_image  # noqa: E402
from kp2d_core.inference.probe import sample_photo_path  # noqa: E402
from kp2d_ros.parameter_docs import yaml_text  # noqa: E402
from kp2d_testing.ros import (  # noqa: E402
    Probe,
    diagnostic_values,
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


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('w') / 'random.pt'
    save_checkpoint(path, KeypointNet())
    return path


@pytest.fixture
def ros(monkeypatch):
    """A private DDS domain for this test, and rclpy initialised in the test process."""
    for key, value in ros_environment(unique_domain_id() + 1).items():
        monkeypatch.setenv(key, value)
    rclpy.init()
    yield
    rclpy.try_shutdown()


def _frame() -> np.ndarray:
    return np.ascontiguousarray(read_image(sample_photo_path())[40 : 40 + HW[0], 60 : 60 + HW[1]])


def _base_params(weights) -> dict:
    return {'model.weights': str(weights), 'model.backend': 'torch', 'model.precision': 'fp32'}


def _finish(proc, log) -> None:
    code = stop_node(proc)
    text = log.read_text()
    assert code == 0 and 'Traceback' not in text, f'exit {code}:\n{text[-3000:]}'


def _get_parameters(node, service: str, names: list[str]) -> list:
    from rcl_interfaces.srv import GetParameters

    client = node.create_client(GetParameters, service)
    assert client.wait_for_service(timeout_sec=60.0), f'{service} not available'
    future = client.call_async(GetParameters.Request(names=names))
    assert spin_until(node, future.done, 30.0)
    return future.result().values


def test_params_file_applies_under_a_namespace(ros, weights, tmp_path):
    params = tmp_path / 'params.yaml'
    params.write_text(yaml_text().replace('detector.top_k: 1000', 'detector.top_k: 123'))
    log = tmp_path / 'node.log'
    remaps = {'__ns': '/front', 'image': '/front/camera/image'}
    proc = start_node(_base_params(weights), remaps, log, params_file=params)
    probe = Probe('/front/camera', node='/front/kp2d')
    try:
        values = _get_parameters(probe.node, '/front/kp2d/get_parameters', ['detector.top_k'])
        assert values[0].integer_value == 123  # the file's value, not the default
        assert probe.wait_for_node(60.0)
        assert probe.send(image_msg(_frame(), 1_700_000_000 * 10**9))
    finally:
        probe.node.destroy_node()
        _finish(proc, log)


def test_compressed_reliable_input_and_simulated_time(ros, weights, tmp_path):
    from builtin_interfaces.msg import Time
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CompressedImage

    log = tmp_path / 'node.log'
    params = {
        **_base_params(weights),
        'image_transport': 'compressed',
        'image_reliability': 'reliable',
        'use_sim_time': True,
        'diagnostics_period_s': 0.5,
    }
    proc = start_node(params, {'image/compressed': '/cam/image/compressed'}, log)
    probe = Probe('/cam')
    try:
        clock = probe.node.create_publisher(Clock, '/clock', 10)
        publisher = probe.node.create_publisher(
            CompressedImage,
            '/cam/image/compressed',
            QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE),
        )
        assert spin_until(probe.node, lambda: publisher.get_subscription_count() > 0, 60.0)
        infos = probe.node.get_subscriptions_info_by_topic('/cam/image/compressed')
        assert infos and infos[0].qos_profile.reliability == ReliabilityPolicy.RELIABLE
        sim_now = 100.0  # simulated seconds: far behind the wall clock
        for _ in range(20):  # the node must receive /clock before stamps are checked
            clock.publish(Clock(clock=Time(sec=int(sim_now))))
            spin_until(probe.node, lambda: False, 0.05)
        jpeg = cv2.imencode('.jpg', _frame())[1].tobytes()

        def send(sec: int) -> bool:
            msg = CompressedImage(format='bgr8; jpeg compressed bgr8', data=jpeg)
            msg.header.stamp.sec = sec
            publisher.publish(msg)
            stamp = msg.header.stamp
            return spin_until(
                probe.node,
                lambda: any(m.header.stamp == stamp for m in probe.received['keypoints']),
                30.0,
            )

        assert send(int(sim_now) + 1), 'a JPEG frame stamped in simulated time was not processed'
        wall = int(time.time())  # an hour of simulated time ahead: not plausible any more
        assert not send(wall), 'a wall-clock stamp passed although the node runs on /clock'
    finally:
        probe.node.destroy_node()
        _finish(proc, log)


def test_lifecycle_node_works_only_when_active(ros, weights, tmp_path):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    log = tmp_path / 'node.log'
    proc = start_node(_base_params(weights), {'image': '/lc/image'}, log, lifecycle=True)
    probe = Probe('/lc')
    try:
        client = probe.node.create_client(ChangeState, '/kp2d/change_state')
        assert client.wait_for_service(timeout_sec=60.0)

        def change(transition: int) -> bool:
            future = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
            assert spin_until(probe.node, future.done, 90.0)
            return future.result().success

        assert probe.pub_image.get_subscription_count() == 0  # unconfigured: no input
        assert change(Transition.TRANSITION_CONFIGURE)
        assert change(Transition.TRANSITION_ACTIVATE)
        assert probe.wait_for_node(30.0)
        assert probe.send(image_msg(_frame(), 1_700_000_000 * 10**9))
        assert change(Transition.TRANSITION_DEACTIVATE)
        assert spin_until(probe.node, lambda: probe.pub_image.get_subscription_count() == 0, 10)
    finally:
        probe.node.destroy_node()
        _finish(proc, log)


@pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='reads /proc/PID/maps (Linux)')
@pytest.mark.parametrize('variant', ['default', 'light'])
def test_default_node_on_a_cpu_runs_without_pytorch(ros, tmp_path, variant):
    """With the defaults on a machine without CUDA (bundled weights of either variant,
    automatic backend), the node runs the ONNX Runtime int8 model (and beside the default
    model the light one) and never maps PyTorch's libraries (about 200 MiB of its memory,
    README Node memory)."""
    log = tmp_path / 'node.log'
    proc = start_node({'model.variant': variant}, {'image': '/np/image'}, log)
    probe = Probe('/np')
    try:
        assert probe.wait_for_node(90.0), log.read_text()[-2000:]
        assert probe.send(image_msg(_frame(), 1_700_000_000 * 10**9))
        maps = open(f'/proc/{proc.pid}/maps').read()  # noqa: SIM115 - read at once
    finally:
        probe.node.destroy_node()
        _finish(proc, log)
    ready = next(line for line in log.read_text().splitlines() if 'kp2d ready' in line)
    # The start-up line names the file that runs and the weights it was checked against.
    assert 'onnxruntime:int8 on cpu, running ' in ready and f'kp2d_{variant}.int8.onnx' in ready
    assert 'checked against ' in ready and f'kp2d_{variant}.pt' in ready
    assert 'onnxruntime' in maps and 'libtorch' not in maps
    # Beside the default model, the light one runs where Lucas-Kanade fails (recovery_model).
    recovery = [line for line in log.read_text().splitlines() if 'Lucas-Kanade fails' in line]
    assert len(recovery) == (variant == 'default'), recovery
    assert all('kp2d_light.int8.onnx' in line for line in recovery)


def test_the_default_node_runs_the_network_on_some_frames_only(ros, tmp_path):
    """``tracker.mode`` defaults to hybrid: on a camera sliding over a photo (bundled light
    model), Lucas-Kanade carries the tracks between the network's frames, so every frame has
    keypoints and a homography, the tracks keep their ids, and /diagnostics reports the share
    of frames the network ran on."""
    log = tmp_path / 'node.log'
    params = {'model.variant': 'light', 'diagnostics_period_s': 0.5, 'diagnostics.window_s': 60.0}
    proc = start_node(params, {'image': '/hy/image'}, log)
    probe = Probe('/hy')
    frames, _ = shifted_frames(12, HW)
    stamps = [1_700_000_000 * 10**9 + k * 100_000_000 for k in range(len(frames))]
    try:
        assert probe.wait_for_node(90.0), log.read_text()[-2000:]
        for frame, stamp in zip(frames, stamps):
            assert probe.send(image_msg(frame, stamp)), f'no keypoints for {stamp}'

        def reported() -> dict[str, str]:
            values = [diagnostic_values(m) for m in probe.received['diag']]
            done = [v for v in values if int(v.get('processed', 0)) >= len(frames)]
            return done[-1] if done else {}

        assert spin_until(probe.node, lambda: bool(reported()), 10.0)
        assert spin_until(
            probe.node, lambda: len(probe.received['homography']) >= len(frames) - 1, 10.0
        )
        by_stamp = {
            m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: m
            for m in probe.received['tracks']
        }
    finally:
        probe.node.destroy_node()
        _finish(proc, log)
    share = float(reported()['network_share'])
    assert 0.0 < share <= 0.5, share  # first frame, then every detect_interval frames or so
    last = by_stamp[stamps[-1]]
    assert (np.asarray(last.ages) >= len(frames) - 2).sum() >= 20  # tracks from the start
    assert len(set(last.ids) & set(by_stamp[stamps[1]].ids)) >= 20  # with their ids


@pytest.mark.parametrize('delay_s', [0.5, None])
def test_sigint_to_the_process_group_exits_cleanly(ros, weights, tmp_path, delay_s):
    log = tmp_path / 'node.log'
    proc = start_node(_base_params(weights), {}, log)
    if delay_s is None:  # once it runs
        deadline = time.time() + 90
        while 'kp2d ready' not in log.read_text() and time.time() < deadline:
            time.sleep(0.2)
    else:  # while it is still importing or loading
        time.sleep(delay_s)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    assert 'Traceback' not in log.read_text() and 'KeyboardInterrupt' not in log.read_text()


@pytest.mark.parametrize('kind', ['missing', 'directory', 'huge descriptor', 'tampered'])
def test_bad_weights_stop_the_node_with_one_fatal_line(ros, tmp_path, kind):
    path = tmp_path / 'w.pt'
    if kind == 'directory':
        path = tmp_path
    elif kind != 'missing':
        torch.manual_seed(0)
        model = KeypointNet()
        if kind == 'tampered':
            with torch.no_grad():
                model.score_head.body[-1].weight[0, 0, 0, 0] = 3e38
        save_checkpoint(path, model)
        if kind == 'huge descriptor':
            ckpt = torch.load(path, weights_only=True)
            ckpt['model_config']['descriptor_dim'] = 2_000_000
            torch.save(ckpt, path)
    log = tmp_path / 'node.log'
    proc = start_node({'model.weights': str(path)}, {}, log)
    assert proc.wait(timeout=120) == 1
    text = log.read_text()
    fatal = [line for line in text.splitlines() if 'FATAL' in line]
    assert len(fatal) == 1 and 'cannot start' in fatal[0] and str(path) in fatal[0], text
    assert 'Traceback' not in text


@pytest.mark.parametrize(
    ('value', 'message'),
    [
        ('detector.top_k:=1.5', 'detector.top_k must be integer, got double 1.5'),
        ('detector.top_k:=many', "detector.top_k must be integer, got string 'many'"),
        ("publish.odometry:='yes'", "publish.odometry must be bool, got string 'yes'"),
        ('detector.resize:=5', 'detector.resize must be integer array, got integer 5'),
        ('diagnostics_period_s:=1e300', 'diagnostics_period_s must be in [0.1, 3600]'),
        ('diagnostics_period_s:=1e-9', 'diagnostics_period_s must be in [0.1, 3600]'),
        ('model.device:=x', "model.device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ('detector.resize:=[100000,100000]', 'detector.resize must be [0, 0] or'),
    ],
)
@pytest.mark.parametrize('route', ['-p', 'params file'])
def test_bad_parameter_values_stop_the_node_with_one_fatal_line(
    ros, weights, tmp_path, value, message, route
):
    name, raw = value.split(':=')
    log = tmp_path / 'node.log'
    if route == '-p':
        proc = start_node({**_base_params(weights), name: raw}, {}, log, params_file=None)
    else:
        params = tmp_path / 'params.yaml'
        params.write_text(f'/**:\n  ros__parameters:\n    {name}: {raw}\n')
        proc = start_node(_base_params(weights), {}, log, params_file=params)
    assert proc.wait(timeout=120) == 1
    text = log.read_text()
    fatal = [line for line in text.splitlines() if 'FATAL' in line]
    assert len(fatal) == 1 and message in fatal[0], text
    assert 'Traceback' not in text and len(text.splitlines()) < 10


@pytest.mark.parametrize(
    ('content', 'message'),
    [
        ('/**:\n  ros__parameters: [unclosed\n', 'is not valid YAML'),
        (None, 'No such file'),
    ],
)
def test_an_unreadable_params_file_stops_the_node_in_one_line(
    ros, weights, tmp_path, content, message
):
    params = tmp_path / 'params.yaml'
    if content is not None:
        params.write_text(content)
    log = tmp_path / 'node.log'
    proc = start_node(_base_params(weights), {}, log, params_file=params)
    assert proc.wait(timeout=120) == 1
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert len(lines) == 1 and 'cannot start' in lines[0] and message in lines[0], lines
    assert str(params) in lines[0]


def test_idle_node_says_so_once_and_unknown_keys_are_named(ros, weights, tmp_path):
    params = tmp_path / 'params.yaml'
    params.write_text(yaml_text() + '    detector.topk: 5\n    tracker.ransac_treshold: 2.0\n')
    log = tmp_path / 'node.log'
    quick = {**_base_params(weights), 'diagnostics_period_s': 0.2}
    proc = start_node(quick, {}, log, params_file=params)
    try:
        deadline = time.time() + 90
        while 'kp2d ready' not in log.read_text() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)  # ten status periods without input
    finally:
        _finish(proc, log)
    text = log.read_text()
    assert text.count('waiting for images') == 1, text
    unknown = [line for line in text.splitlines() if 'unknown parameters' in line]
    assert len(unknown) == 1 and 'detector.topk' in unknown[0]
    assert 'tracker.ransac_treshold' in unknown[0]
