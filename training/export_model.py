#!/usr/bin/env python3
"""Export a training checkpoint as a small model file (fp16 state dict + config + metadata).

    python training/export_model.py runs/default/checkpoints/last.pt \
        kp2d_core/weights/kp2d_default.pt --note "trained with training/configs/default_cpu.yaml"

The result loads with ``kp2d_core.load_model`` (``torch.load(weights_only=True)``) as
float32; it carries no optimiser or RNG state.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kp2d_core.model.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description='Export a small model checkpoint.')
    parser.add_argument('checkpoint', type=Path)
    parser.add_argument('out', type=Path)
    parser.add_argument('--float32', action='store_true', help='keep float32 weights')
    parser.add_argument('--note', default='', help='free text stored in the metadata')
    args = parser.parse_args()
    ckpt = read_checkpoint(args.checkpoint)
    model = model_from_checkpoint(ckpt, str(args.checkpoint))
    training = ckpt.get('training') or {}
    metadata = {
        'steps': int(training.get('step', ckpt['metadata'].get('step', 0))),
        'epochs': int(training.get('epoch', ckpt['metadata'].get('epoch', 0))),
        'train_config': training.get('config', {}),
        'note': args.note,
    }
    save_checkpoint(args.out, model, metadata, half=not args.float32)
    size = args.out.stat().st_size / 2**20
    print(f'wrote {args.out} ({size:.1f} MiB, step {metadata["steps"]})')


if __name__ == '__main__':
    main()
