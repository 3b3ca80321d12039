"""Correspondences between two keypoint sets (the result of matching, the input of model
fitting)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Matches:
    """Correspondences between two keypoint sets.

    Attributes:
        indices: (M, 2) int64 pairs (index in view 0, index in view 1).
        distances: (M,) float32 descriptor distances of the pairs.
    """

    indices: np.ndarray
    distances: np.ndarray

    def __len__(self) -> int:
        return int(self.indices.shape[0])
