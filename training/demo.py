#!/usr/bin/env python3
"""Demo: KP2D keypoints, matches and frame-to-frame homographies on the bundled sequence.

Runs the bundled default model (or ``--checkpoint``) over a synthetic camera sweep across the
bundled photo, estimates each frame-to-frame homography, compares it with the exact one,
writes one PNG per frame pair and prints the end-to-end frames per second.

    python training/demo.py --out outputs/demo
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
import time

import cv2
import numpy as np
import torch

from kp2d_core import (
    ExtractorConfig,
    KeypointExtractor,
    KeypointNet,
    estimate_homography,
    load_model,
    match,
)
from kp2d_core.checkpoint import default_weights_path, resolve_device
from kp2d_core.geometry import corner_error
from kp2d_core.samples import synthetic_sequence
from kp2d_core.viz import draw_matches, put_text

LOG = logging.getLogger('kp2d.demo')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--out', type=Path, default=Path('outputs/demo'))
    parser.add_argument('--checkpoint', type=Path, default=None, help='default: bundled weights')
    parser.add_argument('--frames', type=int, default=12)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--top-k', type=int, default=1000)
    parser.add_argument('--device', default='auto', help="'auto', 'cpu' or 'cuda'")
    parser.add_argument('--seed', type=int, default=0, help='seed of a random-init fallback')
    return parser.parse_args()


def build_model(checkpoint: Path | None, device: str, seed: int) -> tuple[KeypointNet, str]:
    """The requested or bundled model; a seeded random one (announced) when none is bundled."""
    if checkpoint is not None:
        return load_model(checkpoint, device), str(checkpoint)
    try:
        return load_model(default_weights_path(), device), 'bundled default weights'
    except FileNotFoundError:
        LOG.warning(
            'no bundled weights in this install: using a RANDOMLY INITIALISED network '
            '(seed %d); expect poor matches',
            seed,
        )
        torch.manual_seed(seed)
        return KeypointNet().eval().to(resolve_device(device)), f'random init (seed {seed})'


def run(args: argparse.Namespace) -> None:
    model, source = build_model(args.checkpoint, args.device, args.seed)
    extractor = KeypointExtractor(model, ExtractorConfig(top_k=args.top_k))
    frames, H_0to = synthetic_sequence(args.frames, (args.height, args.width))
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f'model: {source}; device: {extractor.device}; {args.frames} frames of '
        f'{args.height}x{args.width}; torch threads: {torch.get_num_threads()}'
    )
    print(f'{"pair":>6} {"kpts":>5} {"matches":>7} {"inliers":>7} {"corner err px":>13}')
    extractor.extract(frames[0])  # warm-up, not timed
    start = time.perf_counter()
    previous = extractor.extract(frames[0])
    errors, timed = [], 0.0
    for k in range(1, len(frames)):
        tick = time.perf_counter()
        current = extractor.extract(frames[k])
        matches = match(previous, current)
        result = estimate_homography(previous.keypoints, current.keypoints, matches)
        timed += time.perf_counter() - tick
        truth = H_0to[k] @ np.linalg.inv(H_0to[k - 1])
        err = corner_error(result.H, truth, args.height, args.width) if result.ok else np.inf
        errors.append(err)
        reason = '' if result.ok else f'  (no homography: {result.reason})'
        print(
            f'{k - 1:>2}->{k:<3} {len(current):>5} {len(matches):>7} {result.num_inliers:>7} '
            f'{err:>13.2f}{reason}'
        )
        png = args.out / f'pair_{k - 1:02d}_{k:02d}.png'
        save_pair(png, (frames[k - 1], frames[k]), (previous, current), matches, result, err)
        previous = current
    total = time.perf_counter() - start
    ok = np.isfinite(errors)
    print(
        f'homographies found: {int(ok.sum())}/{len(errors)}; within 3 px of the truth: '
        f'{int((np.asarray(errors) <= 3).sum())}/{len(errors)}'
    )
    print(
        f'end-to-end (extract + match + homography): {(len(frames) - 1) / timed:.1f} FPS; '
        f'with drawing and writing PNGs: {(len(frames) - 1) / total:.1f} FPS'
    )
    print(f'images written to {args.out}/')


def save_pair(path, images, features, matches, result, err) -> None:
    """Write the side-by-side match image of one frame pair."""
    (image0, image1), (f0, f1) = images, features
    pts0 = f0.keypoints[matches.indices[:, 0]].cpu().numpy()
    pts1 = f1.keypoints[matches.indices[:, 1]].cpu().numpy()
    inliers = result.inliers if result.ok else np.zeros(len(pts0), bool)
    canvas = draw_matches(image0, image1, pts0, pts1, inliers)
    status = f'corner error {err:.2f} px' if result.ok else f'no homography ({result.reason})'
    put_text(canvas, [f'{len(matches)} matches, {result.num_inliers} inliers', status])
    cv2.imwrite(str(path), canvas)


if __name__ == '__main__':
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    run(parse_args())
