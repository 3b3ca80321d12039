"""Bundled sample photo and synthetic views of it with exactly known homographies.

The photo is ``coffee`` from scikit-image's data (CC0, Rachel Michetti). A "view" is what a
pinhole camera looking at the (planar) photo sees: a quadrilateral of the photo rendered to
the view size, so the homography between any two views is known exactly. The demo, the tests
and the benchmarks use these instead of downloaded data.
"""

from __future__ import annotations

import cv2
import numpy as np

from kp2d_core.data import views
from kp2d_core.geometry.camera import CameraModel
from kp2d_core.geometry.coordinates import warp_points
from kp2d_core.images import read_image
from kp2d_core.inference.probe import sample_photo_path


def view_quad(photo_hw: tuple[int, int], t: float) -> np.ndarray:
    """(4, 2) photo-pixel corners (TL, TR, BR, BL) seen by the camera at motion phase ``t``.

    The camera drifts, zooms, rolls and tilts smoothly with ``t`` in [0, 1]; the quadrilateral
    always stays inside the photo.
    """
    height, width = photo_hw
    phase = 2.0 * np.pi * t
    centre = [width * (0.5 + 0.06 * np.sin(phase)), height * (0.5 + 0.05 * np.sin(2 * phase))]
    half = 0.5 * (0.72 + 0.06 * np.cos(phase)) * np.array([width, height])
    quad = views.keystone(views.rectangle(centre, half), 0.04 * np.sin(phase + 1.0), 0.0)
    quad = views.rotate(quad, 0.12 * np.sin(phase))
    return np.clip(quad, 0.0, [width - 1.0, height - 1.0])


def view_homography(photo_hw: tuple[int, int], out_hw: tuple[int, int], t: float) -> np.ndarray:
    """(3, 3) homography from photo pixels to the pixels of the view at phase ``t``."""
    return views.quad_homography(view_quad(photo_hw, t), out_hw)


def render_view(
    photo: np.ndarray, out_hw: tuple[int, int], t: float
) -> tuple[np.ndarray, np.ndarray]:
    """Render the view at phase ``t``: returns (image (H, W, C) uint8, H_photo_to_view (3, 3))."""
    quad = view_quad(photo.shape[:2], t)
    return views.render_quad(photo, quad, out_hw), views.quad_homography(quad, out_hw)


def synthetic_sequence(
    num_frames: int, out_hw: tuple[int, int] = (480, 640), photo: np.ndarray | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A short camera sweep over a planar photo (the bundled one by default).

    Args:
        num_frames: number of frames (>= 2).
        out_hw: (H, W) of every frame.
        photo: (Hp, Wp, 3) uint8 BGR photo; None uses :func:`sample_photo_path`.

    Returns:
        frames: list of (H, W, 3) uint8 BGR images.
        H_0to_k: list of (3, 3) homographies mapping frame 0 pixels to frame k pixels.
    """
    if num_frames < 2:
        raise ValueError(f'num_frames must be >= 2, got {num_frames}')
    photo = read_image(sample_photo_path()) if photo is None else photo
    frames, to_view = [], []
    for t in np.linspace(0.0, 1.0, num_frames, endpoint=False):
        frame, H = render_view(photo, out_hw, float(t))
        frames.append(frame)
        to_view.append(H)
    return frames, [views.relative_homography(to_view[0], H) for H in to_view]


def synthetic_pair(
    out_hw: tuple[int, int] = (480, 640), t0: float = 0.0, t1: float = 0.15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two views of the bundled photo: (image0, image1, H_0to1)."""
    photo = read_image(sample_photo_path())
    image0, H0 = render_view(photo, out_hw, t0)
    image1, H1 = render_view(photo, out_hw, t1)
    return image0, image1, views.relative_homography(H0, H1)


def lens_grid(camera: CameraModel, out_hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 2) float32: the rectified pixel (``camera.P``) each raw pixel sees."""
    height, width = out_hw
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    raw = np.stack([xs.ravel(), ys.ravel()], axis=1)
    return camera.rectify(raw).reshape(height, width, 2).astype(np.float32)


def render_through_lens(
    photo: np.ndarray, H_photo_to_rect: np.ndarray, grid: np.ndarray
) -> np.ndarray:
    """The raw (distorted) image of a planar photo.

    Args:
        photo: (Hp, Wp[, C]) image of the plane.
        H_photo_to_rect: (3, 3) homography from photo pixels to the rectified view's pixels.
        grid: (H, W, 2) from :func:`lens_grid` for the camera.

    Returns:
        (H, W[, C]) image; pixels that see outside the photo are 0.
    """
    height, width = grid.shape[:2]
    src = warp_points(np.linalg.inv(H_photo_to_rect), grid.reshape(-1, 2).astype(np.float64))
    maps = src.reshape(height, width, 2).astype(np.float32)
    shrink = np.sqrt(abs(np.linalg.det(H_photo_to_rect[:2, :2]))) / max(
        H_photo_to_rect[2, 2], 1e-9
    )
    if shrink < 1.0:
        photo = cv2.GaussianBlur(photo, (0, 0), sigmaX=0.5 / shrink)
    return cv2.remap(photo, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR, borderValue=0)
