"""Descriptor arithmetic shared by training and inference: unit vectors and their distances
(NumPy, or torch tensors in the losses)."""

from __future__ import annotations

import numpy as np

from kp2d_core.checks import Array, is_tensor


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
