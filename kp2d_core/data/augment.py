"""Non-spatial (photometric) augmentation, applied to each view independently (paper 4.2).

Works on (H, W, 3) float32 RGB arrays in [0, 1] and draws every random number from the
``np.random.Generator`` it is given. Unlike the reference code, the colour jitter is really
applied (its ColorJitter was a silent no-op).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kp2d_core.images import LUMA_WEIGHTS


@dataclass(frozen=True)
class AugmentConfig:
    """Photometric augmentation ranges (defaults from the paper)."""

    enabled: bool = True
    noise_std: float = 0.02  # Gaussian pixel noise, intensities in [0, 1]
    noise_prob: float = 0.5
    blur_kernels: tuple[int, ...] = (1, 3, 5)  # odd Gaussian kernel sizes; 1 = no blur
    brightness: tuple[float, float] = (0.5, 1.5)  # multiplicative factor
    contrast: tuple[float, float] = (0.5, 1.5)  # blend factor with the mean gray level
    saturation: tuple[float, float] = (0.8, 1.2)  # blend factor with the gray image
    hue: tuple[float, float] = (-0.2, 0.2)  # shift as a fraction of the hue circle
    channel_shuffle_prob: float = 0.5
    gray_prob: float = 0.5

    def __post_init__(self) -> None:
        if any(k < 1 or k % 2 == 0 for k in self.blur_kernels):
            raise ValueError(f'blur_kernels must be odd and >= 1, got {self.blur_kernels}')
        for name in ('brightness', 'contrast', 'saturation', 'hue'):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f'{name} range is empty: {(low, high)}')


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W, 1) luma (:data:`~kp2d_core.images.LUMA_WEIGHTS`)."""
    return (image @ LUMA_WEIGHTS)[..., None]


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
    return image * factor


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    mean = float(to_gray(image).mean())
    return (image - mean) * factor + mean


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
    gray = to_gray(image)
    return (image - gray) * factor + gray


def adjust_hue(image: np.ndarray, shift: float) -> np.ndarray:
    """Rotate hue by ``shift`` of a full turn (OpenCV float HSV has hue in degrees)."""
    hsv = cv2.cvtColor(np.clip(image, 0.0, 1.0).astype(np.float32), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + 360.0 * shift) % 360.0
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def color_jitter(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation and hue, in a random order, clipped to [0, 1]."""
    ops = [
        (adjust_brightness, cfg.brightness),
        (adjust_contrast, cfg.contrast),
        (adjust_saturation, cfg.saturation),
        (adjust_hue, cfg.hue),
    ]
    for index in rng.permutation(len(ops)):
        op, (low, high) = ops[index]
        image = np.clip(op(image, float(rng.uniform(low, high))), 0.0, 1.0)
    return image


def augment(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One random photometric augmentation of an (H, W, 3) float32 RGB image in [0, 1].

    Returns a new (H, W, 3) float32 array in [0, 1]; the input is not modified.
    """
    if not cfg.enabled:
        return image.copy()
    out = color_jitter(image.astype(np.float32), cfg, rng)
    if rng.random() < cfg.channel_shuffle_prob:
        out = out[..., rng.permutation(3)]
    if rng.random() < cfg.gray_prob:
        out = np.repeat(to_gray(out), 3, axis=2)
    kernel = int(rng.choice(cfg.blur_kernels))
    if kernel > 1:
        out = cv2.GaussianBlur(out, (kernel, kernel), 0)
    if rng.random() < cfg.noise_prob:
        out = out + rng.normal(0.0, cfg.noise_std, size=out.shape).astype(np.float32)
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)
