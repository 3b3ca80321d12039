#!/usr/bin/env python3
"""Listen to the node's feature tracks (kp2d_msgs/FeatureTracks), as a VIO back-end would.

    python examples/track_listener.py [--topic /kp2d/tracks] [--count 0]

For every message it prints the number of tracks, how many continue from the previous frame,
the median age, and the first track's id, raw pixel position and undistorted normalised
coordinates (NaN without CameraInfo). Each id names one physical point for as long as the
track lives; ``ages`` counts the frames since it started.
"""

from __future__ import annotations

import argparse

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data

from kp2d_msgs.msg import FeatureTracks


def describe(msg: FeatureTracks) -> str:
    """One line about one frame's tracks."""
    ids = np.asarray(msg.ids, np.uint64)
    ages = np.asarray(msg.ages, np.int64)
    xy = np.asarray(msg.xy, np.float64).reshape(-1, 2)
    normalized = np.asarray(msg.normalized, np.float64).reshape(-1, 2)
    stamp = f'{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}'
    if not len(ids):
        return f'{stamp}: no tracks'
    first = (
        f'id {ids[0]} at ({xy[0, 0]:.1f}, {xy[0, 1]:.1f}) px, '
        f'normalised ({normalized[0, 0]:.4f}, {normalized[0, 1]:.4f})'
    )
    return (
        f'{stamp}: {len(ids)} tracks, {int((ages > 0).sum())} continued, '
        f'median age {int(np.median(ages))}; {first}'
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--topic', default='/kp2d/tracks')
    parser.add_argument('--count', type=int, default=0, help='stop after this many (0: never)')
    args = parser.parse_args()
    rclpy.init()
    node = Node('kp2d_track_listener')
    received = []

    def on_tracks(msg: FeatureTracks) -> None:
        print(describe(msg), flush=True)
        received.append(msg.header.stamp)

    node.create_subscription(FeatureTracks, args.topic, on_tracks, qos_profile_sensor_data)
    try:
        while rclpy.ok() and not (args.count and len(received) >= args.count):
            rclpy.spin_once(node, timeout_sec=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
