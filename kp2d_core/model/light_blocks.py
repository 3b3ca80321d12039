"""The light network's encoder and heads (``ModelConfig.architecture = 'light'``).

Same outputs as the paper's network (score and cell-relative location at H/8, descriptors):
a narrow encoder (``widths`` channels per stage) that downsamples with strided convolutions
(or max-pooling), and heads of one 3x3 convolution (full or depthwise-separable) and a 1x1
output. Descriptors come out at H/8, as with the paper's V0/V1; with ``do_upsample`` they are
lifted to H/4 by a bilinear 2x upsampling plus a 1x1 projection of the H/4 encoder features.
The shipped variant (:data:`kp2d_core.model.variants.LIGHT`: 8-16-32-128 channels,
separable detector heads, a full descriptor head, the lift) has a twentieth of the paper
network's arithmetic; each choice was measured (models/light_model.md).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from kp2d_core.config import ModelConfig
from kp2d_core.geometry.coordinates import interior_cells


def conv_bn_act(c_in: int, c_out: int, momentum: float, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias) -> BatchNorm -> LeakyReLU; ``stride`` 2 halves the resolution."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out, momentum=momentum),
        nn.LeakyReLU(inplace=True),
    )


def separable_bn_act(channels: int, momentum: float) -> nn.Sequential:
    """Depthwise 3x3 -> pointwise 1x1 (no bias) -> BatchNorm -> LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
        nn.Conv2d(channels, channels, 1, bias=False),
        nn.BatchNorm2d(channels, momentum=momentum),
        nn.LeakyReLU(inplace=True),
    )


def head_body(cfg: ModelConfig, kind: str) -> nn.Sequential:
    """The heads' shared shape: one 3x3 convolution on the trunk (width ``widths[3]``), full
    or depthwise-separable (``kind``)."""
    width, m = cfg.widths[3], cfg.bn_momentum
    if kind == 'separable':
        return separable_bn_act(width, m)
    return conv_bn_act(width, width, m)


class LightEncoder(nn.Module):
    """(B, C, H, W) -> trunk (B, w3, H/8, W/8) and skip (B, w2, H/4, W/4).

    Stage i (i = 0..3) runs at H/2^i: a first convolution that changes the width (strided
    from stage 1 on, or after a 2x2 max-pooling) and a second one at that width; stage 0 has
    only the first.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        m, widths = cfg.bn_momentum, cfg.widths
        c_in = 3 if cfg.use_color else 1
        strided = cfg.downsample == 'stride'
        self.stage0 = conv_bn_act(c_in, widths[0], m)
        stages = []
        for i in range(1, 4):
            first = conv_bn_act(widths[i - 1], widths[i], m, stride=2 if strided else 1)
            layers = [first] if strided else [nn.MaxPool2d(2, 2), first]
            stages.append(nn.Sequential(*layers, conv_bn_act(widths[i], widths[i], m)))
        self.stage1, self.stage2, self.stage3 = stages

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.stage2(self.stage1(self.stage0(x)))
        return self.stage3(skip), skip


class LightScoreHead(nn.Module):
    """(B, w3, Hc, Wc) -> (B, 1, Hc, Wc) sigmoid score with the border ring zeroed."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.body = nn.Sequential(head_body(cfg, cfg.head_conv), nn.Conv2d(cfg.widths[3], 1, 1))

    def forward(self, trunk: torch.Tensor) -> torch.Tensor:
        score = torch.sigmoid(self.body(trunk))
        return score * interior_cells(*score.shape[-2:], score.device).to(score.dtype)


class LightLocationHead(nn.Module):
    """(B, w3, Hc, Wc) -> (B, 2, Hc, Wc) tanh offsets (x, y) in (-1, 1)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.body = nn.Sequential(head_body(cfg, cfg.head_conv), nn.Conv2d(cfg.widths[3], 2, 1))

    def forward(self, trunk: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(trunk))


class LightDescriptorHead(nn.Module):
    """(B, w3, Hc, Wc) [+ skip (B, w2, 2Hc, 2Wc)] -> raw descriptors (B, D, Hd, Wd).

    Hd = H/8, or H/4 with ``do_upsample`` (bilinear 2x of the H/8 projection plus a 1x1
    projection of the skip).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        dim = cfg.descriptor_dim
        body = head_body(cfg, cfg.descriptor_head_conv)
        self.body = nn.Sequential(body, nn.Conv2d(cfg.widths[3], dim, 1))
        self.skip: nn.Module | None = None
        if cfg.do_upsample:
            self.skip = nn.Conv2d(cfg.widths[2], dim, 1)

    def forward(self, trunk: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.body(trunk)
        if self.skip is None:
            return x
        up = F.interpolate(x, scale_factor=2.0, mode='bilinear', align_corners=False)
        return up + self.skip(skip)
