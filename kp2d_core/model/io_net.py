"""IONet: the inlier/outlier classifier of KP2D (Sec. 3.4), a 1-D CNN over point pairs.

Structure follows the NG-RANSAC network the paper cites: 1x1 convolutions, residual blocks
with instance + batch normalisation, and no final activation (the output is regressed to
+1 for inliers and -1 for outliers). Used at training time only.
"""

from __future__ import annotations

import torch
from torch import nn

IO_INPUT_CHANNELS = 5  # source x, y, associated target x, y (normalised), descriptor distance


class ResidualBlock(nn.Module):
    """(B, C, N) -> (B, C, N): twice [1x1 conv -> InstanceNorm -> BatchNorm -> ReLU], + input."""

    def __init__(self, channels: int, momentum: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(2):
            layers += [
                nn.Conv1d(channels, channels, 1),
                nn.InstanceNorm1d(channels),
                nn.BatchNorm1d(channels, momentum=momentum),
                nn.ReLU(inplace=True),
            ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class IONet(nn.Module):
    """Per-pair inlier score (unbounded; positive means inlier).

    Args:
        channels: width of the hidden 1x1 convolutions.
        blocks: number of residual blocks.
        bn_momentum: BatchNorm momentum (PyTorch convention; the reference's stem uses 0.9,
            which reads like a TensorFlow-convention slip, so we use 0.1 everywhere).
    """

    def __init__(self, channels: int = 128, blocks: int = 4, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(IO_INPUT_CHANNELS, channels, 1, bias=False),
            nn.BatchNorm1d(channels, momentum=bn_momentum),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(*(ResidualBlock(channels, bn_momentum) for _ in range(blocks)))
        self.head = nn.Conv1d(channels, 1, 1)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """Score point pairs.

        Args:
            pairs: (B, 5, N) with N >= 2 (instance norm needs more than one point).

        Returns:
            (B, N) raw inlier scores.
        """
        if pairs.ndim != 3 or pairs.shape[1] != IO_INPUT_CHANNELS or pairs.shape[2] < 2:
            raise ValueError(f'expected pairs (B, 5, N>=2), got {tuple(pairs.shape)}')
        return self.head(self.blocks(self.stem(pairs))).squeeze(1)
