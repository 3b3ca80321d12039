#!/usr/bin/env python3
"""Train KP2D on a folder of images (self-supervised).

    python training/train.py --config training/configs/v4.yaml --data /data/coco/train2017 \
        --out runs/v4 [key.sub=value ...] [--resume]

Multi-GPU / multi-node: ``torchrun --nproc_per_node 4 training/train.py ...`` (DDP; gloo on
CPU). Overrides address any TrainConfig field, e.g. ``batch_size=4 data.image_size=[120,160]
loss.io_selection=highest max_steps=1000``.
"""

from __future__ import annotations

import argparse
import logging
import os

from kp2d_core.config import load_yaml_config
from kp2d_core.model.files import CheckpointError
from kp2d_core.training import TrainConfig, train
from kp2d_core.training.state import RunDirError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--config', help='YAML file (e.g. training/configs/v4.yaml)')
    parser.add_argument('--data', help='image folder (sets data.root)')
    parser.add_argument('--out', help='run directory (sets out_dir)')
    parser.add_argument('--resume', action='store_true', help='continue from OUT/checkpoints')
    parser.add_argument(
        '--allow-config-change',
        action='store_true',
        help='with --resume: continue although the configuration changed (logged)',
    )
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='start a new run in a folder that holds one (its results are replaced)',
    )
    parser.add_argument('overrides', nargs='*', help='key.sub=value config overrides')
    args = parser.parse_args()
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f'data.root={args.data}')
    if args.out:
        overrides.append(f'out_dir={args.out}')
    try:
        cfg = load_yaml_config(TrainConfig, args.config, overrides)
    except (OSError, ValueError) as exc:
        raise SystemExit(f'error: {exc}') from exc
    rank = os.environ.get('RANK', '0')
    logging.basicConfig(
        level=logging.INFO if rank == '0' else logging.WARNING,
        format=f'%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s',
    )
    try:
        model = train(
            cfg,
            resume=args.resume,
            allow_config_change=args.allow_config_change,
            overwrite=args.overwrite,
        )
    except (FileNotFoundError, ValueError, CheckpointError, RunDirError) as exc:
        raise SystemExit(f'error: {exc}') from exc
    if rank == '0':
        print(f'model written to {model}')


if __name__ == '__main__':
    main()
