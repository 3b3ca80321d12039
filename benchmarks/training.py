#!/usr/bin/env python3
"""Training throughput: optimiser steps/s and data-loader images/s, printed as a table.

    python benchmarks/training.py [--data data/train_pool] [--steps 5]

Measures, in one run on this machine: the data loader alone (pairs/s, with the configured
workers), one full training step (forward of source + target, the four losses, backward,
Adam) at 240x320 batch 8 (the paper's setting) on synthetic batches, and the ratio of the
two (how many loader workers a step needs so that data is never the bottleneck).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kp2d_core.config import load_yaml_config
from kp2d_core.model.checkpoint import resolve_device
from kp2d_core.training import Context, TrainConfig, Trainer


def time_loader(trainer: Trainer, batches: int) -> float:
    """Images per second delivered by the training DataLoader (source + target count as 1)."""
    loader = iter(trainer.loader(0))
    next(loader)  # worker start-up is not part of the steady state
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * trainer.cfg.batch_size / (time.perf_counter() - start)


def time_steps(trainer: Trainer, steps: int) -> list[float]:
    """Seconds per training step on one fixed batch (data cost excluded)."""
    batch = next(iter(trainer.loader(0)))
    trainer.train_step(batch)  # warm-up
    samples = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_step(batch)
        if trainer.ctx.device.type == 'cuda':
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description='KP2D training throughput')
    parser.add_argument('--data', required=True)
    parser.add_argument('--config', default='training/configs/v4.yaml')
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--device', default='auto')
    parser.add_argument('overrides', nargs='*')
    args = parser.parse_args()
    extra = [f'data.root={args.data}', 'tensorboard=false', 'progress=false', 'val_images=0']
    cfg = load_yaml_config(TrainConfig, args.config, extra + args.overrides)
    trainer = Trainer(cfg, Context(device=resolve_device(args.device)))
    h, w = cfg.data.image_size
    print(
        f'device {trainer.ctx.device}, {torch.get_num_threads()} torch threads, '
        f'{cfg.workers} loader workers; {h}x{w}, batch {cfg.batch_size}, '
        f'IONet {"on" if cfg.loss.use_io_loss else "off"}'
    )
    images_per_s = time_loader(trainer, max(2, args.steps))
    step_s = statistics.median(time_steps(trainer, args.steps))
    print(f'{"measure":<34} {"value":>10}')
    print(f'{"data loader (pairs/s)":<34} {images_per_s:10.2f}')
    print(f'{"training step (s/step, median)":<34} {step_s:10.2f}')
    print(f'{"training (steps/s)":<34} {1 / step_s:10.3f}')
    print(f'{"training (pairs/s)":<34} {cfg.batch_size / step_s:10.2f}')
    print(f'{"loader / training pairs ratio":<34} {images_per_s * step_s / cfg.batch_size:10.2f}')


if __name__ == '__main__':
    main()
