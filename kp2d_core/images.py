"""Images in and out of kp2d: the one decoder, the one file reader and the one array-to-tensor
conversion.

Every encoded image (training photos, evaluation sequences, samples, the node's and the
replay's CompressedImage payloads) is decoded by :func:`decode_image`, which reads the size
from the header (:func:`encoded_size`) and refuses a decompression bomb before any pixel is
decoded. Every user array (API, node, evaluation) becomes network input through
:func:`image_to_array` and :func:`normalize_image`, so validation, colour handling and the
network's input scaling are written once.
"""

from __future__ import annotations

from pathlib import Path
import struct
from typing import TYPE_CHECKING

import cv2
import numpy as np

from kp2d_core.checks import Array, is_tensor
from kp2d_core.config import CELL_SIZE

if TYPE_CHECKING:
    import torch

MIN_IMAGE_SIDE = 3 * CELL_SIZE  # the outer ring of cells is never a keypoint
MAX_DECODE_PIXELS = 64_000_000  # default budget of decode_image (a 64 Mpx frame: ~200 MB)
JPEG_END = b'\xff\xd9'
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # R, G, B (ITU-R BT.601)
JPEG_FILL = 128  # libjpeg's value for the blocks of a corrupt or cut entropy stream
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
IMAGE_MEAN = 0.5
IMAGE_SCALE = 0.225
"""KP2D input normalisation ``(x - 0.5) * 0.225``, the reference implementation's constants (it
multiplies; the first convolution has no bias and feeds BatchNorm, so the scale only has to
agree between training and inference, which :func:`normalize_image` guarantees)."""


class ImageFileError(ValueError):
    """Encoded image data (a file or a message payload) that cannot be decoded completely."""


def encoded_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, height, width) from the header of a JPEG, PNG, PNM, BMP or WebP image.

    Only the header is read, so the size of a decompression bomb is known before decoding.
    None for data that is none of these formats or whose header is cut or malformed.
    """
    try:
        if data[:8] == _PNG_SIGNATURE and data[12:16] == b'IHDR':
            width, height = struct.unpack('>II', data[16:24])
            return 'png', height, width
        if data[:2] == b'\xff\xd8':
            return _jpeg_size(data)
        if data[:2] in (b'P5', b'P6', b'P2', b'P3'):
            fields = data[2:64].split()
            return 'pnm', int(fields[1]), int(fields[0])
        if data[:2] == b'BM':
            width, height = struct.unpack('<ii', data[18:26])
            return 'bmp', abs(height), width
        if data[:4] == b'RIFF' and data[8:12] == b'WEBP':
            return _webp_size(data)
    except (struct.error, ValueError, IndexError):
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[str, int, int] | None:
    """Walk the JPEG markers to the first start-of-frame segment."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack('>H', data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            height, width = struct.unpack('>HH', data[pos + 5 : pos + 9])
            return 'jpeg', height, width
        if marker == 0xDA or length < 2:  # scan data before any frame header
            return None
        pos += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[str, int, int] | None:
    chunk = data[12:16]
    if chunk == b'VP8X':
        width = int.from_bytes(data[24:27], 'little') + 1
        return 'webp', int.from_bytes(data[27:30], 'little') + 1, width
    if chunk == b'VP8L':
        bits = int.from_bytes(data[21:25], 'little')
        return 'webp', ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b'VP8 ':
        width, height = struct.unpack('<HH', data[26:30])
        return 'webp', height & 0x3FFF, width & 0x3FFF
    return None


def decode_image(
    data: bytes,
    max_pixels: int = MAX_DECODE_PIXELS,
    flags: int = cv2.IMREAD_COLOR,
    name: str = 'image',
) -> np.ndarray:
    """Decode an encoded image after checking its header against a pixel budget.

    Args:
        data: the encoded bytes (JPEG, PNG, PNM, BMP or WebP).
        max_pixels: refuse images whose header claims more pixels than this.
        flags: OpenCV imread flags (IMREAD_COLOR: (H, W, 3) uint8 BGR; IMREAD_UNCHANGED keeps
            gray, 16-bit and alpha).
        name: what the data is, for error messages (a path, 'CompressedImage').

    Raises:
        ImageFileError: empty, unknown format, over the budget, truncated or corrupt (a JPEG
            that lacks its end marker, or whose bottom rows are libjpeg's grey fill of a cut
            entropy stream), or OpenCV could not decode it.
        MemoryError: the decoder ran out of memory.
    """
    if not data:
        raise ImageFileError(f'{name}: empty')
    header = encoded_size(data)
    if header is None:
        raise ImageFileError(
            f'{name}: not a JPEG, PNG, PNM, BMP or WebP image, or a broken header'
        )
    kind, height, width = header
    if height <= 0 or width <= 0 or height * width > max_pixels:
        raise ImageFileError(
            f'{name}: its header claims {width}x{height} pixels; the limit is {max_pixels}'
        )
    if kind == 'jpeg' and not data.rstrip(b'\0').endswith(JPEG_END):
        raise ImageFileError(f'{name}: truncated JPEG (no end-of-image marker)')
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:
        if 'memory' in str(exc).lower():
            raise MemoryError(f'{name}: decoding {width}x{height} ran out of memory') from exc
        raise ImageFileError(f'{name}: OpenCV cannot decode it ({exc.err})') from exc
    if image is None or image.size == 0:
        raise ImageFileError(f'{name}: not a decodable {kind} image')
    if kind == 'jpeg' and _grey_filled(image):
        raise ImageFileError(f"{name}: corrupt JPEG (its last rows are the decoder's grey fill)")
    return image


def _grey_filled(image: np.ndarray) -> bool:
    """The last block row (8 rows) is libjpeg's flat grey: the entropy data ended early."""
    tail = image[-CELL_SIZE:]
    return image.shape[0] >= 2 * CELL_SIZE and bool((tail == JPEG_FILL).all())


def read_image(path: str | Path, max_pixels: int = MAX_DECODE_PIXELS) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 BGR (see :func:`decode_image`).

    Raises:
        FileNotFoundError: no such file.
        ImageFileError: the file is empty, too large, truncated, corrupt or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'image not found: {path}')
    return decode_image(path.read_bytes(), max_pixels, cv2.IMREAD_COLOR, str(path))


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


def image_to_array(image: np.ndarray, channel_order: str = 'bgr') -> np.ndarray:
    """Validate a NumPy image and convert it to a (1, C, H, W) float32 RGB array in [0, 1].

    Args:
        image: (H, W) gray, (H, W, 1), (H, W, 3) or (H, W, 4) with alpha (ignored); uint8,
            uint16 (any byte order), or float in [0, 1].
        channel_order: 'bgr' or 'rgb' for 3/4-channel images.

    Returns:
        (1, 3, H, W) or (1, 1, H, W) contiguous float32 array.

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
    array = to_unit_float(image)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    if array.shape[0] == 3 and channel_order == 'bgr':
        array = array[::-1]
    return np.ascontiguousarray(array[None])


def image_to_tensor(image: np.ndarray, channel_order: str = 'bgr') -> torch.Tensor:
    """:func:`image_to_array` as a (1, C, H, W) float32 CPU tensor."""
    import torch

    return torch.from_numpy(image_to_array(image, channel_order))


def to_unit_float(image: np.ndarray) -> np.ndarray:
    """uint8 / uint16 (either byte order) / float [0, 1] array -> float32 in [0, 1] (a copy)."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype.kind == 'u' and image.dtype.itemsize == 2:  # '<u2' or '>u2'
        return image.astype(np.float32) / 65535.0
    if image.dtype.kind == 'f' and image.dtype.itemsize in (2, 4, 8):
        # Checked before the cast: float64 values beyond float32's range would become inf.
        if not np.isfinite(image).all():
            raise ValueError('image contains NaN or infinite values')
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(f'float images must be in [0, 1], got range [{low:.3g}, {high:.3g}]')
        return image.astype(np.float32)
    raise ValueError(f'unsupported image dtype {image.dtype}; use uint8, uint16 or float')


def gray_uint8(image: np.ndarray, channel_order: str = 'bgr') -> np.ndarray:
    """(H, W) uint8 luminance of any image :func:`image_to_array` takes (the input of
    photometric steps: OpenCV's Lucas-Kanade needs 8 bits).

    Raises:
        ValueError: as :func:`image_to_array` does.
    """
    array = image_to_array(image, channel_order)[0]  # (C, H, W) RGB in [0, 1]
    if array.shape[0] == 3:
        red, green, blue = LUMA_WEIGHTS
        luma = red * array[0] + green * array[1] + blue * array[2]
    else:
        luma = array[0]
    return np.clip(np.rint(luma * 255.0), 0, 255).astype(np.uint8)


def normalize_image(image: Array, use_color: bool = True) -> Array:
    """Map [0, 1] RGB images to the network's input space (NumPy arrays or torch tensors).

    Args:
        image: float (B, 3, H, W) or (B, 1, H, W) in [0, 1]. Not modified.
        use_color: keep 3 channels; False averages them into one (gray networks).

    Returns:
        (B, 3, H, W), or (B, 1, H, W) when ``use_color`` is False; float32 for NumPy input.
    """
    if image.ndim != 4 or image.shape[1] not in (1, 3):
        raise ValueError(f'expected images (B, 1|3, H, W), got {tuple(image.shape)}')
    tensor = is_tensor(image)
    if use_color and image.shape[1] == 1:
        image = image.expand(-1, 3, -1, -1) if tensor else np.repeat(image, 3, axis=1)
    elif not use_color and image.shape[1] == 3:
        image = image.mean(dim=1, keepdim=True) if tensor else image.mean(1, keepdims=True)
    normalised = (image - IMAGE_MEAN) * IMAGE_SCALE
    return normalised if tensor else normalised.astype(np.float32, copy=False)
