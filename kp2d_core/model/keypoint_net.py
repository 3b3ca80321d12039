"""KeypointNet: VGG-style encoder to H/8 with score, location and descriptor heads (Fig. 2).

Read bottom-up: conv block -> encoder -> heads -> the network. The forward pass returns dense
predictions only; keypoint selection lives in :mod:`kp2d_core.inference.extractor` and the losses
in :mod:`kp2d_core.model.losses`, so train and eval modes return the same things.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from kp2d_core.config import CELL_SIZE, ModelConfig
from kp2d_core.geometry.coordinates import interior_cells
from kp2d_core.model.light_blocks import (
    LightDescriptorHead,
    LightEncoder,
    LightLocationHead,
    LightScoreHead,
)

SKIP_CHANNELS = 128
TRUNK_CHANNELS = 256


class KeypointOutput(NamedTuple):
    """Dense KeypointNet predictions for a batch of (B, C, H, W) images, Hc = H/8, Wc = W/8.

    Attributes:
        score: (B, 1, Hc, Wc) keypoint scores in [0, 1]; the outer ring of cells is 0.
        coords: (B, 2, Hc, Wc) keypoint pixel coordinates (x, y) in the input image.
        descriptors: (B, D, Hd, Wd) raw (unnormalised) dense descriptors, Hd = H/4 with
            upsampling, H/8 without.
    """

    score: torch.Tensor
    coords: torch.Tensor
    descriptors: torch.Tensor


def conv_bn_act(c_in: int, c_out: int, momentum: float) -> nn.Sequential:
    """3x3 conv (no bias) -> BatchNorm -> LeakyReLU, resolution preserved."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out, momentum=momentum),
        nn.LeakyReLU(inplace=True),
    )


def dropout(cfg: ModelConfig) -> nn.Module:
    return nn.Dropout2d(cfg.dropout) if cfg.with_dropout and cfg.dropout > 0 else nn.Identity()


class Encoder(nn.Module):
    """Four VGG blocks: (B, C, H, W) -> trunk (B, 256, H/8, W/8) and skip (B, 128, H/4, W/4)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        m = cfg.bn_momentum
        c_in = 3 if cfg.use_color else 1
        self.block1 = nn.Sequential(conv_bn_act(c_in, 32, m), conv_bn_act(32, 32, m), dropout(cfg))
        self.block2 = nn.Sequential(conv_bn_act(32, 64, m), conv_bn_act(64, 64, m), dropout(cfg))
        self.block3 = nn.Sequential(
            conv_bn_act(64, SKIP_CHANNELS, m),
            conv_bn_act(SKIP_CHANNELS, SKIP_CHANNELS, m),
            dropout(cfg),
        )
        self.block4 = nn.Sequential(
            conv_bn_act(SKIP_CHANNELS, TRUNK_CHANNELS, m),
            conv_bn_act(TRUNK_CHANNELS, TRUNK_CHANNELS, m),
            dropout(cfg),
        )
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool(self.block1(x))
        x = self.pool(self.block2(x))
        skip = self.block3(x)
        trunk = self.block4(self.pool(skip))
        return trunk, skip


def cell_centers(hc: int, wc: int, like: torch.Tensor) -> torch.Tensor:
    """(1, 2, Hc, Wc) pixel (x, y) centres of the 8x8 cells: 8 * index + 3.5."""
    half = (CELL_SIZE - 1) / 2.0
    ys = torch.arange(hc, device=like.device, dtype=like.dtype) * CELL_SIZE + half
    xs = torch.arange(wc, device=like.device, dtype=like.dtype) * CELL_SIZE + half
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')
    return torch.stack([grid_x, grid_y]).unsqueeze(0)


def offsets_to_pixels(
    offsets: torch.Tensor, sigma1: float, height: int, width: int
) -> torch.Tensor:
    """Eq. 2: cell-relative offsets in (-1, 1) to pixel coordinates, clamped to the image.

    ``p = centre + offset * sigma1 * (sigma2 - 1) / 2`` with sigma2 = 8, so sigma1 = 2 reaches
    7 px from the centre (into neighbouring cells) and sigma1 = 1 stays inside the cell.

    Args:
        offsets: (B, 2, Hc, Wc) tanh outputs (x, y).
        sigma1: cross-border ratio.
        height, width: input image size, used for the clamp.

    Returns:
        (B, 2, Hc, Wc) pixel coordinates (x, y).
    """
    hc, wc = offsets.shape[-2:]
    half = (CELL_SIZE - 1) / 2.0
    coords = cell_centers(hc, wc, offsets) + offsets * (sigma1 * half)
    x = coords[:, 0].clamp(0, width - 1)
    y = coords[:, 1].clamp(0, height - 1)
    return torch.stack([x, y], dim=1)


class ScoreHead(nn.Module):
    """(B, 256, Hc, Wc) -> (B, 1, Hc, Wc) sigmoid score with the border ring zeroed."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_act(TRUNK_CHANNELS, TRUNK_CHANNELS, cfg.bn_momentum),
            dropout(cfg),
            nn.Conv2d(TRUNK_CHANNELS, 1, 3, padding=1),
        )

    def forward(self, trunk: torch.Tensor) -> torch.Tensor:
        score = torch.sigmoid(self.body(trunk))
        return score * interior_cells(*score.shape[-2:], score.device).to(score.dtype)


class LocationHead(nn.Module):
    """(B, 256, Hc, Wc) -> (B, 2, Hc, Wc) tanh offsets (x, y) in (-1, 1)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_act(TRUNK_CHANNELS, TRUNK_CHANNELS, cfg.bn_momentum),
            dropout(cfg),
            nn.Conv2d(TRUNK_CHANNELS, 2, 3, padding=1),
        )

    def forward(self, trunk: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(trunk))


class DescriptorHead(nn.Module):
    """Dense descriptors: (B, 256, Hc, Wc) [+ skip (B, 128, 2Hc, 2Wc)] -> (B, D, Hd, Wd).

    With upsampling, a 512-channel conv is pixel-shuffled to 128 channels at H/4 and
    concatenated with the encoder skip before the last two convolutions.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        m = cfg.bn_momentum
        self.stem = nn.Sequential(conv_bn_act(TRUNK_CHANNELS, TRUNK_CHANNELS, m), dropout(cfg))
        self.upsample: nn.Module | None = None
        if cfg.do_upsample:
            self.upsample = nn.Sequential(
                nn.Conv2d(TRUNK_CHANNELS, 4 * SKIP_CHANNELS, 3, padding=1, bias=False),
                nn.BatchNorm2d(4 * SKIP_CHANNELS, momentum=m),
                nn.PixelShuffle(2),
            )
        self.out = nn.Sequential(
            conv_bn_act(TRUNK_CHANNELS, TRUNK_CHANNELS, m),
            nn.Conv2d(TRUNK_CHANNELS, cfg.descriptor_dim, 3, padding=1),
        )

    def forward(self, trunk: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.stem(trunk)
        if self.upsample is not None:
            x = torch.cat([self.upsample(x), skip], dim=1)
        return self.out(x)


class KeypointNet(nn.Module):
    """KP2D keypoint detector and descriptor (randomly initialised; see ``checkpoint``).

    ``cfg.architecture`` picks the paper's encoder and heads ('vgg') or the light ones
    (:mod:`kp2d_core.model.light_blocks`); both give the same outputs.
    """

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig()
        if self.cfg.architecture == 'light':
            self.encoder = LightEncoder(self.cfg)
            self.score_head = LightScoreHead(self.cfg)
            self.location_head = LightLocationHead(self.cfg)
            self.descriptor_head = LightDescriptorHead(self.cfg)
            return
        self.encoder = Encoder(self.cfg)
        self.score_head = ScoreHead(self.cfg)
        self.location_head = LocationHead(self.cfg)
        self.descriptor_head = DescriptorHead(self.cfg)

    @property
    def descriptor_stride(self) -> int:
        """Downsampling factor of the dense descriptor map (4 with upsampling, else 8)."""
        return CELL_SIZE // 2 if self.cfg.do_upsample else CELL_SIZE

    def forward(self, image: torch.Tensor) -> KeypointOutput:
        """Dense predictions for normalised images.

        Args:
            image: (B, C, H, W) output of :func:`kp2d_core.images.normalize_image`;
                H and W must be multiples of 8 and at least 24.

        Returns:
            :class:`KeypointOutput` with score (B,1,H/8,W/8), coords (B,2,H/8,W/8) in pixels
            and raw descriptors (B,D,H/4,W/4) (H/8 without upsampling).
        """
        height, width = image.shape[-2:]
        if height % CELL_SIZE or width % CELL_SIZE or min(height, width) < 3 * CELL_SIZE:
            raise ValueError(
                f'input must be at least 24x24 with sides divisible by '
                f'{CELL_SIZE}, got {height}x{width}'
            )
        trunk, skip = self.encoder(image)
        score = self.score_head(trunk)
        # Pixel coordinates in float32 even under bf16/fp16 autocast (bf16 keeps ~3 digits).
        offsets = self.location_head(trunk).float()
        coords = offsets_to_pixels(offsets, self.cfg.sigma1, height, width)
        return KeypointOutput(score, coords, self.descriptor_head(trunk, skip))
