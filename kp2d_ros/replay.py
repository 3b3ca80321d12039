"""Run the node's pipeline offline over a rosbag2 recording (MCAP or sqlite3), without ROS.

    kp2d_replay BAG --image-topic /camera/image_raw [--camera-info-topic /camera/camera_info]
        --out outputs/replay [--checkpoint model.pt] [--video] [--png-every 10]

Writes ``trajectory.csv`` (one row per image: stamps in integer nanoseconds, matches,
inliers, the keyframe-to-frame homography and, with intrinsics, the camera pose),
``tracks.csv`` (one row per track and frame: stamp, id, age, pixel and normalised position,
velocities) and an annotated ``replay.mp4`` and/or PNGs. Images are converted with cv_bridge
and CameraInfo paired through message_filters, exactly as in the node; reading uses the
``rosbags`` package (``pip install rosbags``), so no running ROS graph is needed.
"""

from __future__ import annotations

from kp2d_core.blas_threads import one_blas_thread

if __name__ == '__main__':  # python -m kp2d_ros.replay: as kp2d_replay and the node,
    one_blas_thread()  # read when NumPy loads: before the imports below

import argparse
from collections import Counter
import csv
import logging
from pathlib import Path
import time
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage

from kp2d_core.geometry.poses import rotation_to_quaternion
from kp2d_core.output_files import prepare_output_folder
from kp2d_core.viz import TrackTrails, draw_flow, put_text
from kp2d_core.vo.feature_tracks import Tracks
from kp2d_core.vo.frame_pipeline import FramePipeline, FrameResult
from kp2d_core.vo.keyframe_tracker import TrackResult
from kp2d_ros.dependencies import REPLAY_LIBRARIES, MissingLibraryError, require_libraries
from kp2d_ros.parameters import options_from_values
from kp2d_ros.params_file import params_file_values
from kp2d_ros.refusal_log import RefusalLog
from kp2d_ros.stamps import NANOSECONDS, StampPolicy, stamp_ns

if TYPE_CHECKING:
    from kp2d_ros.camera_info import CameraInfoPairing

LOG = logging.getLogger('kp2d.replay')
COLUMNS = (
    ['stamp_ns', 'key_stamp_ns', 'matches', 'inliers', 'new_keyframe', 'reason', 'rectified']
    + [f'h{r}{c}' for r in range(3) for c in range(3)]
    + ['x', 'y', 'z', 'qx', 'qy', 'qz', 'qw', 'pose_method']
)
TRACK_COLUMNS = ('stamp_ns', 'id', 'age', 'u', 'v', 'x_n', 'y_n', 'vu', 'vv', 'vx_n', 'vy_n')
REPLAY_RESULTS = ('trajectory.csv', 'tracks.csv', 'replay.mp4', 'frame_*.png')


def read_messages(bag: Path, topics: list[str]) -> Any:
    """Yield (topic, message) in log-time order from a rosbag2 folder or file.

    ``rosbags`` reads the recording; each message is deserialised by rclpy from its CDR bytes
    into the ROS message class, as the node's subscriptions do.
    """
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore
    from rosidl_runtime_py.utilities import get_message

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
        classes = {c.msgtype: get_message(c.msgtype) for c in connections}
        for connection, _, raw in reader.messages(connections=connections):
            yield connection.topic, deserialize_message(raw, classes[connection.msgtype])
    finally:
        reader.close()


def csv_row(stamp: int, result: TrackResult) -> list[Any]:
    H = result.H_key_to_cur if result.H_key_to_cur is not None else np.full((3, 3), np.nan)
    row = [
        stamp,
        result.key_stamp_ns,
        result.num_matches,
        result.num_inliers,
        int(result.new_keyframe),
        result.reason or '',
        int(result.rectified),
    ]
    row += [f'{v:.9g}' for v in H.ravel()]
    if result.T_world_cur is None:
        return row + [''] * 7 + ['']
    t = result.T_world_cur[:3, 3]
    q = rotation_to_quaternion(result.T_world_cur[:3, :3])
    return row + [f'{v:.9g}' for v in (*t, *q)] + [result.pose_method]


def track_rows(stamp: int, tracks: Tracks) -> list[list[Any]]:
    """Rows of ``tracks.csv`` (TRACK_COLUMNS); normalised columns empty without intrinsics."""
    count = len(tracks)
    empty = np.full((count, 2), np.nan)
    normalized = tracks.normalized if tracks.normalized is not None else empty
    velocity_n = tracks.velocity_normalized if tracks.velocity_normalized is not None else empty
    rows = []
    for i in range(count):
        values = [*tracks.xy[i], *normalized[i], *tracks.velocity[i], *velocity_n[i]]
        text = ['' if not np.isfinite(v) else f'{v:.6g}' for v in values]
        rows.append([stamp, int(tracks.ids[i]), int(tracks.ages[i]), *text])
    return rows


def annotate(image: np.ndarray, frame: FrameResult, trails: TrackTrails) -> np.ndarray:
    """The frame with its track trails and its matches against the keyframe."""
    result, tracks = frame.track, frame.tracks
    canvas = trails.draw(image, tracks.ages, tracks.ids)
    canvas = draw_flow(canvas, result.pts_key, result.pts_cur, result.inliers, 100)
    status = 'no homography: ' + result.reason if result.reason else 'ok'
    lines = [f'{result.num_matches} matches, {result.num_inliers} inliers, {len(tracks)} tracks']
    return put_text(canvas, [*lines, status])


class Outputs:
    """CSV files, optional video and optional PNGs of a replay.

    Results are written under temporary names (``*.partial.csv``, ``replay.partial.mp4``)
    and take their final names only when the replay completes, so an earlier run's results
    (which :func:`replay` refuses to touch without ``--overwrite``) survive a failed one.
    """

    def __init__(self, out: Path, video: bool, png_every: int, earlier: list[Path]) -> None:
        self.out, self.video_enabled, self.png_every = out, video, png_every
        self.earlier, self.written = earlier, set()
        self.files = {}
        for name, columns in (('trajectory', COLUMNS), ('tracks', TRACK_COLUMNS)):
            handle = open(out / f'{name}.partial.csv', 'w', newline='')  # noqa: SIM115
            writer = csv.writer(handle)
            writer.writerow(columns)
            self.files[name] = (handle, writer)
        self.partial = out / 'trajectory.partial.csv'
        self.trails = TrackTrails()
        self.video: cv2.VideoWriter | None = None
        self.count = 0

    def add(self, image: np.ndarray, frame: FrameResult) -> None:
        self.files['trajectory'][1].writerow(csv_row(frame.stamp_ns, frame.track))
        self.files['tracks'][1].writerows(track_rows(frame.stamp_ns, frame.tracks))
        for handle, _ in self.files.values():
            handle.flush()  # rows written so far survive a crash
        self.trails.update(frame.tracks.ids, frame.tracks.xy)
        if not (self.video_enabled or self.png_every):
            return
        canvas = annotate(image, frame, self.trails)
        if self.video_enabled:
            if self.video is None:
                fourcc = cv2.VideoWriter_fourcc(*'mp4v')
                size = (canvas.shape[1], canvas.shape[0])
                path = str(self.out / 'replay.partial.mp4')
                self.video = cv2.VideoWriter(path, fourcc, 10.0, size)
            self.video.write(canvas)
        if self.png_every and self.count % self.png_every == 0:
            path = self.out / f'frame_{self.count:06d}.png'
            cv2.imwrite(str(path), canvas)
            self.written.add(path)
        self.count += 1

    def reset(self) -> None:
        self.trails.reset()

    def close(self, complete: bool) -> None:
        """Finish the files. A complete run renames them to their final names and removes the
        earlier results it did not rewrite; an incomplete one leaves its partial files beside
        the earlier results, which stay as they were."""
        for handle, _ in self.files.values():
            handle.close()
        if self.video is not None:
            self.video.release()
        if not complete:
            return
        for name in self.files:
            final = self.out / f'{name}.csv'
            (self.out / f'{name}.partial.csv').replace(final)
            self.written.add(final)
        if self.video is not None:
            (self.out / 'replay.partial.mp4').replace(self.out / 'replay.mp4')
            self.written.add(self.out / 'replay.mp4')
        for stale in self.earlier:
            if stale not in self.written:
                stale.unlink(missing_ok=True)


def replay(args: argparse.Namespace) -> int:
    """Process the bag; returns the number of images processed.

    Frames and CameraInfo are treated as the node treats them: bad images and invalid
    camera models are skipped and counted, a stamp going back resets the tracker.

    Raises:
        MissingLibraryError: cv_bridge or message_filters cannot be imported.
    """
    require_libraries('kp2d_replay', REPLAY_LIBRARIES)
    earlier = prepare_output_folder(args.out, REPLAY_RESULTS, args.overwrite)
    from kp2d_ros.camera_info import CameraInfoPairing, camera_for_image
    from kp2d_ros.image_conversion import ImageError

    values, unknown = params_file_values(args.params_file) if args.params_file else ({}, [])
    if unknown:
        LOG.warning('ignoring unknown parameters (misspelled?): %s', ', '.join(unknown))
    options = options_from_values(values)
    weights = args.checkpoint or values.get('model.weights') or None
    variant = values.get('model.variant', 'default')
    pipeline = FramePipeline.from_config(options.pipeline, weights, args.device, variant)
    cameras, stamps = CameraInfoPairing(), StampPolicy(options.max_future_stamp_s)
    max_age = int(options.camera_info_max_age_s * NANOSECONDS)
    outputs = Outputs(args.out, args.video, args.png_every, earlier)
    topics = [args.image_topic] + ([args.camera_info_topic] if args.camera_info_topic else [])
    counts, start, complete = Counter(), time.perf_counter(), False
    refusals = RefusalLog(LOG)
    try:
        for topic, msg in read_messages(args.bag, topics):
            if topic != args.image_topic:
                _add_camera(cameras, msg, counts)
                continue
            frame_ns = _checked_stamp(stamps, msg, counts, pipeline, outputs)
            if frame_ns is None:
                continue
            try:
                image = _decode(msg)
                camera, refusal = camera_for_image(
                    cameras.lookup(frame_ns, max_age), image.shape[:2], options.camera_info_scale
                )
                if refusal:
                    counts['camera_info_size_mismatch'] += 1
                    refusals.refuse('CameraInfo not used for a frame', refusal)
                frame = pipeline.process(image, frame_ns, camera)
            except (ImageError, ValueError) as exc:
                counts['bad_image'] += 1
                refusals.refuse('image skipped', f'at {frame_ns} ns: {exc}')
                continue
            outputs.add(image if image.ndim == 3 else image[..., None].repeat(3, 2), frame)
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


def _checked_stamp(stamps, msg, counts, pipeline, outputs) -> int | None:
    """The frame's stamp (ns) when it is to be processed (the node's stamp policy)."""
    verdict = stamps.check(msg.header.stamp.sec, msg.header.stamp.nanosec, now_ns=0)
    if verdict.action == 'drop':
        counts[verdict.reason] += 1
        return None
    frame_ns = stamp_ns(msg.header.stamp)
    if verdict.action == 'reset':
        LOG.warning('time jumped back at %d ns: tracker reset', frame_ns)
        pipeline.reset()
        outputs.reset()
    return frame_ns


def _decode(msg: Any) -> np.ndarray:
    from kp2d_ros.image_conversion import compressed_msg_to_array, image_msg_to_array

    if isinstance(msg, CompressedImage):
        return compressed_msg_to_array(msg)
    return image_msg_to_array(msg)


def _add_camera(cameras: CameraInfoPairing, msg: Any, counts: Counter) -> None:
    try:
        cameras.add(msg)
    except ValueError as exc:
        counts['camera_info_rejected'] += 1
        LOG.warning('ignoring CameraInfo at %d ns: %s', stamp_ns(msg.header.stamp), exc)


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
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace the results of an earlier replay in --out (kept until this one completes)',
    )
    parser.add_argument('--png-every', type=int, default=0, help='write every Nth frame as PNG')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        replay(parse_args(argv))
    except (ValueError, OSError, MissingLibraryError) as exc:
        raise SystemExit(f'kp2d_replay: {exc}') from None


if __name__ == '__main__':
    main()
