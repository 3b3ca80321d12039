"""Descriptor distances and matching: mutual nearest neighbours with distance and ratio gates.

A low-level module on NumPy (torch only for the training losses' distances, imported by the
caller), so the losses use the same descriptor distance as inference without reaching the
inference front-end, and inference runs without PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from kp2d_core.geometry import is_tensor

if TYPE_CHECKING:
    import torch

    from kp2d_core.frontend import Features

Array = TypeVar('Array', np.ndarray, 'torch.Tensor')


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


def unit_rows(vectors: np.ndarray, axis: int = -1) -> np.ndarray:
    """``vectors`` scaled to unit L2 norm along ``axis`` (zero vectors stay zero), float32."""
    vectors = np.asarray(vectors, np.float32)
    norm = np.linalg.norm(vectors, axis=axis, keepdims=True)
    return vectors / np.maximum(norm, np.float32(1e-12))


def distance_from_cosine(cosine: Array, min_squared: float = 0.0) -> Array:
    """Distance of unit vectors from their cosine, ``sqrt(2 - 2 cos)`` (NumPy or torch).

    Args:
        cosine: cosines of unit-vector pairs, any shape.
        min_squared: floor of the squared distance; > 0 keeps the gradient of sqrt finite
            for identical descriptors (training).
    """
    if is_tensor(cosine):
        return (2.0 - 2.0 * cosine.clamp(-1.0, 1.0)).clamp(min=min_squared).sqrt()
    return np.sqrt(np.maximum(2.0 - 2.0 * np.clip(cosine, -1.0, 1.0), min_squared))


def descriptor_distances(desc0: Array, desc1: Array, min_squared: float = 0.0) -> Array:
    """Euclidean distances between unit-norm descriptors, ``sqrt(2 - 2 cos)``.

    Args:
        desc0: (..., N, D) unit-norm descriptors.
        desc1: (..., M, D) unit-norm descriptors.
        min_squared: see :func:`distance_from_cosine`.

    Returns:
        (..., N, M) distances in [0, 2].
    """
    return distance_from_cosine(desc0 @ desc1.swapaxes(-1, -2), min_squared)


def match_descriptors(
    desc0: np.ndarray,
    desc1: np.ndarray,
    mutual: bool = True,
    max_distance: float | None = None,
    ratio: float | None = None,
) -> Matches:
    """Nearest-neighbour matching of (N, D) against (M, D) unit-norm descriptors.

    Args:
        desc0, desc1: descriptors of views 0 and 1 (NumPy; anything ``np.asarray`` takes).
        mutual: keep only pairs that are each other's nearest neighbour.
        max_distance: drop pairs farther apart than this (None: no gate).
        ratio: Lowe's test, keep pairs whose nearest/second-nearest distance ratio is below
            it (None: no test; needs at least 2 candidates in view 1).

    Returns:
        :class:`Matches` ordered by index in view 0.
    """
    desc0 = np.asarray(desc0, np.float32)
    desc1 = np.asarray(desc1, np.float32)
    if desc0.ndim != 2 or desc1.ndim != 2 or desc0.shape[1] != desc1.shape[1]:
        raise ValueError(
            f'descriptor shapes {desc0.shape} and {desc1.shape} are not (N, D) and (M, D)'
        )
    empty = Matches(np.zeros((0, 2), np.int64), np.zeros(0, np.float32))
    if len(desc0) == 0 or len(desc1) == 0:
        return empty
    # Distance is monotonic in the cosine: search on the cosines, take distances of the pairs.
    cosine = desc0 @ desc1.T
    nn01 = cosine.argmax(axis=1)
    best = distance_from_cosine(cosine[np.arange(len(desc0)), nn01])
    keep = np.ones(len(desc0), bool)
    if mutual:
        keep &= cosine.argmax(axis=0)[nn01] == np.arange(len(desc0))
    if max_distance is not None:
        keep &= best <= max_distance
    if ratio is not None:
        if cosine.shape[1] < 2:
            return empty
        second = distance_from_cosine(np.partition(cosine, -2, axis=1)[:, -2])
        keep &= best < ratio * second
    idx0 = np.flatnonzero(keep)
    return Matches(np.stack([idx0, nn01[idx0]], axis=1).astype(np.int64), best[idx0])


def match(
    f0: Features,
    f1: Features,
    mutual: bool = True,
    max_distance: float | None = None,
    ratio: float | None = None,
) -> Matches:
    """Match the descriptors of two :class:`Features` (see :func:`match_descriptors`)."""
    return match_descriptors(f0.descriptors, f1.descriptors, mutual, max_distance, ratio)
