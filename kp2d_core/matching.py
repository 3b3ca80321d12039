"""Descriptor distances and matching: mutual nearest neighbours with distance and ratio gates.

A low-level module (it imports only torch), so the training losses use the same descriptor
distance as inference without reaching the inference front-end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from kp2d_core.frontend import Features


@dataclass(frozen=True)
class Matches:
    """Correspondences between two keypoint sets.

    Attributes:
        indices: (M, 2) int64 pairs (index in view 0, index in view 1).
        distances: (M,) descriptor distances of the pairs.
    """

    indices: torch.Tensor
    distances: torch.Tensor

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def descriptor_distances(
    desc0: torch.Tensor, desc1: torch.Tensor, min_squared: float = 0.0
) -> torch.Tensor:
    """Euclidean distances between unit-norm descriptors, ``sqrt(2 - 2 cos)``.

    Args:
        desc0: (..., N, D) unit-norm descriptors.
        desc1: (..., M, D) unit-norm descriptors.
        min_squared: floor of the squared distance; > 0 keeps the gradient of sqrt finite
            for identical descriptors (training).

    Returns:
        (..., N, M) distances in [0, 2].
    """
    cosine = (desc0 @ desc1.transpose(-1, -2)).clamp(-1.0, 1.0)
    return torch.sqrt((2.0 - 2.0 * cosine).clamp(min=min_squared))


def match_descriptors(
    desc0: torch.Tensor,
    desc1: torch.Tensor,
    mutual: bool = True,
    max_distance: float | None = None,
    ratio: float | None = None,
) -> Matches:
    """Nearest-neighbour matching of (N, D) against (M, D) unit-norm descriptors.

    Args:
        desc0, desc1: descriptors of views 0 and 1.
        mutual: keep only pairs that are each other's nearest neighbour.
        max_distance: drop pairs farther apart than this (None: no gate).
        ratio: Lowe's test, keep pairs whose nearest/second-nearest distance ratio is below
            it (None: no test; needs at least 2 candidates in view 1).

    Returns:
        :class:`Matches` ordered by index in view 0.
    """
    if desc0.ndim != 2 or desc1.ndim != 2 or desc0.shape[1] != desc1.shape[1]:
        raise ValueError(
            f'descriptor shapes {tuple(desc0.shape)} and {tuple(desc1.shape)} '
            'are not (N, D) and (M, D)'
        )
    empty = Matches(torch.zeros(0, 2, dtype=torch.long, device=desc0.device), desc0.new_zeros(0))
    if len(desc0) == 0 or len(desc1) == 0:
        return empty
    # Distance is monotonic in the cosine: search on the cosines, take distances of the pairs.
    cosine = desc0.float() @ desc1.float().T
    best_cosine, nn01 = cosine.max(dim=1)
    best = _distance(best_cosine)
    keep = torch.ones_like(best, dtype=torch.bool)
    if mutual:
        nn10 = cosine.argmax(dim=0)
        keep &= nn10[nn01] == torch.arange(len(desc0), device=cosine.device)
    if max_distance is not None:
        keep &= best <= max_distance
    if ratio is not None:
        if cosine.shape[1] < 2:
            return empty
        two = _distance(cosine.topk(2, dim=1).values)
        keep &= two[:, 0] < ratio * two[:, 1]
    idx0 = torch.nonzero(keep).squeeze(1)
    return Matches(torch.stack([idx0, nn01[idx0]], dim=1), best[idx0])


def _distance(cosine: torch.Tensor) -> torch.Tensor:
    """Distance of unit vectors from their cosine (as :func:`descriptor_distances`)."""
    return torch.sqrt((2.0 - 2.0 * cosine.clamp(-1.0, 1.0)).clamp(min=0.0))


def match(
    f0: Features,
    f1: Features,
    mutual: bool = True,
    max_distance: float | None = None,
    ratio: float | None = None,
) -> Matches:
    """Match the descriptors of two :class:`Features` (see :func:`match_descriptors`)."""
    return match_descriptors(
        f0.descriptors, f1.descriptors.to(f0.descriptors.device), mutual, max_distance, ratio
    )
