"""sensor_msgs/Image and CompressedImage <-> NumPy without cv_bridge (testable without ROS).

PyPI's ``cv-bridge`` is a ROS 1 port that breaks on recent NumPy/OpenCV, and ROS 2's
``cv_bridge`` is only present where ROS is installed from apt, so the node uses these.
They honour ``step`` (row padding), ``is_bigendian`` and the common encodings (including
packed YUV 4:2:2 and Bayer mosaics, converted with OpenCV as cv_bridge does), decode JPEG and
PNG CompressedImage payloads, and reject anything inconsistent with a :class:`ImageError`
instead of guessing. Error messages quote at most ``MAX_QUOTE`` characters of a field.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import cv2
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
# Packed 4:2:2 (2 bytes per pixel) and Bayer mosaics: OpenCV conversion codes to BGR. ROS'
# 'yuv422' is UYVY; OpenCV names a Bayer pattern by its second row, hence the shift.
CONVERTED: dict[str, tuple[str, int, int]] = {
    'yuv422': ('u1', 2, cv2.COLOR_YUV2BGR_UYVY),
    'uyvy': ('u1', 2, cv2.COLOR_YUV2BGR_UYVY),
    'yuyv': ('u1', 2, cv2.COLOR_YUV2BGR_YUY2),
    'yuv422_yuy2': ('u1', 2, cv2.COLOR_YUV2BGR_YUY2),
    'bayer_rggb8': ('u1', 1, cv2.COLOR_BayerBG2BGR),
    'bayer_bggr8': ('u1', 1, cv2.COLOR_BayerRG2BGR),
    'bayer_gbrg8': ('u1', 1, cv2.COLOR_BayerGR2BGR),
    'bayer_grbg8': ('u1', 1, cv2.COLOR_BayerGB2BGR),
    'bayer_rggb16': ('u2', 1, cv2.COLOR_BayerBG2BGR),
    'bayer_bggr16': ('u2', 1, cv2.COLOR_BayerRG2BGR),
    'bayer_gbrg16': ('u2', 1, cv2.COLOR_BayerGR2BGR),
    'bayer_grbg16': ('u2', 1, cv2.COLOR_BayerGB2BGR),
}
COMPRESSED_FORMATS = ('jpeg', 'jpg', 'png')
MAX_PIXELS = 8192 * 8192
MAX_QUOTE = 40


def quote(value: Any) -> str:
    """repr of a message field for logs, cut to ``MAX_QUOTE`` characters."""
    text = repr(value)
    return text if len(text) <= MAX_QUOTE else text[: MAX_QUOTE - 3] + '...'


def image_msg_to_array(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` (or any object with its fields) to a BGR/gray array.

    Returns:
        (H, W) for single-channel encodings, else (H, W, 3) in BGR order (alpha dropped);
        dtype uint8, uint16 or float32 (native byte order). The array owns its memory.

    Raises:
        ImageError: unsupported encoding, zero or huge size, ``step`` smaller than a row,
            or ``data`` of the wrong length.
    """
    if msg.encoding in CONVERTED:
        dtype_name, channels, code = CONVERTED[msg.encoding]
        raw = _pixels(msg, Encoding(dtype_name, channels, 'raw'))
        try:
            return cv2.cvtColor(raw if channels > 1 else raw[..., 0], code)
        except cv2.error as exc:  # e.g. an odd width for a 4:2:2 or Bayer layout
            raise ImageError(f'{msg.encoding} image {msg.width}x{msg.height}: {exc.err}') from exc
    enc = ENCODINGS.get(msg.encoding)
    if enc is None:
        supported = sorted([*ENCODINGS, *CONVERTED])
        raise ImageError(f'unsupported encoding {quote(msg.encoding)}; supported: {supported}')
    return _to_bgr(_pixels(msg, enc), enc.order)


def _pixels(msg: Any, enc: Encoding) -> np.ndarray:
    """(H, W, C) array of the message's pixels in native byte order (checked sizes)."""
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
    return array.astype(dtype.newbyteorder('='), copy=False)


def compressed_msg_to_array(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG or PNG) to a BGR/gray array.

    ``format`` is image_transport's, e.g. 'jpeg', 'bgr8; jpeg compressed bgr8' or
    'mono16; png compressed mono16'. Colour payloads decode to BGR, gray ones to (H, W).

    Raises:
        ImageError: an unsupported format (e.g. compressedDepth) or undecodable data.
    """
    fmt = str(msg.format).lower()
    if 'compresseddepth' in fmt.replace(' ', '') or not any(f in fmt for f in COMPRESSED_FORMATS):
        raise ImageError(f'unsupported CompressedImage format {quote(msg.format)}')
    data = np.frombuffer(bytes(msg.data), np.uint8)
    if data.size == 0:
        raise ImageError('empty CompressedImage data')
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f'cannot decode the {quote(msg.format)} payload ({data.size} bytes)')
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageError(f'image {image.shape[0]}x{image.shape[1]} exceeds the pixel limit')
    return np.ascontiguousarray(image)


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
