"""Configuration of a training run (saved with every checkpoint) and the learning-rate schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kp2d_core.config import ModelConfig
from kp2d_core.data.dataset import DataConfig
from kp2d_core.model.losses import LossConfig
from kp2d_core.model.losses.distillation import DistillConfig


@dataclass(frozen=True)
class OptimConfig:
    """Adam with a step schedule (paper: lr 1e-3, halved after 40 of 50 epochs)."""

    lr: float = 1e-3
    lr_decay_epochs: tuple[int, ...] = (40,)  # multiply the lr by lr_decay at these epochs
    lr_decay: float = 0.5
    grad_clip_norm: float = 0.0  # 0 disables clipping
    warmup_steps: int = 0  # linear ramp of the lr from lr / warmup_steps over the first steps

    def __post_init__(self) -> None:
        if not self.lr > 0 or not 0 < self.lr_decay <= 1:
            raise ValueError(
                f'lr must be > 0 and lr_decay in (0, 1], got {self.lr}, {self.lr_decay}'
            )
        if self.warmup_steps < 0 or self.grad_clip_norm < 0:
            raise ValueError('warmup_steps and grad_clip_norm must be >= 0')


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved with every checkpoint."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    epochs: int = 50
    batch_size: int = 8  # per process
    workers: int = 2  # DataLoader worker processes per training process
    seed: int = 42
    max_steps: int = 0  # > 0: stop after this many optimiser steps (smoke runs, budgets)
    checkpoint_every: int = 500  # steps between checkpoints (also written at epoch end)
    val_images: int = 8  # images held out of training for the validation metrics
    device: str = 'auto'  # 'auto', 'cpu', 'cuda' or 'cuda:N' (DDP uses LOCAL_RANK)
    out_dir: str = 'runs/kp2d'
    tensorboard: bool = True
    progress: bool = True  # tqdm progress bar on rank 0
    bf16: bool = False  # network in bfloat16 autocast (fast on CPUs with AVX512-BF16, CUDA)
    zero_init_offsets: bool = False  # start every keypoint at its cell centre (tanh at 0)
    init_weights: str = ''  # a checkpoint whose weights start a new run (fine-tuning)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.epochs < 1 or self.checkpoint_every < 1:
            raise ValueError('batch_size, epochs and checkpoint_every must be positive')
        if self.max_steps < 0 or self.workers < 0 or self.val_images < 0:
            raise ValueError('max_steps, workers and val_images must be >= 0')


# Fields that may differ between a run and its resumption: where and how long it runs, not what
# each step computes.
RESUME_SAFE_FIELDS = (
    'progress',
    'tensorboard',
    'workers',
    'device',
    'out_dir',
    'max_steps',
    'epochs',
    'checkpoint_every',
)


def config_changes(saved: dict[str, Any], current: dict[str, Any], prefix: str = '') -> list[str]:
    """'key: saved -> current' for every leaf that differs (nested dicts of two configs)."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        name = f'{prefix}{key}'
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += config_changes(old, new, f'{name}.')
        elif old != new and name not in RESUME_SAFE_FIELDS:
            changes.append(f'{name}: {old!r} -> {new!r}')
    return changes


def learning_rate(cfg: OptimConfig, epoch: int, step: int = 10**9) -> float:
    """The learning rate of optimiser step ``step`` (0-based) in ``epoch``.

    Step decay at ``lr_decay_epochs``, times a linear warm-up over the first ``warmup_steps``.
    """
    lr = cfg.lr * cfg.lr_decay ** sum(epoch >= e for e in cfg.lr_decay_epochs)
    if cfg.warmup_steps > 0:
        lr *= min(1.0, (step + 1) / cfg.warmup_steps)
    return lr
