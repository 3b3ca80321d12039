"""Writing small rosbag2 recordings for the replay tests (needs the rosbags package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore


def _header(store, stamp_ns: int):
    Header, Time = store.types['std_msgs/msg/Header'], store.types['builtin_interfaces/msg/Time']
    return Header(
        stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
        frame_id='camera_optical_frame',
    )


def write_bag(
    path: Path,
    plugin: Any,
    frames: list[np.ndarray],
    bad_at: int = -1,
    bad_info_at: int = -1,
    stamp0: int = 10**18,
    period: int = 10**8,
    hw: tuple[int, int] = (120, 160),
) -> None:
    """A rosbag2 with bgr8 images on /cam/image and CameraInfo on /cam/info.

    ``bad_at``: that image gets an unknown encoding; ``bad_info_at``: that CameraInfo a NaN K.
    """
    K = np.array([[150.0, 0, (hw[1] - 1) / 2], [0, 150.0, (hw[0] - 1) / 2], [0, 0, 1]])
    store = get_typestore(Stores.ROS2_JAZZY)
    Image = store.types['sensor_msgs/msg/Image']
    Info = store.types['sensor_msgs/msg/CameraInfo']
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        image_conn = writer.add_connection('/cam/image', Image.__msgtype__, typestore=store)
        info_conn = writer.add_connection('/cam/info', Info.__msgtype__, typestore=store)
        for i, frame in enumerate(frames):
            stamp = stamp0 + i * period
            info = Info(
                header=_header(store, stamp),
                height=hw[0],
                width=hw[1],
                distortion_model='plumb_bob',
                d=np.zeros(5),
                k=np.full(9, np.nan) if i == bad_info_at else K.ravel(),
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
                height=hw[0],
                width=hw[1],
                encoding=encoding,
                is_bigendian=0,
                step=hw[1] * 3,
                data=np.ascontiguousarray(frame).ravel(),
            )
            writer.write(image_conn, stamp, store.serialize_cdr(image, Image.__msgtype__))
