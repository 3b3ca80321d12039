#!/usr/bin/env python3
"""Build the public dev set (HPatches layout) from the held-out training-pool photos.

    python evaluation/build_devset.py [--pool data/train_pool] [--out data/devset] [--seed 0]

The photos are those named in training/devset_holdout.txt (never used for training). The
build is deterministic: the same photos give the same scenes and homographies.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kp2d_core.evaluation.devset import build_devset, holdout_photos

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = ROOT / 'training' / 'devset_holdout.txt'
DEFAULT_POOL = ROOT / 'data' / 'train_pool'  # training/build_train_pool.py (make data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--pool', type=Path, default=DEFAULT_POOL)
    parser.add_argument('--out', type=Path, default=ROOT / 'data' / 'devset')
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--seed', type=int, default=0, help='build seed (0: the published set)')
    args = parser.parse_args()
    photos = holdout_photos(args.pool, HOLDOUT)
    scenes = build_devset(photos, args.out, (args.height, args.width), seed=args.seed)
    print(f'wrote {len(scenes)} scenes ({5 * len(scenes)} pairs) to {args.out}')


if __name__ == '__main__':
    main()
