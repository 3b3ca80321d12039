"""Self-supervised KP2D training loop: single process, or many with ``torchrun`` (DDP).

``train(cfg)`` runs epochs of (source, target, H) batches through KeypointNet (+ IONet),
checkpoints every ``checkpoint_every`` steps and at each epoch end (model, IONet, optimiser,
LR schedule, RNG state and position in the epoch), and with ``resume=True`` continues a killed
run exactly where its last checkpoint left it. Steps whose loss or gradients are not finite
are skipped and logged. Metrics go to ``metrics.jsonl`` and, when installed, TensorBoard.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
import json
import logging
import os
from pathlib import Path
import time
from typing import Any

import numpy as np
import torch
from torch import nn
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from kp2d_core.checkpoint import (
    atomic_save,
    check_state_dict,
    make_checkpoint,
    read_checkpoint,
    resolve_device,
    save_checkpoint,
)
from kp2d_core.config import CELL_SIZE, ModelConfig, to_dict
from kp2d_core.data.dataset import DataConfig, ImageFolderPairs, list_images, read_exclude_list
from kp2d_core.frontend import KeypointExtractor
from kp2d_core.geometry import normalize_image
from kp2d_core.losses import LossConfig, kp2d_losses
from kp2d_core.networks import IONet, KeypointNet, KeypointOutput
from kp2d_core.networks.keypoint_net import cell_centers
from kp2d_core.viz import draw_keypoints

LOG = logging.getLogger(__name__)
LAST_CHECKPOINT = 'checkpoints/last.pt'
LOGGED_TERMS = (
    'total',
    'loc',
    'desc',
    'score',
    'io',
    'recall',
    'io_inliers',
    'score_mean',
    'score_std',
    'offset_saturated',
    'desc_pos',
    'desc_neg',
)


@dataclass(frozen=True)
class OptimConfig:
    """Adam with a step schedule (paper: lr 1e-3, halved after 40 of 50 epochs)."""

    lr: float = 1e-3
    lr_decay_epochs: tuple[int, ...] = (40,)  # multiply the lr by lr_decay at these epochs
    lr_decay: float = 0.5
    grad_clip_norm: float = 0.0  # 0 disables clipping
    warmup_steps: int = 0  # linear ramp of the lr from lr / warmup_steps over the first steps


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved with every checkpoint."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
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

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.epochs < 1 or self.checkpoint_every < 1:
            raise ValueError('batch_size, epochs and checkpoint_every must be positive')


class KP2DTrainModule(nn.Module):
    """KeypointNet + optional IONet whose forward returns the loss dict (what DDP wraps)."""

    def __init__(self, model_cfg: ModelConfig, loss_cfg: LossConfig, bf16: bool = False) -> None:
        super().__init__()
        self.loss_cfg = loss_cfg
        self.bf16 = bf16
        self.keypoint_net = KeypointNet(model_cfg)
        self.io_net = IONet() if loss_cfg.use_io_loss else None

    def forward(
        self, source: torch.Tensor, target: torch.Tensor, H: torch.Tensor, step: int = 10**9
    ) -> dict[str, torch.Tensor]:
        """Losses for (B, 3, H, W) source/target images in [0, 1] and (B, 3, 3) H at ``step``."""
        loss_cfg = self.loss_cfg
        if step < loss_cfg.semihard_steps:
            loss_cfg = replace(loss_cfg, negative_mining='semihard')
        images = normalize_image(torch.cat([source, target]), self.keypoint_net.cfg.use_color)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.keypoint_net(images)
        out = KeypointOutput(*(x.float() for x in out))  # losses in float32
        b = source.shape[0]
        out_s = KeypointOutput(*(x[:b] for x in out))
        out_t = KeypointOutput(*(x[b:] for x in out))
        terms = kp2d_losses(out_s, out_t, H, loss_cfg, self.io_net)
        terms['offset_saturated'] = saturated_offsets(out.coords.detach(), self.keypoint_net.cfg)
        return terms


def saturated_offsets(coords: torch.Tensor, cfg: ModelConfig, limit: float = 0.99) -> torch.Tensor:
    """Share of interior-cell offsets (B, 2, Hc, Wc coords) at |tanh| > ``limit`` (diagnostic)."""
    hc, wc = coords.shape[-2:]
    offsets = (coords - cell_centers(hc, wc, coords)) / (cfg.sigma1 * (CELL_SIZE - 1) / 2.0)
    return (offsets[..., 1:-1, 1:-1].abs() > limit).float().mean()


@dataclass
class Context:
    """Process placement: rank, world size and device."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device('cpu'))

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Context:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, else gloo)."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world <= 1:
        return Context(device=resolve_device(device))
    use_cuda = torch.cuda.is_available() and device != 'cpu'
    dist.init_process_group('nccl' if use_cuda else 'gloo')
    local = int(os.environ.get('LOCAL_RANK', '0'))
    if use_cuda:
        torch.cuda.set_device(local)
    dev = torch.device(f'cuda:{local}' if use_cuda else 'cpu')
    return Context(dist.get_rank(), world, dev)


class SkipSampler(Sampler[int]):
    """Yield a sampler's indices after dropping the first ``skip`` (for mid-epoch resume)."""

    def __init__(self, sampler: DistributedSampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        for position, index in enumerate(self.sampler):
            if position >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def split_files(cfg: TrainConfig) -> tuple[list[Path], list[Path]]:
    """(train, validation) image lists: a seeded random hold-out of ``val_images`` files."""
    exclude = read_exclude_list(cfg.data.exclude_list) if cfg.data.exclude_list else None
    files = list_images(cfg.data.root, exclude)
    order = np.random.default_rng(cfg.seed).permutation(len(files))
    n_val = min(cfg.val_images, len(files) // 2)
    val = [files[i] for i in sorted(order[:n_val])]
    train = [files[i] for i in sorted(order[n_val:])]
    return train, val


class Trainer:
    """Owns the model, optimiser, data and logs of one run (see :func:`train`)."""

    def __init__(self, cfg: TrainConfig, ctx: Context) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.out = Path(cfg.out_dir)
        torch.manual_seed(cfg.seed + ctx.rank)
        self.module = KP2DTrainModule(cfg.model, cfg.loss, cfg.bf16).to(ctx.device)
        if cfg.zero_init_offsets:
            last = self.module.keypoint_net.location_head.body[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.net: nn.Module = self.module
        if ctx.world > 1:
            ids = [ctx.device.index] if ctx.device.type == 'cuda' else None
            self.net = nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=cfg.optim.lr)
        train_files, val_files = split_files(cfg)
        self.dataset = ImageFolderPairs(cfg.data, seed=cfg.seed, files=train_files)
        self.val_batch = self._validation_batch(val_files)
        self.sampler = DistributedSampler(
            self.dataset, ctx.world, ctx.rank, shuffle=True, seed=cfg.seed, drop_last=True
        )
        self.step, self.epoch, self.batch_in_epoch, self.skipped = 0, 0, 0, 0
        self.writer = self._tensorboard() if ctx.main and cfg.tensorboard else None

    def _validation_batch(self, files: list[Path]) -> dict[str, torch.Tensor] | None:
        if not files:
            return None
        val = ImageFolderPairs(self.cfg.data, seed=self.cfg.seed + 1, files=files)
        items = [val[i] for i in range(len(val))]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}

    def _tensorboard(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            LOG.warning('tensorboard is not installed; logging to metrics.jsonl only')
            return None
        return SummaryWriter(str(self.out / 'tensorboard'))

    def steps_per_epoch(self) -> int:
        return len(self.sampler) // self.cfg.batch_size

    def loader(self, skip_batches: int) -> DataLoader:
        """Batches of the current epoch, after ``skip_batches`` already-done ones."""
        self.sampler.set_epoch(self.epoch)
        self.dataset.set_epoch(self.epoch)
        sampler = SkipSampler(self.sampler, skip_batches * self.cfg.batch_size)
        generator = torch.Generator().manual_seed(self.cfg.seed * 1000 + self.epoch)
        return DataLoader(
            self.dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            num_workers=self.cfg.workers,
            drop_last=True,
            generator=generator,
            pin_memory=self.ctx.device.type == 'cuda',
        )

    # ---------------------------------------------------------------- one step
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float] | None:
        """One optimiser step; None when it was skipped for a non-finite loss or gradient."""
        self.module.train()
        batch = {k: v.to(self.ctx.device, non_blocking=True) for k, v in batch.items()}
        self.optimizer.zero_grad(set_to_none=True)
        for group in self.optimizer.param_groups:
            group['lr'] = learning_rate(self.cfg.optim, self.epoch, self.step)
        buffers = [b.detach().clone() for b in self.module.buffers()]  # BatchNorm statistics
        losses = self.net(batch['source'], batch['target'], batch['H'], self.step)
        losses['total'].backward()
        if not self._all_finite(losses['total']):
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for buffer, saved in zip(self.module.buffers(), buffers):
                    buffer.copy_(saved)
            return None
        if self.cfg.optim.grad_clip_norm > 0:
            nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.optim.grad_clip_norm)
        self.optimizer.step()
        return {k: float(losses[k].detach()) for k in LOGGED_TERMS}

    def _all_finite(self, loss: torch.Tensor) -> bool:
        finite = bool(torch.isfinite(loss)) and all(
            bool(torch.isfinite(p.grad).all())
            for p in self.module.parameters()
            if p.grad is not None
        )
        if self.ctx.world > 1:  # every rank must take the same decision
            flag = torch.tensor([float(finite)], device=self.ctx.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = bool(flag.item() > 0)
        return finite

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        ckpt = make_checkpoint(self.module.keypoint_net, {'step': self.step, 'epoch': self.epoch})
        ckpt['training'] = {
            'config': to_dict(self.cfg),
            'io_net': None if self.module.io_net is None else self.module.io_net.state_dict(),
            'optimizer': self.optimizer.state_dict(),
            'step': self.step,
            'epoch': self.epoch,
            'batch_in_epoch': self.batch_in_epoch,
            'skipped_steps': self.skipped,
            'torch_rng': torch.get_rng_state(),
        }
        return ckpt

    def save(self) -> None:
        if self.ctx.main:
            atomic_save(self.checkpoint_state(), self.out / LAST_CHECKPOINT)

    def restore(self, path: Path) -> None:
        """Load a training checkpoint written by :meth:`save` and continue from it."""
        ckpt = read_checkpoint(path)
        state = ckpt.get('training')
        if not isinstance(state, dict):
            raise ValueError(f'{path} is a model checkpoint without training state')
        check_state_dict(self.module.keypoint_net, ckpt['state_dict'], str(path))
        self.module.keypoint_net.load_state_dict(ckpt['state_dict'])
        if self.module.io_net is not None:
            self.module.io_net.load_state_dict(state['io_net'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.step, self.epoch = int(state['step']), int(state['epoch'])
        self.batch_in_epoch, self.skipped = (
            int(state['batch_in_epoch']),
            int(state['skipped_steps']),
        )
        torch.set_rng_state(state['torch_rng'])
        if self.ctx.rank:
            torch.manual_seed(self.cfg.seed + self.ctx.rank + 7919 * self.step)
        LOG.info(
            'resumed from %s at step %d (epoch %d, batch %d)',
            path,
            self.step,
            self.epoch,
            self.batch_in_epoch,
        )

    # ---------------------------------------------------------------- logging
    def log_step(self, terms: dict[str, float]) -> None:
        if not self.ctx.main:
            return
        lr = self.optimizer.param_groups[0]['lr']
        record = {'step': self.step, 'epoch': self.epoch, 'lr': lr, **terms}
        with open(self.out / 'metrics.jsonl', 'a') as handle:
            handle.write(json.dumps(record) + '\n')
        if self.writer is not None:
            for key, value in terms.items():
                self.writer.add_scalar(f'train/{key}', value, self.step)
            self.writer.add_scalar('train/lr', lr, self.step)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Repeatability (3 px) and descriptor recall on the held-out batch (eval mode)."""
        if self.val_batch is None or not self.ctx.main:
            return {}
        self.module.eval()
        batch = {k: v.to(self.ctx.device) for k, v in self.val_batch.items()}
        losses = self.module(batch['source'], batch['target'], batch['H'])
        metrics = {'val/' + k: float(losses[k]) for k in ('total', 'loc', 'recall')}
        metrics['val/repeatability_3px'] = float(losses['repeatability'])
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, self.step)
            self._log_images(batch)
        return metrics

    def _log_images(self, batch: dict[str, torch.Tensor]) -> None:
        extractor = KeypointExtractor(self.module.keypoint_net)
        features = extractor.extract_tensor(batch['target'][:2].float())
        for i, feats in enumerate(features):
            rgb = (batch['target'][i].permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
            top = feats.keypoints[:100].cpu().numpy()
            drawn = draw_keypoints(rgb[..., ::-1], top)[..., ::-1].copy()
            self.writer.add_image(f'val/top100_keypoints_{i}', drawn, self.step, dataformats='HWC')

    # ---------------------------------------------------------------- loop
    def run_epoch(self, progress: Any) -> bool:
        """Train the rest of the current epoch; True when ``max_steps`` was reached."""
        for batch in self.loader(self.batch_in_epoch):
            terms = self.train_step(batch)
            self.step += 1
            self.batch_in_epoch += 1
            if terms is None:
                self.skipped += 1
                LOG.warning(
                    'step %d: non-finite loss or gradient, step skipped (%d so far)',
                    self.step,
                    self.skipped,
                )
            else:
                self.log_step(terms)
                if progress is not None:
                    progress.set_postfix({k: f'{terms[k]:.3f}' for k in LOGGED_TERMS[:5]})
            if progress is not None:
                progress.update(1)
            if self.step % self.cfg.checkpoint_every == 0:
                self.save()
            if self.cfg.max_steps and self.step >= self.cfg.max_steps:
                return True
        return False

    def fit(self) -> None:
        """Train until ``epochs`` (or ``max_steps``) are done, checkpointing along the way."""
        total = self.cfg.epochs * self.steps_per_epoch()
        if self.cfg.max_steps:
            total = min(total, self.cfg.max_steps)
        progress = self._progress(total)
        while self.epoch < self.cfg.epochs:
            if self.run_epoch(progress):
                break
            self.epoch += 1
            self.batch_in_epoch = 0
            metrics = self.validate()
            self.save()
            if metrics:
                LOG.info(
                    'epoch %d (step %d): %s',
                    self.epoch,
                    self.step,
                    ', '.join(f'{k} {v:.4f}' for k, v in metrics.items()),
                )
        self.save()
        if self.ctx.main:
            save_checkpoint(
                self.out / 'model.pt',
                self.module.keypoint_net,
                {'step': self.step, 'epoch': self.epoch, 'config': to_dict(self.cfg)},
            )
        if progress is not None:
            progress.close()

    def _progress(self, total: int) -> Any:
        if not (self.cfg.progress and self.ctx.main):
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(total=total, initial=min(self.step, total), unit='step', dynamic_ncols=True)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric records written after ``step`` (they are recomputed after a resume)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if json.loads(line)['step'] <= step]
    path.write_text(''.join(line + '\n' for line in keep))


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Run (or resume) training; returns the path of the final model checkpoint.

    Raises:
        FileNotFoundError: ``resume`` without a checkpoint in ``out_dir``.
    """
    ctx = setup_distributed(cfg.device)
    try:
        trainer = Trainer(cfg, ctx)
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if resume:
            last = out / LAST_CHECKPOINT
            if not last.is_file():
                raise FileNotFoundError(f'--resume: no checkpoint at {last}')
            trainer.restore(last)
            if ctx.main:
                truncate_metrics(out / 'metrics.jsonl', trainer.step)
        elif ctx.main:
            (out / 'metrics.jsonl').unlink(missing_ok=True)
            (out / 'config.json').write_text(json.dumps(to_dict(cfg), indent=2))
        start = time.time()
        trainer.fit()
        LOG.info(
            'finished at step %d in %.0f s (%d skipped steps)',
            trainer.step,
            time.time() - start,
            trainer.skipped,
        )
        return out / 'model.pt'
    finally:
        if ctx.world > 1:
            dist.destroy_process_group()


def learning_rate(cfg: OptimConfig, epoch: int, step: int = 10**9) -> float:
    """The learning rate of optimiser step ``step`` (0-based) in ``epoch``.

    Step decay at ``lr_decay_epochs``, times a linear warm-up over the first ``warmup_steps``.
    """
    lr = cfg.lr * cfg.lr_decay ** sum(epoch >= e for e in cfg.lr_decay_epochs)
    if cfg.warmup_steps > 0:
        lr *= min(1.0, (step + 1) / cfg.warmup_steps)
    return lr
