"""Offline replay of rosbag2 recordings (MCAP and sqlite3) through the kp2d pipeline."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from kp2d_core import KeypointNet, save_checkpoint
from kp2d_core.data.samples import synthetic_sequence
from kp2d_ros.dependencies import REPLAY_LIBRARIES
from kp2d_ros.replay import main, parse_args, read_messages, replay
from kp2d_testing.ros import require_ros_libraries

require_ros_libraries(REPLAY_LIBRARIES)
rosbags = pytest.importorskip('rosbags', reason='pip install rosbags')
from rosbags.rosbag2 import StoragePlugin  # noqa: E402

from kp2d_testing.bags import write_bag  # noqa: E402
from kp2d_testing.blas_spy import blas_threads_seen  # noqa: E402

HW = (120, 160)
K = np.array([[150.0, 0, 79.5], [0, 150.0, 59.5], [0, 0, 1]])


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('ckpt') / 'model.pt'
    save_checkpoint(path, KeypointNet())
    return path


@pytest.mark.parametrize('plugin', [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_replay_writes_trajectory_and_images(tmp_path, checkpoint, plugin):
    frames, _ = synthetic_sequence(5, HW)
    bag = tmp_path / 'bag'
    write_bag(bag, plugin, frames, bad_at=2)
    assert sum(1 for _ in read_messages(bag, ['/cam/image'])) == 5
    out = tmp_path / 'out'
    params = tmp_path / 'params.yaml'
    params.write_text('/**:\n  ros__parameters:\n    detector.top_k: 300\n')
    args = parse_args(
        [
            str(bag),
            '--image-topic',
            '/cam/image',
            '--camera-info-topic',
            '/cam/info',
            '--out',
            str(out),
            '--checkpoint',
            str(checkpoint),
            '--device',
            'cpu',
            '--png-every',
            '2',
            '--video',
            '--params-file',
            str(params),
        ]
    )
    assert replay(args) == 4  # the frame with an unknown encoding is skipped, not fatal
    rows = list(csv.DictReader((out / 'trajectory.csv').open()))
    assert len(rows) == 4
    assert rows[0]['reason'] == 'first_frame' and rows[0]['qw'] != ''
    assert int(rows[1]['stamp_ns']) == 10**18 + 10**8  # exact integer nanoseconds
    tracks = list(csv.DictReader((out / 'tracks.csv').open()))
    assert tracks and {r['stamp_ns'] for r in tracks} <= {r['stamp_ns'] for r in rows}
    continued = [r for r in tracks if int(r['age']) > 0]
    assert continued and all(r['x_n'] != '' for r in continued)  # CameraInfo in the bag
    homographies = [r for r in rows[1:] if r['h00'] != 'nan']
    assert homographies and all(int(r['inliers']) >= 4 for r in homographies)
    assert all(int(r['matches']) <= 300 for r in rows)  # detector.top_k from the params file
    assert (out / 'replay.mp4').stat().st_size > 0
    assert sorted(p.name for p in out.glob('*.png')) == ['frame_000000.png', 'frame_000002.png']


def test_unknown_topic_is_a_clear_error(tmp_path, checkpoint):
    frames, _ = synthetic_sequence(2, HW)
    write_bag(tmp_path / 'bag', StoragePlugin.MCAP, frames)
    with pytest.raises(SystemExit, match='not in'):
        main(
            [
                str(tmp_path / 'bag'),
                '--image-topic',
                '/nope',
                '--checkpoint',
                str(checkpoint),
                '--out',
                str(tmp_path / 'o'),
            ]
        )


def test_bad_camera_info_is_skipped_like_the_node_does(tmp_path, checkpoint):
    frames, _ = synthetic_sequence(4, HW)
    write_bag(tmp_path / 'bag', StoragePlugin.MCAP, frames, bad_info_at=1)
    args = parse_args(
        [str(tmp_path / 'bag'), '--image-topic', '/cam/image', '--camera-info-topic', '/cam/info']
        + ['--checkpoint', str(checkpoint), '--device', 'cpu', '--out', str(tmp_path / 'o')]
    )
    assert replay(args) == 4  # the NaN CameraInfo does not abort the replay
    rows = list(csv.DictReader((tmp_path / 'o' / 'trajectory.csv').open()))
    assert len(rows) == 4 and not (tmp_path / 'o' / 'trajectory.partial.csv').exists()


def test_failures_name_the_file_and_leave_no_empty_trajectory(tmp_path, checkpoint):
    frames, _ = synthetic_sequence(2, HW)
    bag = tmp_path / 'bag'
    write_bag(bag, StoragePlugin.MCAP, frames)
    (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information: [unclosed')
    out = tmp_path / 'o'
    common = ['--image-topic', '/cam/image', '--checkpoint', str(checkpoint), '--out', str(out)]
    with pytest.raises(SystemExit, match='metadata.yaml'):
        main([str(bag), *common])
    assert not (out / 'trajectory.csv').exists()
    params = tmp_path / 'params.yaml'
    params.write_text('/**: {ros__parameters: [unclosed')
    with pytest.raises(SystemExit, match='params.yaml'):
        main([str(bag), *common, '--params-file', str(params)])


def test_a_replay_never_destroys_earlier_results(tmp_path, checkpoint):
    frames, _ = synthetic_sequence(3, HW)
    bag = tmp_path / 'bag'
    write_bag(bag, StoragePlugin.MCAP, frames)
    out = tmp_path / 'o'
    common = ['--image-topic', '/cam/image', '--checkpoint', str(checkpoint), '--out', str(out)]
    main([str(bag), *common, '--png-every', '1'])
    earlier = (out / 'trajectory.csv').read_text()
    pngs = sorted(p.name for p in out.glob('frame_*.png'))
    assert len(pngs) == 3
    with pytest.raises(SystemExit, match='holds results of an earlier run'):
        main([str(bag), *common])
    assert (out / 'trajectory.csv').read_text() == earlier
    (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information: [unclosed')
    with pytest.raises(SystemExit, match='metadata.yaml'):
        main([str(bag), *common, '--overwrite'])  # fails: the earlier results stay whole
    assert (out / 'trajectory.csv').read_text() == earlier
    assert sorted(p.name for p in out.glob('frame_*.png')) == pngs
    write_bag(tmp_path / 'bag2', StoragePlugin.MCAP, frames)
    main([str(tmp_path / 'bag2'), *common, '--overwrite'])  # no PNGs this time
    assert (out / 'trajectory.csv').is_file() and not list(out.glob('frame_*.png'))


@pytest.mark.parametrize(('given', 'expected'), [(None, '1'), ('3', '3')])
@pytest.mark.parametrize('how', ['entry_point', 'module'])
def test_the_replay_runs_blas_as_the_node_does(given, expected, how) -> None:
    """The ``kp2d_replay`` entry point and ``python -m kp2d_ros.replay`` ask for one BLAS
    thread before NumPy loads, as the node does (a value the user set wins)."""
    if how == 'entry_point':
        program = "import sys; sys.argv = ['kp2d_replay']\nfrom kp2d_ros.node import replay_main\n"
        program += 'replay_main()'  # no arguments: it stops at the usage
    else:
        program = "import runpy, sys; sys.argv = ['replay']\n"
        program += "runpy.run_module('kp2d_ros.replay', run_name='__main__')"
    assert blas_threads_seen(program, given) == expected
