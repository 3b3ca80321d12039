"""The trained module: KeypointNet (+ IONet) whose forward pass returns the KP2D losses, and
the distillation terms when a teacher network is given."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from kp2d_core.config import CELL_SIZE, ModelConfig
from kp2d_core.geometry.coordinates import interior_cells
from kp2d_core.images import normalize_image
from kp2d_core.model.io_net import IONet
from kp2d_core.model.keypoint_net import KeypointNet, KeypointOutput, cell_centers
from kp2d_core.model.losses import LossConfig, kp2d_losses
from kp2d_core.model.losses.distillation import DistillConfig, distillation_losses


class Teacher:
    """A frozen network whose dense outputs a student learns.

    Not a submodule of the trained module: its weights are neither optimised, nor saved in
    the student's checkpoints, nor synchronised by DDP.
    """

    def __init__(self, model: KeypointNet, bf16: bool = False) -> None:
        self.model = model.eval().requires_grad_(False)
        self.bf16 = bf16

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> KeypointOutput:
        """Dense outputs (float32) for (B, 3, H, W) images in [0, 1]."""
        model = self.model
        device = next(model.parameters()).device
        net_in = normalize_image(images.to(device), model.cfg.use_color)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = model(net_in)
        return KeypointOutput(*(x.float() for x in out))


class KP2DTrainModule(nn.Module):
    """KeypointNet + optional IONet whose forward returns the loss dict (what DDP wraps).

    With a :class:`Teacher`, the distillation terms (:mod:`kp2d_core.model.losses.distillation`)
    are added to the KP2D losses on the same images.
    """

    def __init__(
        self,
        model_cfg: ModelConfig,
        loss_cfg: LossConfig,
        bf16: bool = False,
        teacher: Teacher | None = None,
        distill_cfg: DistillConfig | None = None,
    ) -> None:
        super().__init__()
        self.loss_cfg = loss_cfg
        self.bf16 = bf16
        self.keypoint_net = KeypointNet(model_cfg)
        self.io_net = IONet() if loss_cfg.use_io_loss else None
        self.teacher = teacher
        self.distill_cfg = distill_cfg or DistillConfig()

    def zero_init_offsets(self) -> None:
        """Start every keypoint at its cell centre (the location head's last conv at 0)."""
        last = self.keypoint_net.location_head.body[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(
        self, source: torch.Tensor, target: torch.Tensor, H: torch.Tensor, step: int = 10**9
    ) -> dict[str, torch.Tensor]:
        """Losses for (B, 3, H, W) source/target images in [0, 1] and (B, 3, 3) H at ``step``."""
        loss_cfg = self.loss_cfg
        if step < loss_cfg.semihard_steps:
            loss_cfg = replace(loss_cfg, negative_mining='semihard')
        pair = torch.cat([source, target])
        images = normalize_image(pair, self.keypoint_net.cfg.use_color)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.keypoint_net(images)
        out = KeypointOutput(*(x.float() for x in out))  # losses in float32
        b = source.shape[0]
        out_s = KeypointOutput(*(x[:b] for x in out))
        out_t = KeypointOutput(*(x[b:] for x in out))
        terms = kp2d_losses(out_s, out_t, H, loss_cfg, self.io_net)
        terms['offset_saturated'] = saturated_offsets(out.coords.detach(), self.keypoint_net.cfg)
        if self.teacher is not None:
            distilled = distillation_losses(out, self.teacher(pair), self.distill_cfg)
            terms['total'] = terms['total'] + distilled['kd_total']
            terms.update(distilled)
        return terms


def saturated_offsets(coords: torch.Tensor, cfg: ModelConfig, limit: float = 0.99) -> torch.Tensor:
    """Share of interior-cell offsets at |tanh| > ``limit`` (a plateau diagnostic).

    Args:
        coords: (B, 2, Hc, Wc) keypoint pixel coordinates from the network.
        cfg: the network's config (for sigma_1).
    """
    hc, wc = coords.shape[-2:]
    offsets = (coords - cell_centers(hc, wc, coords)) / (cfg.sigma1 * (CELL_SIZE - 1) / 2.0)
    return (offsets.abs() > limit)[..., interior_cells(hc, wc, coords.device)].float().mean()
