"""Run the node's pipeline offline over a rosbag2 recording (MCAP or sqlite3), without ROS.

    kp2d_replay BAG --image-topic /camera/image_raw [--camera-info-topic /camera/camera_info]
        --out outputs/replay [--checkpoint model.pt] [--video] [--png-every 10]

Writes ``trajectory.csv`` (one row per image: stamps, matches, inliers, the keyframe-to-frame
homography and, with intrinsics, the camera pose) and an annotated ``replay.mp4`` and/or PNGs.
Reading uses the ``rosbags`` package (``pip install rosbags``); no ROS install is needed.
"""

from __future__ import annotations

import argparse
from collections import Counter
import csv
import logging
from pathlib import Path
import time
from typing import Any

import cv2
import numpy as np

from kp2d_core.motion import rotation_to_quaternion
from kp2d_core.pipeline import FramePipeline
from kp2d_core.tracking import TrackResult
from kp2d_core.viz import draw_flow, put_text
from kp2d_ros.bookkeeping import CameraInfoCache, StampPolicy
from kp2d_ros.conversions import ImageError, image_msg_to_array
from kp2d_ros.params import options_from_values, params_file_values

LOG = logging.getLogger('kp2d.replay')
COLUMNS = (
    ['stamp', 'key_stamp', 'matches', 'inliers', 'new_keyframe', 'reason']
    + [f'h{r}{c}' for r in range(3) for c in range(3)]
    + ['x', 'y', 'z', 'qx', 'qy', 'qz', 'qw', 'pose_method']
)


def read_messages(bag: Path, topics: list[str]) -> Any:
    """Yield (topic, stamp_s, message) in log-time order from a rosbag2 folder or file."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    try:
        reader = AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_JAZZY))
        reader.open()
    except Exception as exc:  # rosbags raises its own types for broken recordings
        where = bag / 'metadata.yaml' if bag.is_dir() else bag
        raise ValueError(f'cannot read the recording {where}: {exc}') from exc
    try:
        connections = [c for c in reader.connections if c.topic in topics]
        missing = set(topics) - {c.topic for c in connections}
        if missing:
            available = sorted({c.topic for c in reader.connections})
            raise ValueError(f'topics {sorted(missing)} not in {bag}; it has {available}')
        for connection, _, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
            yield connection.topic, stamp, msg
    finally:
        reader.close()


def csv_row(stamp: float, result: TrackResult) -> list[Any]:
    H = result.H_key_to_cur if result.H_key_to_cur is not None else np.full((3, 3), np.nan)
    row = [
        f'{stamp:.9f}',
        f'{result.key_stamp:.9f}',
        result.num_matches,
        result.num_inliers,
        int(result.new_keyframe),
        result.reason or '',
    ]
    row += [f'{v:.9g}' for v in H.ravel()]
    if result.T_world_cur is None:
        return row + [''] * 7 + ['']
    t = result.T_world_cur[:3, 3]
    q = rotation_to_quaternion(result.T_world_cur[:3, :3])
    return row + [f'{v:.9g}' for v in (*t, *q)] + [result.pose_method]


def annotate(image: np.ndarray, result: TrackResult) -> np.ndarray:
    """The frame with its matches against the keyframe (green inliers, red outliers)."""
    canvas = draw_flow(image, result.pts_key, result.pts_cur, result.inliers)
    status = 'no homography: ' + result.reason if result.reason else 'ok'
    return put_text(
        canvas, [f'{result.num_matches} matches, {result.num_inliers} inliers', status]
    )


class Outputs:
    """CSV, optional video and optional PNGs of a replay."""

    def __init__(self, out: Path, video: bool, png_every: int) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.video_enabled, self.png_every = out, video, png_every
        self.final, self.partial = out / 'trajectory.csv', out / 'trajectory.partial.csv'
        self.final.unlink(missing_ok=True)  # never leave an old result beside a new run
        self.handle = open(self.partial, 'w', newline='')  # noqa: SIM115
        self.csv = csv.writer(self.handle)
        self.csv.writerow(COLUMNS)
        self.video: cv2.VideoWriter | None = None
        self.count = 0

    def add(self, stamp: float, image: np.ndarray, result: TrackResult) -> None:
        self.csv.writerow(csv_row(stamp, result))
        self.handle.flush()  # rows written so far survive a crash
        if not (self.video_enabled or self.png_every):
            return
        frame = annotate(image, result)
        if self.video_enabled:
            if self.video is None:
                fourcc = cv2.VideoWriter_fourcc(*'mp4v')
                size = (frame.shape[1], frame.shape[0])
                self.video = cv2.VideoWriter(str(self.out / 'replay.mp4'), fourcc, 10.0, size)
            self.video.write(frame)
        if self.png_every and self.count % self.png_every == 0:
            cv2.imwrite(str(self.out / f'frame_{self.count:06d}.png'), frame)
        self.count += 1

    def close(self, complete: bool) -> None:
        """Finish the files; an incomplete run keeps ``trajectory.partial.csv`` only."""
        self.handle.close()
        if self.video is not None:
            self.video.release()
        if complete:
            self.partial.replace(self.final)


def replay(args: argparse.Namespace) -> int:
    """Process the bag; returns the number of images processed.

    Frames and CameraInfo are treated as the node treats them: bad images and invalid
    intrinsics are skipped and counted, a stamp going back resets the tracker.
    """
    values = params_file_values(args.params_file) if args.params_file else {}
    options = options_from_values(values)
    weights = args.checkpoint or values.get('model.weights') or None
    pipeline = FramePipeline.from_config(options.pipeline, weights, args.device)
    cameras, stamps = CameraInfoCache(), StampPolicy(options.max_future_stamp_s)
    outputs = Outputs(args.out, args.video, args.png_every)
    topics = [args.image_topic] + ([args.camera_info_topic] if args.camera_info_topic else [])
    counts, start, complete = Counter(), time.perf_counter(), False
    try:
        for topic, stamp, msg in read_messages(args.bag, topics):
            if topic != args.image_topic:
                _add_camera(cameras, stamp, msg, counts)
                continue
            verdict = stamps.check(msg.header.stamp.sec, msg.header.stamp.nanosec, now=0.0)
            if verdict.action == 'drop':
                counts[verdict.reason] += 1
                continue
            if verdict.action == 'reset':
                LOG.warning('time jumped back at %.3f: tracker reset', stamp)
                pipeline.reset()
            try:
                image = image_msg_to_array(msg)
                features = pipeline.extract(image)
            except (ImageError, ValueError) as exc:
                counts['bad_image'] += 1
                LOG.warning('skipping image at %.3f: %s', stamp, exc)
                continue
            K = cameras.lookup(stamp, options.camera_info_max_age_s)
            result = pipeline.track(features, stamp, K).track
            outputs.add(stamp, image if image.ndim == 3 else image[..., None].repeat(3, 2), result)
            counts['processed'] += 1
        complete = True
    finally:
        outputs.close(complete)
        if not complete:
            LOG.error('replay failed; the rows written so far are in %s', outputs.partial)
    elapsed = time.perf_counter() - start
    LOG.info(
        '%s in %.1f s (%.2f FPS); results in %s',
        ', '.join(f'{v} {k}' for k, v in sorted(counts.items())),
        elapsed,
        counts['processed'] / max(elapsed, 1e-9),
        args.out,
    )
    return counts['processed']


def _add_camera(cameras: CameraInfoCache, stamp: float, msg: Any, counts: Counter) -> None:
    try:
        cameras.add(stamp, msg.k, (int(msg.height), int(msg.width)))
    except ValueError as exc:
        counts['camera_info_rejected'] += 1
        LOG.warning('ignoring CameraInfo at %.3f: %s', stamp, exc)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Replay a rosbag2 through kp2d offline.')
    parser.add_argument('bag', type=Path, help='rosbag2 folder or .mcap/.db3 file')
    parser.add_argument('--image-topic', required=True)
    parser.add_argument('--camera-info-topic', default='')
    parser.add_argument('--out', type=Path, default=Path('outputs/replay'))
    parser.add_argument('--checkpoint', default='', help='default: the bundled weights')
    parser.add_argument('--device', default='auto')
    parser.add_argument(
        '--params-file',
        default='',
        help="the node's ROS 2 parameters file (default: the node's defaults)",
    )
    parser.add_argument('--video', action='store_true', help='write replay.mp4')
    parser.add_argument('--png-every', type=int, default=0, help='write every Nth frame as PNG')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        replay(parse_args(argv))
    except (ValueError, OSError) as exc:
        raise SystemExit(f'kp2d_replay: {exc}') from exc


if __name__ == '__main__':
    main()
