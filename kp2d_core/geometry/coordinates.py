"""Coordinate conventions, map sampling and homography warps: each written once.

Conventions used across kp2d (training, evaluation and the ROS node):

* Images are float tensors ``(B, C, H, W)`` in [0, 1], RGB, before
  :func:`kp2d_core.images.normalize_image`.
* Pixel coordinates are ``(x, y)``, with integer values at pixel *centres*: the first pixel
  covers [-0.5, 0.5] and its centre is 0.
* Normalised coordinates follow ``grid_sample(..., align_corners=False)``: -1 and +1 are the
  outer *edges* of the image, ``x_n = (2 x + 1) / W - 1``. Because this refers to the image
  extent and not to sample centres, the same normalised point addresses the same place in a
  full-resolution image and in any map of it downsampled by an integer factor (H/4, H/8), so
  coarse score/descriptor maps are sampled without the half-cell offset of the reference code.
* A homography ``H_0to1`` maps homogeneous pixel coordinates of view 0 to view 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from kp2d_core.checks import Array, check_shape, is_tensor

if TYPE_CHECKING:
    import torch


def normalize_coords(xy: Array, height: int, width: int) -> Array:
    """Pixel (x, y) to ``align_corners=False`` normalised coordinates in [-1, 1].

    Args:
        xy: (..., 2) pixel coordinates.
        height, width: size of the image the pixels refer to.

    Returns:
        (..., 2) normalised coordinates (x_n, y_n).
    """
    check_shape(xy, '*,2', 'xy')
    return (2.0 * xy + 1.0) / _pair(xy, width, height) - 1.0


def denormalize_coords(xy_n: Array, height: int, width: int) -> Array:
    """Inverse of :func:`normalize_coords`: (..., 2) normalised to pixel (x, y)."""
    return ((xy_n + 1.0) * _pair(xy_n, width, height) - 1.0) / 2.0


def _pair(like: Array, first: float, second: float) -> Array:
    """(2,) [first, second] of the kind (and device, dtype) of ``like``."""
    return like.new_tensor([first, second]) if is_tensor(like) else np.array([first, second])


def sample_map(feature_map: Array, xy: Array, height: int, width: int) -> Array:
    """Bilinearly sample a dense map at pixel keypoints of the full-resolution image.

    The same sampling (``grid_sample``, ``align_corners=False``, border padding) for torch
    tensors (training, differentiable) and NumPy arrays (inference without torch).

    Args:
        feature_map: (B, C, h, w) map covering an image of size (height, width) at any
            integer stride (h = height / s); NumPy maps of integers are sampled as float32.
        xy: (B, N, 2) pixel coordinates in the full-resolution image.
        height, width: full-resolution image size.

    Returns:
        (B, N, C) sampled values (border values are replicated outside the image).
    """
    batch = check_shape(feature_map, 'B,C,h,w', 'feature_map')['B']
    if check_shape(xy, 'B,N,2', 'xy')['B'] != batch:
        raise ValueError(
            f'xy {tuple(xy.shape)} and feature_map {tuple(feature_map.shape)} differ in B'
        )
    if not is_tensor(feature_map):
        return _sample_map_numpy(feature_map, xy, height, width)
    import torch.nn.functional as F

    grid = normalize_coords(xy, height, width).unsqueeze(1).to(feature_map.dtype)
    sampled = F.grid_sample(
        feature_map, grid, mode='bilinear', padding_mode='border', align_corners=False
    )
    return sampled.squeeze(2).transpose(1, 2)


def map_coordinates(
    xy: np.ndarray, map_hw: tuple[int, int], image_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(..., 2) image pixels -> x and y (...) in a map covering the image at a stride, as
    :func:`sample_map` samples it: x' = (x + 0.5) * w / W - 0.5, clamped to the map."""
    (h, w), (height, width) = map_hw, image_hw
    mx = np.clip((xy[..., 0] + 0.5) * (w / width) - 0.5, 0.0, w - 1.0)
    my = np.clip((xy[..., 1] + 0.5) * (h / height) - 0.5, 0.0, h - 1.0)
    return mx, my


def _sample_map_numpy(
    feature_map: np.ndarray, xy: np.ndarray, height: int, width: int
) -> np.ndarray:
    """:func:`sample_map` on NumPy: (B, C, h, w) map, (B, N, 2) pixels -> (B, N, C).

    The four corners of every point are gathered in one pass over the flattened map's
    channel rows (contiguous reads; a gather of (h, w, C) pixels strides across channels)."""
    channels, (h, w) = feature_map.shape[1], feature_map.shape[-2:]
    floating = np.issubdtype(feature_map.dtype, np.floating)
    dtype = feature_map.dtype if floating else np.dtype(np.float32)
    mx, my = map_coordinates(xy, (h, w), (height, width))
    x0 = np.minimum(np.floor(mx).astype(np.intp), max(w - 2, 0))
    y0 = np.minimum(np.floor(my).astype(np.intp), max(h - 2, 0))
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    ax, ay = (mx - x0).astype(dtype), (my - y0).astype(dtype)
    corners = np.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], axis=1)  # (B,4,N)
    weights = np.stack([(1 - ax) * (1 - ay), ax * (1 - ay), (1 - ax) * ay, ax * ay], axis=1)
    out = np.empty((feature_map.shape[0], xy.shape[1], channels), dtype)
    for b in range(feature_map.shape[0]):
        flat = feature_map[b].reshape(channels, h * w)
        gathered = np.take(flat, corners[b].ravel(), axis=1).reshape(channels, 4, -1)
        out[b] = np.einsum('ckn,kn->nc', gathered, weights[b])
    return out


def warp_points(H: Array, xy: Array) -> Array:
    """Apply homographies to points; works on NumPy arrays and torch tensors alike.

    Args:
        H: (3, 3) or (B, 3, 3) homography mapping view 0 pixels to view 1 pixels.
        xy: (N, 2) or (B, N, 2) pixel coordinates in view 0.

    Returns:
        (N, 2) or (B, N, 2) coordinates in view 1 (points at infinity come out non-finite).
    """
    check_shape(H, '*,3,3', 'H')
    check_shape(xy, '*,2', 'xy')
    proj = xy @ H[..., :2, :2].swapaxes(-1, -2) + H[..., None, :2, 2]
    w = xy @ H[..., 2:3, :2].swapaxes(-1, -2) + H[..., None, 2:3, 2]
    return proj / w


def scale_homography(
    H: np.ndarray,
    size0: tuple[int, int],
    new_size0: tuple[int, int],
    size1: tuple[int, int],
    new_size1: tuple[int, int],
) -> np.ndarray:
    """Adapt ``H_0to1`` to resized images: ``S1 @ H @ inv(S0)``.

    Sizes are (H, W). The scaling is about pixel edges (pixel centres move by the
    half-pixel rule ``x' = (x + 0.5) * s - 0.5``), matching :func:`resize_points`.
    """
    check_shape(H, '3,3', 'H')
    return resize_matrix(size1, new_size1) @ H @ np.linalg.inv(resize_matrix(size0, new_size0))


def resize_matrix(size: tuple[int, int], new_size: tuple[int, int]) -> np.ndarray:
    """(3, 3) affine map of pixel centres from an image of ``size`` to ``new_size`` (H, W)."""
    sy = new_size[0] / size[0]
    sx = new_size[1] / size[1]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def resize_points(xy: Array, size: tuple[int, int], new_size: tuple[int, int]) -> Array:
    """Map (..., 2) pixel coordinates between two sizes (H, W) of the same image."""
    return (xy + 0.5) * _pair(xy, new_size[1] / size[1], new_size[0] / size[0]) - 0.5


def warp_image(image: np.ndarray, H: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Render view 1 from view 0 given ``H_0to1``: out[p] = image[inv(H) p] (bilinear).

    Args:
        image: (H0, W0[, C]) array of view 0.
        H: (3, 3) homography from view 0 pixels to view 1 pixels.
        out_size: (H1, W1) of the rendered view 1.

    Returns:
        (H1, W1[, C]) array with the dtype of ``image``; pixels that come from outside view 0
        are 0.
    """
    return cv2.warpPerspective(
        image,
        np.asarray(H, dtype=np.float64),
        (int(out_size[1]), int(out_size[0])),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def image_corners(height: int, width: int) -> np.ndarray:
    """(4, 2) pixel corners (0,0), (W-1,0), (W-1,H-1), (0,H-1) of an image."""
    return np.array(
        [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float64
    )


def corner_error(H_est: np.ndarray, H_true: np.ndarray, height: int, width: int) -> float:
    """Mean distance (px) between the image corners warped by ``H_est`` and by ``H_true``."""
    check_shape(H_est, '3,3', 'H_est')
    check_shape(H_true, '3,3', 'H_true')
    corners = image_corners(height, width)
    diff = warp_points(np.asarray(H_est, np.float64), corners) - warp_points(
        np.asarray(H_true, np.float64), corners
    )
    return float(np.linalg.norm(diff, axis=1).mean())


def in_image(xy: Array, height: int, width: int, half_open: bool = False) -> Array:
    """(...,) mask of the points (..., 2) that lie in an image of ``height`` x ``width``.

    The convention of the whole package: a point is in the image when it lies in the closed
    hull of the pixel centres, [0, W-1] x [0, H-1], where every value can be interpolated
    without extrapolation. ``half_open=True`` is the one documented exception, the KP2D
    evaluation protocol's shared-view test 0 <= x < W, 0 <= y < H, kept so that protocol
    numbers match the reference implementation's. NaN points are never in the image.
    """
    x, y = xy[..., 0], xy[..., 1]
    if half_open:
        return (x >= 0) & (x < width) & (y >= 0) & (y < height)
    return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


def interior_cells(hc: int, wc: int, device: torch.device | str = 'cpu') -> torch.Tensor:
    """(Hc, Wc) bool mask of the detection cells that can hold a keypoint.

    The outermost ring of cells is excluded (its score is zeroed by the network, as in the
    reference), because its receptive field is mostly padding.
    """
    import torch

    mask = torch.zeros(hc, wc, dtype=torch.bool, device=device)
    mask[1:-1, 1:-1] = True
    return mask
