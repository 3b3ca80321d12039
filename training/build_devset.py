#!/usr/bin/env python3
"""Build the public dev set (HPatches layout) from the held-out training-pool photos.

    python training/build_devset.py --pool ../shared/data/train_pool --out data/devset

The photos are those named in training/devset_holdout.txt (never used for training). The
build is deterministic: the same photos give the same scenes and homographies.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kp2d_core.evaluation.devset import build_devset, holdout_photos

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = ROOT / 'training' / 'devset_holdout.txt'
DEFAULT_POOL = ROOT.parent / 'shared' / 'data' / 'train_pool'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--pool', type=Path, default=DEFAULT_POOL)
    parser.add_argument('--out', type=Path, default=ROOT / 'data' / 'devset')
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--width', type=int, default=640)
    args = parser.parse_args()
    scenes = build_devset(holdout_photos(args.pool, HOLDOUT), args.out, (args.height, args.width))
    print(f'wrote {len(scenes)} scenes ({5 * len(scenes)} pairs) to {args.out}')


if __name__ == '__main__':
    main()
