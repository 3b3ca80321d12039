"""Weights and thresholds of the KP2D losses (paper Eq. 1-6).

Choices where the paper and the reference code differ are documented on the fields and in the
README.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SQRT_FLOOR = 1e-8  # squared-distance floor: finite gradients for identical descriptors
REPEATABILITY_PX = 3.0  # diagnostic only: share of usable source cells re-detected this close


@dataclass(frozen=True)
class LossConfig:
    """Weights and thresholds of Eq. 1-6 (paper defaults unless noted)."""

    keypoint_weight: float = 1.0  # alpha, Eq. 6
    descriptor_weight: float = 2.0  # beta, Eq. 6
    score_weight: float = 1.0  # lambda, Eq. 6
    io_weight: float = 1.0  # weight of L_IO (1 in Eq. 6)
    use_descriptor_loss: bool = True  # False gives V3 (descriptors trained through IONet only)
    use_io_loss: bool = True  # V3 / V4
    epsilon_uv: float = 4.0  # px: association validity (L_loc, L_score) and IO inlier label
    descriptor_margin: float = 0.2  # triplet margin m
    relax_field_px: float = 8.0  # c: negatives must be this far (Chebyshev px) from the anchor
    min_descriptor_cells: int = 20  # images with fewer usable cells skip L_desc
    io_top_k: int = 300  # K cells per image fed to IONet
    io_selection: Literal['lowest', 'highest'] = 'lowest'  # paper: the K lowest-score cells
    io_min_inliers: int = 10  # L_IO is applied only when the batch has more inlier pairs
    negative_mining: Literal['hardest', 'semihard'] = 'hardest'  # see triplet_loss
    semihard_steps: int = 0  # the first optimiser steps mine semi-hard negatives (no collapse)
    score_loss: Literal['paper', 'bce'] = 'paper'  # Eq. 4, or repeatability_score_loss
    score_consistency_weight: float = 1.0  # weight of (s - s_hat)^2 inside Eq. 4

    def __post_init__(self) -> None:
        if self.io_selection not in ('lowest', 'highest'):
            raise ValueError(
                f"io_selection must be 'lowest' or 'highest', got {self.io_selection}"
            )
        if self.epsilon_uv <= 0 or self.relax_field_px < 0 or self.io_top_k < 2:
            raise ValueError('epsilon_uv must be > 0, relax_field_px >= 0 and io_top_k >= 2')
