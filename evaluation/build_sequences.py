#!/usr/bin/env python3
"""Render the synthetic camera sequences of the sequence benchmark (TUM layout, exact truth).

    python evaluation/build_sequences.py [--pool data/train_pool] [--out data/sequences]
        [--seed 0] [--scenes poster_handheld,corridor] [--frames N] [--height 480 --width 640]

Textures are the dev-set photos of training/devset_holdout.txt (never trained on); the build
is deterministic for a seed. See kp2d_core/evaluation/scenes.py for the scenes, lenses,
motions and image degradations.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import time

import numpy as np

from kp2d_core.evaluation.devset import holdout_photos
from kp2d_core.evaluation.scenes import SCENES, render_sequence
from kp2d_core.images import read_image

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = ROOT / 'training' / 'devset_holdout.txt'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--pool', type=Path, default=ROOT / 'data' / 'train_pool')
    parser.add_argument('--out', type=Path, default=ROOT / 'data' / 'sequences')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--scenes', default='', help='comma-separated names (default: all)')
    parser.add_argument(
        '--frames', type=int, default=0, help='frames per scene (default: its own)'
    )
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--width', type=int, default=640)
    args = parser.parse_args()
    wanted = set(filter(None, args.scenes.split(',')))
    unknown = wanted - {s.name for s in SCENES}
    if unknown:
        raise SystemExit(
            f'unknown scenes {sorted(unknown)}; choose from {[s.name for s in SCENES]}'
        )
    try:
        paths = holdout_photos(args.pool, HOLDOUT)
    except OSError as exc:
        raise SystemExit(f'error: {exc}; `make data` rebuilds the pool') from None
    rng = np.random.default_rng(args.seed)
    scenes = [spec for spec in SCENES if not wanted or spec.name in wanted]
    for spec in progress(scenes):
        chosen = rng.permutation(len(paths))[:12]
        try:
            photos = [read_image(paths[i]) for i in chosen]
        except (OSError, ValueError) as exc:
            raise SystemExit(f'error: {exc}; `make data` rebuilds the pool') from None
        start = time.perf_counter()
        folder = render_sequence(
            spec, photos, args.out, args.seed, args.frames or None, (args.height, args.width)
        )
        print(
            f'{folder}: {args.frames or spec.frames} frames in {time.perf_counter() - start:.0f} s'
        )


def progress(scenes: list) -> list:
    """The scenes, through a tqdm bar with ETA where tqdm is installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return scenes
    return tqdm(scenes, desc='scenes', unit='scene', dynamic_ncols=True)


if __name__ == '__main__':
    main()
