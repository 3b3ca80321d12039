"""Sub-pixel refinement of matched keypoints on the dense descriptor map.

A keypoint of the current image matched to a keypoint of another image is moved to where the
current image's dense descriptors agree best with its partner's descriptor: the soft-argmax
of their cosine over a grid of sub-pixel offsets within ``radius`` pixels of the network
input. Matched keypoints of the bundled model lie 0.8-1.0 px from their partner's true
position on this project's planar sequences; refined, 0.45-0.75 px (docs/node.md).

The descriptor map is sampled bilinearly (as :func:`kp2d_core.geometry.coordinates.sample_map`
samples it), and the cosine at every offset is computed exactly from a 3x3-cell window per point: a
bilinear sample is a weighted sum of the window's descriptors, so its dot product with the partner
and its norm come from the window's dot products and Gram matrix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kp2d_core.geometry.coordinates import map_coordinates
from kp2d_core.geometry.image_points import ImagePoints
from kp2d_core.inference.features import DescriptorMap

if TYPE_CHECKING:
    from kp2d_core.inference.features import Features

__all__ = ['refine_matches', 'refined_points']

RADIUS_PX = 2.0  # search radius in network-input pixels (half a descriptor cell)
STEP_PX = 0.25
TEMPERATURE = 0.02  # of the cosine soft-argmax
WINDOW = 3  # descriptor cells per side around each point (covers 2 * RADIUS_PX / stride + 1)


def refine_matches(
    reference: np.ndarray,
    dense: DescriptorMap,
    xy: np.ndarray,
    radius_px: float = RADIUS_PX,
    temperature: float = TEMPERATURE,
) -> np.ndarray:
    """Move each point to where ``dense`` best agrees with its partner's descriptor.

    Args:
        reference: (M, D) unit descriptors of the partners (the other image's keypoints).
        dense: the current image's descriptor map.
        xy: (M, 2) the matched keypoints of the current image, input pixels.
        radius_px: search radius in network-input pixels (at most half a cell, 2 px).
        temperature: of the soft-argmax over the cosines.

    Returns:
        (M, 2) float32 refined points, input pixels, within the image (``xy`` where M is 0).
    """
    xy = np.asarray(xy, np.float32)
    if len(xy) == 0:
        return xy.copy()
    if not 0.0 < radius_px <= dense.stride / 2:
        raise ValueError(f'radius_px must be in (0, {dense.stride / 2}], got {radius_px}')
    steps = np.arange(-radius_px, radius_px + 1e-9, STEP_PX)
    grid = np.stack(np.meshgrid(steps, steps), -1).reshape(-1, 2).astype(np.float32)  # (G, 2)
    net = dense.to_network(xy).astype(np.float32)
    cells, weights = _window_weights(net[:, None, :] + grid[None], dense)
    window = _window_descriptors(dense, cells)  # (M, K, D)
    dots = np.einsum('mkd,md->mk', window, np.asarray(reference, np.float32))
    gram = window @ window.transpose(0, 2, 1)
    numerator = (weights @ dots[:, :, None])[..., 0]
    squared = ((weights @ gram) * weights).sum(axis=-1)
    cosine = numerator / np.sqrt(np.maximum(squared, 1e-12))
    soft = np.exp((cosine - cosine.max(axis=1, keepdims=True)) / temperature)
    soft /= soft.sum(axis=1, keepdims=True)
    refined = dense.to_input(net + soft @ grid)
    height, width = dense.input_hw
    return np.clip(refined, 0.0, [width - 1.0, height - 1.0]).astype(np.float32)


def refined_points(
    points: ImagePoints,
    reference: Features,
    features: Features,
    idx_ref: np.ndarray,
    idx_cur: np.ndarray,
) -> ImagePoints:
    """``points`` (of ``features``, which carry their dense map) with the matched ones,
    ``idx_cur``, refined toward their partners ``idx_ref`` in ``reference``
    (:func:`refine_matches`); the others are unchanged."""
    raw = points.raw.copy()
    raw[idx_cur] = refine_matches(
        reference.descriptors[idx_ref], features.dense, features.keypoints[idx_cur]
    )
    return ImagePoints.of(raw, points.camera)


def _window_weights(points: np.ndarray, dense: DescriptorMap) -> tuple[np.ndarray, np.ndarray]:
    """Each point's window and the bilinear weights of its grid samples over it.

    Args:
        points: (M, G, 2) network-input pixels, the grid around each point.

    Returns:
        (M, 2) top-left cell (x, y) of each point's window, (M, G, K) weights, K = WINDOW^2.
    """
    h, w = dense.grid_hw
    mx, my = map_coordinates(points, (h, w), dense.network_hw)
    corner = np.stack(
        [
            np.clip(np.floor(mx.min(axis=1)), 0, max(w - WINDOW, 0)),
            np.clip(np.floor(my.min(axis=1)), 0, max(h - WINDOW, 0)),
        ],
        -1,
    ).astype(np.intp)
    # Bilinear weights are hat functions of the distance to each cell of the window.
    cells = np.arange(WINDOW, dtype=np.float32)
    origin = corner.astype(np.float32)
    wx = np.maximum(0.0, 1.0 - np.abs((mx - origin[:, :1])[..., None] - cells))  # (M, G, 3)
    wy = np.maximum(0.0, 1.0 - np.abs((my - origin[:, 1:])[..., None] - cells))
    weights = (wy[..., :, None] * wx[..., None, :]).reshape(*points.shape[:2], -1)
    return corner, weights


def _window_descriptors(dense: DescriptorMap, corner: np.ndarray) -> np.ndarray:
    """(M, 2) top-left cells -> (M, K, D) float32 window descriptors."""
    offsets = np.arange(WINDOW)
    ys = np.broadcast_to(
        (corner[:, 1:2] + offsets[None, :])[:, :, None], (len(corner), WINDOW, WINDOW)
    )
    xs = np.broadcast_to((corner[:, 0:1] + offsets[None, :])[:, None, :], ys.shape)
    window = dense.at_cells(ys, xs)  # (M, W, W, D)
    return np.ascontiguousarray(window.reshape(len(corner), WINDOW * WINDOW, -1))
