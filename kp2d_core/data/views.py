"""Planar views: quadrilaterals of a photo, the homographies they define, and their rendering.

A view of a planar scene (a photo) is the quadrilateral of the photo that the view's image
corners see, ordered TL, TR, BR, BL, as a (4, 2) array of (x, y). Views are built by composing
four operations about the quadrilateral's centre -- keystone, scale, rotation, translation --
in whatever frame the caller works in (pixels, or the aspect-corrected frame of training).
Training augmentation (:mod:`kp2d_core.data.homographies`), the bundled samples
(:mod:`kp2d_core.data.samples`) and the dev set (:mod:`kp2d_core.evaluation.devset`) all use them.
"""

from __future__ import annotations

import cv2
import numpy as np

from kp2d_core.geometry.coordinates import image_corners, warp_image

UNIT_SQUARE = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])  # TL, TR, BR, BL


def rectangle(centre: np.ndarray, half_size: np.ndarray) -> np.ndarray:
    """(4, 2) axis-aligned quad with the given centre (x, y) and half-extents (hx, hy)."""
    return UNIT_SQUARE * np.asarray(half_size, np.float64) + np.asarray(centre, np.float64)


def centre_of(quad: np.ndarray) -> np.ndarray:
    return quad.mean(axis=0)


def keystone(quad: np.ndarray, a: float, b: float) -> np.ndarray:
    """Perspective: the left side grows by ``a`` (x half-height) and the right side shrinks by it;
    the top side grows by ``b`` (x half-width) and the bottom shrinks by it. ``a = 0.2`` moves
    every corner by 20 % of the half-extent: a camera turned about the vertical axis."""
    half = np.abs(quad - centre_of(quad)).max(axis=0)
    delta = np.array([[b, a], [-b, -a], [b, a], [-b, -a]]) * half
    return quad + delta


def scale(quad: np.ndarray, factor: float) -> np.ndarray:
    """Zoom about the centre: a factor < 1 sees a smaller part of the photo (zoom in)."""
    centre = centre_of(quad)
    return (quad - centre) * factor + centre


def rotate(quad: np.ndarray, angle: float) -> np.ndarray:
    """Rotate by ``angle`` radians about the centre (camera roll)."""
    centre = centre_of(quad)
    c, s = np.cos(angle), np.sin(angle)
    return (quad - centre) @ np.array([[c, -s], [s, c]]).T + centre


def translate(quad: np.ndarray, shift: np.ndarray) -> np.ndarray:
    return quad + np.asarray(shift, np.float64)


def contains(low: np.ndarray, high: np.ndarray, quad: np.ndarray) -> bool:
    """Whether every corner lies in the closed box [low, high] (x, y)."""
    return bool(((quad >= low) & (quad <= high)).all())


def quad_homography(quad: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """(3, 3) homography from photo pixels to the pixels of the view whose corners see ``quad``.

    The view's corner pixel centres (0, 0), (W-1, 0), (W-1, H-1), (0, H-1) map to the quad's
    corners (pixel centres, same convention as :mod:`kp2d_core.geometry.coordinates`).
    """
    corners = image_corners(*out_hw).astype(np.float32)
    H = cv2.getPerspectiveTransform(np.asarray(quad, np.float32), corners).astype(np.float64)
    return H / H[2, 2]


def render_quad(photo: np.ndarray, quad: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Render the view whose corners see ``quad`` of ``photo``, anti-aliased when shrinking."""
    H = quad_homography(quad, out_hw)
    shrink = np.sqrt(abs(np.linalg.det(H[:2, :2])))
    if shrink < 1.0:
        photo = cv2.GaussianBlur(photo, (0, 0), sigmaX=0.5 / shrink)
    return warp_image(photo, H, out_hw)


def relative_homography(H_photo_to_a: np.ndarray, H_photo_to_b: np.ndarray) -> np.ndarray:
    """``H_a_to_b`` of two views of the same photo, normalised so that H[2, 2] = 1."""
    H = H_photo_to_b @ np.linalg.inv(H_photo_to_a)
    return H / H[2, 2]
