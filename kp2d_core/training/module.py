"""The trained module: KeypointNet (+ IONet) whose forward pass returns the KP2D losses."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from kp2d_core.config import CELL_SIZE, ModelConfig
from kp2d_core.geometry import interior_cells, normalize_image
from kp2d_core.losses import LossConfig, kp2d_losses
from kp2d_core.networks import IONet, KeypointNet, KeypointOutput
from kp2d_core.networks.keypoint_net import cell_centers


class KP2DTrainModule(nn.Module):
    """KeypointNet + optional IONet whose forward returns the loss dict (what DDP wraps)."""

    def __init__(self, model_cfg: ModelConfig, loss_cfg: LossConfig, bf16: bool = False) -> None:
        super().__init__()
        self.loss_cfg = loss_cfg
        self.bf16 = bf16
        self.keypoint_net = KeypointNet(model_cfg)
        self.io_net = IONet() if loss_cfg.use_io_loss else None

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
    """Share of interior-cell offsets at |tanh| > ``limit`` (a plateau diagnostic).

    Args:
        coords: (B, 2, Hc, Wc) keypoint pixel coordinates from the network.
        cfg: the network's config (for sigma_1).
    """
    hc, wc = coords.shape[-2:]
    offsets = (coords - cell_centers(hc, wc, coords)) / (cfg.sigma1 * (CELL_SIZE - 1) / 2.0)
    return (offsets.abs() > limit)[..., interior_cells(hc, wc, coords.device)].float().mean()
