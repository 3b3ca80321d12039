"""Offline replay of rosbag2 recordings (MCAP and sqlite3) through the kp2d pipeline."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from kp2d_core import KeypointNet, save_checkpoint
from kp2d_core.samples import synthetic_sequence
from kp2d_ros.replay import main, parse_args, read_messages, replay

rosbags = pytest.importorskip('rosbags', reason='pip install rosbags')
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

HW = (120, 160)
K = np.array([[150.0, 0, 79.5], [0, 150.0, 59.5], [0, 0, 1]])


def _header(store, stamp_ns: int):
    Header, Time = store.types['std_msgs/msg/Header'], store.types['builtin_interfaces/msg/Time']
    return Header(
        stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
        frame_id='camera_optical_frame',
    )


def write_bag(path: Path, plugin: StoragePlugin, frames: list[np.ndarray], bad_at: int = -1):
    store = get_typestore(Stores.ROS2_JAZZY)
    Image = store.types['sensor_msgs/msg/Image']
    Info = store.types['sensor_msgs/msg/CameraInfo']
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        image_conn = writer.add_connection('/cam/image', Image.__msgtype__, typestore=store)
        info_conn = writer.add_connection('/cam/info', Info.__msgtype__, typestore=store)
        for i, frame in enumerate(frames):
            stamp = 10**18 + i * 10**8
            info = Info(
                header=_header(store, stamp),
                height=HW[0],
                width=HW[1],
                distortion_model='plumb_bob',
                d=np.zeros(5),
                k=K.ravel(),
                r=np.eye(3).ravel(),
                p=np.zeros(12),
                binning_x=0,
                binning_y=0,
                roi=store.types['sensor_msgs/msg/RegionOfInterest'](
                    x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
                ),
            )
            writer.write(info_conn, stamp, store.serialize_cdr(info, Info.__msgtype__))
            encoding = 'no_such_encoding' if i == bad_at else 'bgr8'
            image = Image(
                header=_header(store, stamp),
                height=HW[0],
                width=HW[1],
                encoding=encoding,
                is_bigendian=0,
                step=HW[1] * 3,
                data=np.ascontiguousarray(frame).ravel(),
            )
            writer.write(image_conn, stamp, store.serialize_cdr(image, Image.__msgtype__))


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
    assert float(rows[1]['stamp']) == pytest.approx(1e9 + 0.1)
    homographies = [r for r in rows[1:] if r['h00'] != 'nan']
    assert homographies and all(int(r['inliers']) >= 4 for r in homographies)
    assert all(int(r['matches']) <= 300 for r in rows)  # detector.top_k from the params file
    assert (out / 'replay.mp4').stat().st_size > 0
    assert sorted(p.name for p in out.glob('*.png')) == ['frame_000000.png', 'frame_000002.png']


def test_unknown_topic_is_a_clear_error(tmp_path, checkpoint):
    frames, _ = synthetic_sequence(2, HW)
    write_bag(tmp_path / 'bag', StoragePlugin.MCAP, frames)
    with pytest.raises(ValueError, match='not in'):
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
