"""Images in and out of kp2d: the one file reader and the one array-to-tensor conversion.

Every image file (training photos, evaluation sequences, samples) is read by :func:`read_image`
and every user array (API, node, evaluation) becomes network input through
:func:`image_to_tensor`, so validation and colour handling are written once.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from kp2d_core.config import CELL_SIZE

MIN_IMAGE_SIDE = 3 * CELL_SIZE  # the outer ring of cells is never a keypoint
JPEG_SUFFIXES = ('.jpg', '.jpeg')
JPEG_END = b'\xff\xd9'


class ImageFileError(ValueError):
    """An image file exists but cannot be decoded completely."""


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 BGR.

    A JPEG must end with its end-of-image marker: OpenCV silently returns a half-grey image for
    a truncated file, which must not reach training or evaluation.

    Raises:
        FileNotFoundError: no such file.
        ImageFileError: the file is empty, truncated or not a decodable image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'image not found: {path}')
    data = path.read_bytes()
    if path.suffix.lower() in JPEG_SUFFIXES and not data.rstrip(b'\0').endswith(JPEG_END):
        raise ImageFileError(f'{path}: truncated JPEG (no end-of-image marker)')
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None or image.size == 0:
        raise ImageFileError(f'{path}: not a decodable image')
    return image


def cover_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale ``image`` to cover ``size`` (H, W), keeping its aspect, then centre-crop to it."""
    height, width = size
    factor = max(height / image.shape[0], width / image.shape[1])
    new_hw = (
        max(height, round(image.shape[0] * factor)),
        max(width, round(image.shape[1] * factor)),
    )
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    image = cv2.resize(image, (new_hw[1], new_hw[0]), interpolation=interp)
    top, left = (new_hw[0] - height) // 2, (new_hw[1] - width) // 2
    return image[top : top + height, left : left + width]


def image_to_tensor(image: np.ndarray, channel_order: str = 'bgr') -> torch.Tensor:
    """Validate a NumPy image and convert it to a (1, C, H, W) float RGB tensor in [0, 1].

    Args:
        image: (H, W) gray, (H, W, 1), (H, W, 3) or (H, W, 4) with alpha (ignored); uint8,
            uint16 (any byte order), or float in [0, 1].
        channel_order: 'bgr' or 'rgb' for 3/4-channel images.

    Returns:
        (1, 3, H, W) or (1, 1, H, W) float32 tensor (CPU).

    Raises:
        ValueError: for anything else (empty, too small, wrong dtype, NaN, out of range).
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f'expected a NumPy image, got {type(image).__name__}')
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        image = image[..., :3] if image.shape[2] == 4 else image
    elif image.ndim != 2:
        raise ValueError(f'expected an image (H, W) or (H, W, 1|3|4), got shape {image.shape}')
    if image.size == 0:
        raise ValueError(f'empty image of shape {image.shape}')
    if min(image.shape[:2]) < MIN_IMAGE_SIDE:
        raise ValueError(
            f'image {image.shape[0]}x{image.shape[1]} is too small; both sides '
            f'must be at least {MIN_IMAGE_SIDE} px'
        )
    tensor = torch.from_numpy(to_unit_float(image))
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    if tensor.shape[0] == 3 and channel_order == 'bgr':
        tensor = tensor.flip(0)
    return tensor.unsqueeze(0).contiguous()


def to_unit_float(image: np.ndarray) -> np.ndarray:
    """uint8 / uint16 (either byte order) / float [0, 1] array -> float32 in [0, 1] (a copy)."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype.kind == 'u' and image.dtype.itemsize == 2:  # '<u2' or '>u2'
        return image.astype(np.float32) / 65535.0
    if image.dtype.kind == 'f' and image.dtype.itemsize in (2, 4, 8):
        image = image.astype(np.float32)
        if not np.isfinite(image).all():
            raise ValueError('image contains NaN or infinite values')
        if image.min() < 0.0 or image.max() > 1.0:
            raise ValueError(
                f'float images must be in [0, 1], got range [{image.min():.3g}, {image.max():.3g}]'
            )
        return image
    raise ValueError(f'unsupported image dtype {image.dtype}; use uint8, uint16 or float')
