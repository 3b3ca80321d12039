"""Random homography adaptation (paper Sec. 4.2): crop, perspective, scale, rotation, shift.

The sampled quadrilateral is the part of the *target* image that the *source* view shows, so
every source pixel sees target content (no empty borders). Sampling happens in an
aspect-corrected frame (x in [-1, 1], y in [-H/W, H/W]) so that rotations are rigid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from kp2d_core.data import views
from kp2d_core.geometry.coordinates import image_corners


@dataclass(frozen=True)
class HomographyConfig:
    """Ranges of the random homography adaptation (defaults from the paper)."""

    patch_ratio: float = 0.7  # side of the crop relative to the image
    scale_range: tuple[float, float] = (0.8, 1.2)  # zoom about the crop centre
    max_angle: float = float(np.pi / 4)  # rotation drawn uniformly in [-max_angle, max_angle]
    perspective: float = 0.2  # keystone amount: one side shrinks, the opposite grows by it
    max_tries: int = 50  # rejection-sampling attempts per transform before it is skipped
    # 'reject': redraw a transform that leaves the image (large rotations become rare: 10 % of
    # draws above 30 deg at 144x192); 'shrink': keep every draw, zoom in until the view fits.
    fit: Literal['reject', 'shrink'] = 'reject'

    def __post_init__(self) -> None:
        if not 0.1 <= self.patch_ratio <= 1.0:
            raise ValueError(f'patch_ratio must be in [0.1, 1], got {self.patch_ratio}')
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f'scale_range must satisfy 0 < low <= high, got {self.scale_range}')
        if self.max_angle < 0 or not 0 <= self.perspective < 1:
            raise ValueError('max_angle must be >= 0 and perspective in [0, 1)')
        if self.fit not in ('reject', 'shrink'):
            raise ValueError(f"fit must be 'reject' or 'shrink', got {self.fit!r}")


def _try_transform(quad, bounds, rng, draw, apply, tries) -> np.ndarray:
    """Apply the first random transform (from ``draw``) that keeps the quad in ``bounds``."""
    for _ in range(tries):
        candidate = apply(quad, draw(rng))
        if views.contains(*bounds, candidate):
            return candidate
    return quad


def _translate_inside(quad: np.ndarray, bounds, rng: np.random.Generator) -> np.ndarray:
    """Shift uniformly within the room left on each side of the frame."""
    low, high = bounds[0] - quad.min(axis=0), bounds[1] - quad.max(axis=0)
    return views.translate(quad, rng.uniform(np.minimum(low, 0.0), np.maximum(high, 0.0)))


def sample_quad(aspect: float, cfg: HomographyConfig, rng: np.random.Generator) -> np.ndarray:
    """(4, 2) corners (TL, TR, BR, BL) in the aspect-corrected frame, inside the image."""
    bounds = (np.array([-1.0, -aspect]), np.array([1.0, aspect]))
    quad = views.rectangle((0.0, 0.0), (cfg.patch_ratio, cfg.patch_ratio * aspect))
    p, tries, angle = cfg.perspective, cfg.max_tries, cfg.max_angle
    if cfg.fit == 'shrink':
        quad = views.keystone(quad, *rng.uniform(-p, p, 2))
        quad = views.rotate(quad, rng.uniform(-angle, angle))
        quad = views.scale(quad, rng.uniform(*cfg.scale_range))
        overflow = np.abs(quad / bounds[1]).max()  # the quad is centred at the origin
        if overflow > 1.0:
            quad = views.scale(quad, 1.0 / overflow)
        return _translate_inside(quad, bounds, rng)
    steps = (
        (lambda r: r.uniform(-p, p, 2), lambda q, ab: views.keystone(q, *ab)),
        (lambda r: r.uniform(*cfg.scale_range), views.scale),
        (lambda r: r.uniform(-angle, angle), views.rotate),
    )
    for draw, apply in steps:
        quad = _try_transform(quad, bounds, rng, draw, apply, tries)
    return _translate_inside(quad, bounds, rng)


def sample_homography(
    size: tuple[int, int], cfg: HomographyConfig, rng: np.random.Generator
) -> np.ndarray:
    """Random ``H_source_to_target`` for images of ``size`` (H, W), in pixel coordinates.

    The source image is the target seen through the sampled quadrilateral:
    ``source[p] = target[H p]``, so ``H`` maps source keypoints onto target content.

    Returns:
        (3, 3) float64 homography with H[2, 2] = 1.
    """
    height, width = size
    aspect = height / width
    quad = sample_quad(aspect, cfg, rng)
    # Aspect-corrected frame -> pixels: x in [-1, 1] spans the image edges [-0.5, W - 0.5].
    quad_px = (quad / [1.0, aspect] + 1.0) * 0.5 * [width, height] - 0.5
    corners = image_corners(height, width)[[0, 1, 2, 3]]
    H = cv2.getPerspectiveTransform(corners.astype(np.float32), quad_px.astype(np.float32))
    return H / H[2, 2]
