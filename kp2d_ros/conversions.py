"""sensor_msgs/Image <-> NumPy without cv_bridge (pure NumPy, testable without ROS).

PyPI's ``cv-bridge`` is a ROS 1 port that breaks on recent NumPy/OpenCV, and ROS 2's
``cv_bridge`` is only present where ROS is installed from apt, so the node uses these.
They honour ``step`` (row padding), ``is_bigendian`` and the common encodings, and reject
anything inconsistent with a :class:`ImageError` instead of guessing.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class ImageError(ValueError):
    """An Image message that cannot be turned into an array (encoding, size, step, data)."""


class Encoding(NamedTuple):
    dtype: str  # NumPy base type, endianness applied separately
    channels: int
    order: str  # 'gray', 'bgr', 'rgb', 'bgra' or 'rgba'


ENCODINGS: dict[str, Encoding] = {
    'mono8': Encoding('u1', 1, 'gray'),
    '8UC1': Encoding('u1', 1, 'gray'),
    'mono16': Encoding('u2', 1, 'gray'),
    '16UC1': Encoding('u2', 1, 'gray'),
    '32FC1': Encoding('f4', 1, 'gray'),
    'bgr8': Encoding('u1', 3, 'bgr'),
    '8UC3': Encoding('u1', 3, 'bgr'),
    'rgb8': Encoding('u1', 3, 'rgb'),
    'bgra8': Encoding('u1', 4, 'bgra'),
    'rgba8': Encoding('u1', 4, 'rgba'),
    'bgr16': Encoding('u2', 3, 'bgr'),
    'rgb16': Encoding('u2', 3, 'rgb'),
}
MAX_PIXELS = 8192 * 8192


def image_msg_to_array(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` (or any object with its fields) to a BGR/gray array.

    Returns:
        (H, W) for single-channel encodings, else (H, W, 3) in BGR order (alpha dropped);
        dtype uint8, uint16 or float32 (native byte order). The array owns its memory.

    Raises:
        ImageError: unsupported encoding, zero or huge size, ``step`` smaller than a row,
            or ``data`` of the wrong length.
    """
    enc = ENCODINGS.get(msg.encoding)
    if enc is None:
        raise ImageError(f'unsupported encoding {msg.encoding!r}; supported: {sorted(ENCODINGS)}')
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageError(f'empty image {height}x{width}')
    if height * width > MAX_PIXELS:
        raise ImageError(f'image {height}x{width} exceeds the {MAX_PIXELS}-pixel limit')
    dtype = np.dtype(enc.dtype).newbyteorder('>' if msg.is_bigendian else '<')
    row_bytes = width * enc.channels * dtype.itemsize
    if step < row_bytes:
        raise ImageError(f'step {step} is smaller than one row ({row_bytes} bytes)')
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if data.size != step * height:
        raise ImageError(f'data has {data.size} bytes, expected step*height = {step * height}')
    rows = data.reshape(height, step)[:, :row_bytes]
    array = np.ascontiguousarray(rows).view(dtype).reshape(height, width, enc.channels)
    array = array.astype(dtype.newbyteorder('='), copy=False)
    return _to_bgr(array, enc.order)


def _to_bgr(array: np.ndarray, order: str) -> np.ndarray:
    """A writable, contiguous copy in BGR (or single-channel) order."""
    if order == 'gray':
        return array[..., 0].copy()
    if order in ('rgb', 'rgba'):
        return array[..., 2::-1].copy()
    return array[..., :3].copy()


def array_to_image_fields(array: np.ndarray) -> dict[str, Any]:
    """Fields of a ``sensor_msgs/Image`` for a (H, W) mono8 or (H, W, 3) bgr8 uint8 array."""
    if (
        array.dtype != np.uint8
        or array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[2] != 3)
    ):
        raise ImageError(f'expected uint8 (H, W) or (H, W, 3), got {array.dtype} {array.shape}')
    array = np.ascontiguousarray(array)
    channels = 1 if array.ndim == 2 else 3
    return {
        'height': array.shape[0],
        'width': array.shape[1],
        'encoding': 'mono8' if channels == 1 else 'bgr8',
        'is_bigendian': 0,
        'step': array.shape[1] * channels,
        'data': array.tobytes(),
    }
