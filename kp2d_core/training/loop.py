"""The training loop: ``train(cfg)`` runs epochs of (source, target, H) batches.

Checkpoints every ``checkpoint_every`` steps and at each epoch end (model, IONet, optimiser,
RNG state and position in the epoch); ``resume=True`` continues a killed run exactly where its
last checkpoint left it, and refuses a changed configuration unless told otherwise. Steps
whose loss or gradients are not finite are skipped and logged. Metrics go to ``metrics.jsonl``
and, when installed, TensorBoard.
"""

from __future__ import annotations

import logging
from pathlib import Path
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from kp2d_core.config import to_dict
from kp2d_core.data.dataset import ImageFolderPairs, split_files
from kp2d_core.model.checkpoint import (
    atomic_save,
    check_state_dict,
    load_model,
    make_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from kp2d_core.model.files import default_weights_path
from kp2d_core.output_files import describe_os_error
from kp2d_core.training import state
from kp2d_core.training.config import TrainConfig, config_changes, learning_rate
from kp2d_core.training.distributed import Context, SkipSampler, setup_distributed
from kp2d_core.training.module import KP2DTrainModule, Teacher
from kp2d_core.training.monitor import Monitor

LOG = logging.getLogger(__name__)


def load_teacher(source: str, device: torch.device, bf16: bool) -> Teacher | None:
    """The distillation teacher: '' none, 'default' the bundled model, else a checkpoint path."""
    if not source:
        return None
    path = default_weights_path() if source == 'default' else Path(source)
    LOG.info('distilling from %s', path)
    return Teacher(load_model(path, device), bf16)


class Trainer:
    """Owns the model, optimiser and data of one run (see :func:`train`)."""

    def __init__(self, cfg: TrainConfig, ctx: Context) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.out = Path(cfg.out_dir)
        torch.manual_seed(cfg.seed + ctx.rank)
        teacher = load_teacher(cfg.distill.teacher, ctx.device, cfg.bf16)
        self.module = KP2DTrainModule(cfg.model, cfg.loss, cfg.bf16, teacher, cfg.distill).to(
            ctx.device
        )
        if cfg.zero_init_offsets:
            self.module.zero_init_offsets()
        self.net: nn.Module = self.module
        if ctx.world > 1:
            ids = [ctx.device.index] if ctx.device.type == 'cuda' else None
            self.net = nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=cfg.optim.lr)
        train_files, val_files = split_files(
            cfg.data.root, cfg.data.exclude_list, cfg.val_images, cfg.seed
        )
        skip_log = self.out / 'skipped_images.txt'
        self.dataset = ImageFolderPairs(cfg.data, cfg.seed, train_files, skip_log)
        self.sampler = DistributedSampler(
            self.dataset, ctx.world, ctx.rank, shuffle=True, seed=cfg.seed, drop_last=True
        )
        self.step, self.epoch, self.batch_in_epoch, self.skipped = 0, 0, 0, 0
        self.monitor = Monitor(cfg, ctx, self.out, val_files)

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
            worker_init_fn=state.die_with_parent,
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
        if not self.ctx.all_agree(self._finite(losses['total'])):
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for buffer, saved in zip(self.module.buffers(), buffers):
                    buffer.copy_(saved)
            return None
        if self.cfg.optim.grad_clip_norm > 0:
            nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.optim.grad_clip_norm)
        self.optimizer.step()
        return {k: float(losses[k].detach()) for k in self.monitor.terms}

    def _finite(self, loss: torch.Tensor) -> bool:
        return bool(torch.isfinite(loss)) and all(
            bool(torch.isfinite(p.grad).all())
            for p in self.module.parameters()
            if p.grad is not None
        )

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
        """Write the training checkpoint; a full or read-only disk ends the run clearly."""
        if not self.ctx.main:
            return
        path = self.out / state.LAST_CHECKPOINT
        try:
            atomic_save(self.checkpoint_state(), path)
        except (OSError, RuntimeError) as exc:
            if not state.is_storage_error(exc):
                raise
            reason = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
            raise state.RunDirError(
                getattr(exc, 'errno', None),
                f'cannot write {path} at step {self.step}: {reason}; the previous checkpoint '
                'is intact, free some space and continue with --resume',
            ) from exc

    def restore(self, path: Path, allow_config_change: bool = False) -> None:
        """Continue from a checkpoint written by :meth:`save`.

        Raises:
            ValueError: the checkpoint has no training state, or the configuration changed
                and ``allow_config_change`` is False.
        """
        ckpt = read_checkpoint(path)
        saved = ckpt.get('training')
        if not isinstance(saved, dict):
            raise ValueError(f'{path} is a model checkpoint without training state')
        changes = config_changes(saved.get('config') or {}, to_dict(self.cfg))
        if changes and not allow_config_change:
            raise ValueError(
                f'the configuration differs from the one {path} was trained with: '
                f'{"; ".join(changes)}. Resume with the same settings, or pass '
                '--allow-config-change to continue with the new ones'
            )
        if changes:
            LOG.warning('resuming with a changed configuration: %s', '; '.join(changes))
        self._load_weights(ckpt, str(path))
        self.optimizer.load_state_dict(saved['optimizer'])
        self.step, self.epoch = int(saved['step']), int(saved['epoch'])
        self.batch_in_epoch = int(saved['batch_in_epoch'])
        self.skipped = int(saved['skipped_steps'])
        torch.set_rng_state(saved['torch_rng'])
        if self.ctx.rank:
            torch.manual_seed(self.cfg.seed + self.ctx.rank + 7919 * self.step)
        LOG.info(
            'resumed from %s at step %d (epoch %d, batch %d)',
            path,
            self.step,
            self.epoch,
            self.batch_in_epoch,
        )

    def initialise_from(self, path: Path) -> None:
        """Start a new run from another run's weights (KeypointNet, and IONet when present)."""
        self._load_weights(read_checkpoint(path), str(path))
        LOG.info('initialised the weights from %s', path)

    def _load_weights(self, ckpt: dict[str, Any], source: str) -> None:
        check_state_dict(self.module.keypoint_net, ckpt['state_dict'], source)
        self.module.keypoint_net.load_state_dict(ckpt['state_dict'])
        io_state = (ckpt.get('training') or {}).get('io_net')
        if self.module.io_net is not None and io_state is not None:
            self.module.io_net.load_state_dict(io_state)

    # ---------------------------------------------------------------- loop
    def run_epoch(self) -> bool:
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
                lr = self.optimizer.param_groups[0]['lr']
                self.monitor.log_step(self.step, self.epoch, lr, terms)
            state.check_free_space(self.out, self.step)
            if self.step % self.cfg.checkpoint_every == 0:
                self.save()
            if self.cfg.max_steps and self.step >= self.cfg.max_steps:
                return True
        return False

    def total_steps(self) -> int:
        total = self.cfg.epochs * self.steps_per_epoch()
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total

    def finished(self) -> bool:
        return self.step >= self.total_steps()

    def fit(self) -> None:
        """Train until ``epochs`` (or ``max_steps``) are done, checkpointing along the way."""
        total = self.cfg.epochs * self.steps_per_epoch()
        self.monitor.start(
            min(total, self.cfg.max_steps) if self.cfg.max_steps else total, self.step
        )
        while self.epoch < self.cfg.epochs:
            if self.run_epoch():
                break
            self.epoch += 1
            self.batch_in_epoch = 0
            self.monitor.end_epoch(self.module, self.step, self.epoch)
            self.save()
        self.save()
        skipped = self.dataset.skipped_files()
        if skipped and self.ctx.main:
            LOG.warning('%d unreadable images were skipped: %s', len(skipped), ', '.join(skipped))
        if self.ctx.main:
            save_checkpoint(
                self.out / 'model.pt',
                self.module.keypoint_net,
                {'step': self.step, 'epoch': self.epoch, 'config': to_dict(self.cfg)},
            )
        self.monitor.close()


def train(
    cfg: TrainConfig,
    resume: bool = False,
    allow_config_change: bool = False,
    overwrite: bool = False,
) -> Path:
    """Run (or resume) training; returns the path of the final model checkpoint.

    A new run in a folder that holds one is refused unless ``overwrite`` (its metrics,
    configuration and checkpoints would be replaced).

    Raises:
        FileNotFoundError: ``resume`` without a checkpoint in ``out_dir``.
        ValueError: ``resume`` with a changed configuration (see :meth:`Trainer.restore`).
        RunDirError: the run directory is read-only or full.
    """
    if state.ctx_is_main():  # before anything (TensorBoard, checkpoints) creates files there
        state.check_writable(Path(cfg.out_dir), state.MIN_FREE_BYTES)
    ctx = setup_distributed(cfg.device)
    try:
        trainer = Trainer(cfg, ctx)
        state.prepare_run_dir(trainer, resume, allow_config_change, overwrite)
        if resume and trainer.finished():
            LOG.warning(
                'the run in %s already finished at step %d: nothing to do, nothing changed '
                '(raise epochs or max_steps to train on)',
                trainer.out,
                trainer.step,
            )
            trainer.monitor.close()
            return trainer.out / 'model.pt'
        start = time.time()
        trainer.fit()
        LOG.info(
            'finished at step %d in %.0f s (%d skipped steps)',
            trainer.step,
            time.time() - start,
            trainer.skipped,
        )
        return trainer.out / 'model.pt'
    finally:
        ctx.close()
