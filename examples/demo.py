#!/usr/bin/env python3
"""Demo: KP2D keypoints, matches and keyframe homographies on the bundled camera sweep.

Runs the node's frame pipeline (``kp2d_core.vo.frame_pipeline``, same defaults as the node) with
the bundled default model (or ``--checkpoint``) over a synthetic camera sweep across the bundled
photo, compares every keyframe-to-frame homography with the exact one, writes one PNG per frame and
prints the end-to-end frames per second.

    python examples/demo.py --out outputs/demo
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
import time

import cv2
import numpy as np
import torch

from kp2d_core.data.samples import synthetic_sequence
from kp2d_core.geometry.coordinates import corner_error
from kp2d_core.model.files import CheckpointNotFoundError
from kp2d_core.viz import TrackTrails, draw_flow, put_text
from kp2d_core.vo.frame_pipeline import FramePipeline, FrameResult, PipelineConfig

LOG = logging.getLogger('kp2d.demo')
FRAME_PERIOD_NS = 100_000_000  # 10 Hz


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--out', type=Path, default=Path('outputs/demo'))
    parser.add_argument('--checkpoint', type=Path, default=None, help='default: bundled weights')
    parser.add_argument('--frames', type=int, default=12)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--device', default='auto', help="'auto', 'cpu' or 'cuda'")
    return parser.parse_args()


def run_sequence(
    pipeline: FramePipeline, frames: list[np.ndarray]
) -> tuple[list[FrameResult], float]:
    """Every frame through the pipeline; returns the results and the processing time (s)."""
    pipeline.extract(frames[0])  # warm-up, not timed
    results, elapsed = [], 0.0
    for index, frame in enumerate(frames):
        tick = time.perf_counter()
        results.append(pipeline.process(frame, index * FRAME_PERIOD_NS))
        elapsed += time.perf_counter() - tick
    return results, elapsed


def key_errors(results: list[FrameResult], H_0to: list[np.ndarray], hw: tuple[int, int]):
    """Corner error (px) of each keyframe-to-frame homography against the exact one."""
    errors = []
    for index, result in enumerate(results[1:], start=1):
        key = result.track.key_stamp_ns // FRAME_PERIOD_NS
        truth = H_0to[index] @ np.linalg.inv(H_0to[key])
        H = result.track.H_key_to_cur
        errors.append((key, corner_error(H, truth, *hw) if H is not None else np.inf))
    return errors


def save_frame(
    path: Path, frame: np.ndarray, result: FrameResult, err: float, trails: TrackTrails
) -> None:
    """The frame with its track trails (coloured by age) and its keyframe matches."""
    track, tracks = result.track, result.tracks
    canvas = trails.draw(frame, tracks.ages, tracks.ids)
    canvas = draw_flow(canvas, track.pts_key, track.pts_cur, track.inliers, max_lines=100)
    status = (
        f'corner error {err:.2f} px' if np.isfinite(err) else f'no homography ({track.reason})'
    )
    lines = [
        f'{track.num_inliers} inliers, {int(tracks.continued.sum())}/{len(tracks)} tracks '
        'continued',
        status,
    ]
    cv2.imwrite(str(path), put_text(canvas, lines))


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        pipeline = FramePipeline.from_config(PipelineConfig(), args.checkpoint, args.device)
    except CheckpointNotFoundError as exc:
        raise SystemExit(f'error: {exc}') from exc
    hw = (args.height, args.width)
    frames, H_0to = synthetic_sequence(args.frames, hw)
    print(
        f'model: {args.checkpoint or "bundled default weights"}; '
        f'device: {pipeline.extractor.device}; {args.frames} frames of {hw[0]}x{hw[1]}; '
        f'torch threads: {torch.get_num_threads()}'
    )
    results, elapsed = run_sequence(pipeline, frames)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f'{"frame":>5} {"key":>4} {"kpts":>5} {"matches":>7} {"inliers":>7} {"corner err":>10}')
    errors = key_errors(results, H_0to, hw)
    trails = TrackTrails()
    trails.update(results[0].tracks.ids, results[0].tracks.xy)
    for index, (key, err) in enumerate(errors, start=1):
        track = results[index].track
        print(
            f'{index:>5} {key:>4} {len(results[index].features):>5} {track.num_matches:>7} '
            f'{track.num_inliers:>7} {err:>10.2f}'
        )
        trails.update(results[index].tracks.ids, results[index].tracks.xy)
        save_frame(args.out / f'frame_{index:02d}.png', frames[index], results[index], err, trails)
    values = np.array([e for _, e in errors])
    print(
        f'homographies found: {int(np.isfinite(values).sum())}/{len(values)}; within 3 px of '
        f'the truth: {int((values <= 3).sum())}/{len(values)}'
    )
    network = sum(r.network_ran for r in results)
    mode = pipeline.config.hybrid.mode
    print(
        f'end-to-end ({mode}: the network on {network} of {len(frames)} frames): '
        f'{len(frames) / elapsed:.1f} FPS'
    )
    print(f'images written to {args.out}/')


if __name__ == '__main__':
    main()
