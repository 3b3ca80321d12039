"""The bundled sample photo and the probe image every exported model is checked on."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from kp2d_core.images import image_to_array, normalize_image, read_image

SAMPLE_PHOTO = 'coffee.jpg'


def sample_photo_path() -> Path:
    """Path of the bundled sample photo (400x600 JPEG)."""
    return Path(str(resources.files('kp2d_core').joinpath('assets', SAMPLE_PHOTO)))


def probe_image(hw: tuple[int, int], use_color: bool = True) -> np.ndarray:
    """The sample photo resized to ``hw``, normalised: (1, 3|1, H, W) float32 network input."""
    image = cv2.resize(read_image(sample_photo_path()), hw[::-1], interpolation=cv2.INTER_AREA)
    return normalize_image(image_to_array(image), use_color)
