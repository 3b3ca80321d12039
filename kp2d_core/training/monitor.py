"""What a run reports: per-step metrics, validation after each epoch, progress and images."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kp2d_core.data.dataset import ImageFolderPairs
from kp2d_core.inference.extractor import KeypointExtractor
from kp2d_core.training import state
from kp2d_core.training.config import TrainConfig
from kp2d_core.training.distributed import Context
from kp2d_core.training.module import KP2DTrainModule
from kp2d_core.viz import draw_keypoints

LOG = logging.getLogger(__name__)
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
DISTILLED_TERMS = ('kd_total', 'kd_score', 'kd_loc', 'kd_desc')


class Monitor:
    """metrics.jsonl, TensorBoard (when installed) and a tqdm bar, on rank 0 only."""

    def __init__(self, cfg: TrainConfig, ctx: Context, out: Path, val_files: list[Path]) -> None:
        self.cfg, self.out, self.enabled = cfg, out, ctx.main
        self.terms = LOGGED_TERMS + (DISTILLED_TERMS if cfg.distill.teacher else ())
        self.device = ctx.device
        self.val_batch = self._validation_batch(val_files) if self.enabled else None
        self.writer = self._tensorboard() if self.enabled and cfg.tensorboard else None
        self.progress: Any = None

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

    def start(self, total: int, step: int) -> None:
        if not (self.cfg.progress and self.enabled):
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.progress = tqdm(
            total=total, initial=min(step, total), unit='step', dynamic_ncols=True
        )

    def log_step(self, step: int, epoch: int, lr: float, terms: dict[str, float]) -> None:
        if not self.enabled:
            return
        state.append_metrics(self.out, {'step': step, 'epoch': epoch, 'lr': lr, **terms})
        if self.writer is not None:
            for key, value in terms.items():
                self.writer.add_scalar(f'train/{key}', value, step)
            self.writer.add_scalar('train/lr', lr, step)
        if self.progress is not None:
            self.progress.set_postfix({k: f'{terms[k]:.3f}' for k in LOGGED_TERMS[:5]})
            self.progress.update(1)

    def end_epoch(self, module: KP2DTrainModule, step: int, epoch: int) -> None:
        metrics = self.validate(module, step)
        if metrics:
            text = ', '.join(f'{k} {v:.4f}' for k, v in metrics.items())
            LOG.info('epoch %d (step %d): %s', epoch, step, text)

    @torch.no_grad()
    def validate(self, module: KP2DTrainModule, step: int) -> dict[str, float]:
        """Repeatability (3 px) and descriptor recall on the held-out batch (eval mode)."""
        if self.val_batch is None:
            return {}
        module.eval()
        batch = {k: v.to(self.device) for k, v in self.val_batch.items()}
        losses = module(batch['source'], batch['target'], batch['H'])
        names = ('total', 'loc', 'recall') + (('kd_loc', 'kd_desc') if 'kd_loc' in losses else ())
        metrics = {'val/' + k: float(losses[k]) for k in names}
        metrics['val/repeatability_3px'] = float(losses['repeatability'])
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)
            self._log_images(module, batch, step)
        return metrics

    def _log_images(self, module: KP2DTrainModule, batch: dict[str, Any], step: int) -> None:
        extractor = KeypointExtractor(module.keypoint_net)
        features = extractor.extract_batch(batch['target'][:2])
        for i, feats in enumerate(features):
            rgb = (batch['target'][i].permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
            top = feats.keypoints[:100]
            drawn = draw_keypoints(rgb[..., ::-1], top)[..., ::-1].copy()
            self.writer.add_image(f'val/top100_keypoints_{i}', drawn, step, dataformats='HWC')

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.writer is not None:
            self.writer.close()
