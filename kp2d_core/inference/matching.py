"""Descriptor distances and matching: mutual nearest neighbours with distance and ratio gates.

A low-level module on NumPy (torch only for the training losses' distances, imported by the
caller), so the losses use the same descriptor distance as inference without reaching the
inference front-end, and inference runs without PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kp2d_core.geometry.correspondences import Matches
from kp2d_core.model.descriptors import distance_from_cosine

if TYPE_CHECKING:
    from kp2d_core.inference.features import Features


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
