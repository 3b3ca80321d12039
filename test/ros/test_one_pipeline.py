"""The node, the replay tool and the demo compute the same homographies: one frame pipeline."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from kp2d_testing.ros import require_ros_libraries

require_ros_libraries()

import rclpy  # noqa: E402

pytest.importorskip('rosbags', reason='pip install rosbags')

from rosbags.rosbag2 import StoragePlugin  # noqa: E402

from examples.demo import run_sequence  # noqa: E402
from kp2d_core.data.samples import synthetic_sequence  # noqa: E402
from kp2d_core.vo.frame_pipeline import FramePipeline  # noqa: E402
from kp2d_ros.parameter_docs import yaml_text  # noqa: E402
from kp2d_ros.parameters import options_from_values  # noqa: E402
from kp2d_ros.params_file import params_file_values  # noqa: E402
from kp2d_ros.replay import parse_args, replay  # noqa: E402
from kp2d_testing.bags import write_bag  # noqa: E402
from kp2d_testing.ros import (  # noqa: E402
    Probe,
    homography_of,
    image_msg,
    ros_environment,
    spin_until,
    start_node,
    stop_node,
    unique_domain_id,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]
HW = (240, 320)
FRAMES = 8
PERIOD_NS = 100_000_000  # the demo's frame period
T0 = 1_700_000_000_000_000_123  # node and replay stamps (0 is no time for them)


def _params(tmp_path):
    """The shipped defaults, on the eager fp32 backend so all three run the same arithmetic."""
    text = yaml_text().replace("model.backend: 'auto'", "model.backend: 'torch'")
    path = tmp_path / 'params.yaml'
    path.write_text(text.replace("model.precision: 'auto'", "model.precision: 'fp32'"))
    return path


def _node_homographies(frames, params, tmp_path, monkeypatch) -> dict[int, np.ndarray]:
    for key, value in ros_environment(unique_domain_id() + 2).items():
        monkeypatch.setenv(key, value)
    log = tmp_path / 'node.log'
    proc = start_node({}, {'image': '/seq/image'}, log, params_file=params)
    rclpy.init()
    probe = Probe('/seq')
    found = {}
    try:
        assert probe.wait_for_node(90.0), log.read_text()[-2000:]
        for index, frame in enumerate(frames):
            assert probe.send(image_msg(frame, T0 + index * PERIOD_NS), timeout=60.0)
            if index:
                stamp = image_msg(frame, T0 + index * PERIOD_NS).header.stamp
                assert spin_until(
                    probe.node,
                    lambda s=stamp: any(m.header.stamp == s for m in probe.received['homography']),
                    30.0,
                )
        for msg in probe.received['homography']:
            H, stamp, _, _, _ = homography_of(msg)
            found[(stamp - T0) // PERIOD_NS] = H
    finally:
        probe.node.destroy_node()
        rclpy.shutdown()
        assert stop_node(proc) == 0
    return found


def test_node_replay_and_demo_agree(tmp_path, monkeypatch):
    params = _params(tmp_path)
    frames, _ = synthetic_sequence(FRAMES, HW)
    options = options_from_values(params_file_values(str(params))[0])
    demo_results, _ = run_sequence(FramePipeline.from_config(options.pipeline), frames)
    demo = {i: r.track.H_key_to_cur for i, r in enumerate(demo_results) if i}
    assert all(H is not None for H in demo.values())

    bag = tmp_path / 'bag'
    write_bag(bag, StoragePlugin.MCAP, frames, stamp0=T0, period=PERIOD_NS, hw=HW)
    out = tmp_path / 'replay'
    replay(
        parse_args(
            [
                str(bag),
                '--image-topic',
                '/cam/image',
                '--out',
                str(out),
                '--params-file',
                str(params),
            ]
        )
    )
    rows = list(csv.DictReader((out / 'trajectory.csv').open()))
    from_replay = {
        i: np.array([float(r[f'h{a}{b}']) for a in range(3) for b in range(3)]).reshape(3, 3)
        for i, r in enumerate(rows)
        if i
    }
    node = _node_homographies(frames, params, tmp_path, monkeypatch)
    assert sorted(node) == sorted(from_replay) == sorted(demo) == list(range(1, FRAMES))
    for index in demo:
        np.testing.assert_allclose(from_replay[index], demo[index], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(node[index], demo[index], rtol=1e-9, atol=1e-12)
    assert os.environ.get('ROS_DOMAIN_ID')  # the node ran in its private domain
