"""sensor_msgs/Image and CompressedImage <-> NumPy through cv_bridge, with the checks it lacks.

cv_bridge does the conversions (every encoding it knows, colour and Bayer/YUV conversion,
the debug image). What it leaves to its callers is here, small and tested against it:

* the message layout is checked first (sizes, ``step``, data length, a pixel limit), so a
  malformed message is an :class:`ImageError` with a reason instead of a NumPy error;
* big-endian 16-bit data is swapped before cv_bridge sees it (its own swap uses
  ``ndarray.newbyteorder``, which NumPy 2 removed), and row padding that is not a whole
  number of pixels is removed (cv_bridge derives the row length from ``step``);
* packed 4:2:2 images must have an even width (cv_bridge converts odd ones silently);
* image_transport's 'uyvy' and 'yuyv' names map to cv_bridge's 'yuv422' and 'yuv422_yuy2';
* compressed payloads go through :func:`kp2d_core.images.decode_image` (the header is
  checked against the pixel budget before decoding, decoder errors become reasons). cv_bridge's
  ``compressed_imgmsg_to_cv2`` is a bare ``cv2.imdecode`` without these checks.

Colour images come out BGR (8 or 16 bit), single-channel ones unchanged, as the extractor
takes them.
"""

from __future__ import annotations

from typing import Any

import cv2
from cv_bridge import CvBridge, CvBridgeError
import numpy as np

from kp2d_core.images import ImageFileError, decode_image

MAX_PIXELS = 8192 * 8192
MAX_QUOTE = 40
ALIASES = {'uyvy': 'yuv422', 'yuyv': 'yuv422_yuy2'}
PASSTHROUGH = ('mono8', 'mono16', '8UC1', '16UC1', '32FC1', 'bgr8', 'bgr16', '8UC3', '16UC3')
COMPRESSED_FORMATS = ('jpeg', 'jpg', 'png')
_BRIDGE: CvBridge | None = None


class ImageError(ValueError):
    """An image message that cannot be turned into an array (encoding, size, step, data)."""


def bridge() -> CvBridge:
    """The process's CvBridge (it holds only lookup tables)."""
    global _BRIDGE
    if _BRIDGE is None:
        _BRIDGE = CvBridge()
    return _BRIDGE


def quote(value: Any) -> str:
    """repr of a message field for logs, cut to ``MAX_QUOTE`` characters."""
    text = repr(value)
    return text if len(text) <= MAX_QUOTE else text[: MAX_QUOTE - 3] + '...'


def image_msg_to_array(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` (or any object with its fields).

    Returns:
        (H, W) for single-channel encodings, else (H, W, 3) BGR (alpha dropped); uint8,
        uint16 or float32 in native byte order.

    Raises:
        ImageError: unknown encoding, empty or huge image, ``step`` smaller than a row, data
            of the wrong length, or a conversion cv_bridge refuses.
    """
    encoding = ALIASES.get(str(msg.encoding), str(msg.encoding))
    try:
        dtype, channels = bridge().encoding_to_dtype_with_channels(encoding)
    except (CvBridgeError, KeyError) as exc:
        raise ImageError(f'unsupported encoding {quote(msg.encoding)}') from exc
    if encoding.startswith('yuv422') and int(msg.width) % 2:
        raise ImageError(f'{encoding} needs an even width, got {msg.width}')
    native = _native(msg, encoding, np.dtype(dtype), channels)
    try:
        if encoding in PASSTHROUGH:
            image = bridge().imgmsg_to_cv2(native, 'passthrough')
        else:
            target = 'bgr16' if np.dtype(dtype).itemsize == 2 else 'bgr8'
            image = bridge().imgmsg_to_cv2(native, target)
    except (CvBridgeError, cv2.error, TypeError, ValueError) as exc:
        raise ImageError(f'{encoding} image {msg.width}x{msg.height}: {exc}') from exc
    return image if image.flags.writeable else image.copy()


class _Layout:
    """The fields cv_bridge reads: unpadded rows of native-order data."""

    def __init__(self, height: int, width: int, step: int, encoding: str, data: bytes) -> None:
        self.height, self.width, self.step = height, width, step
        self.encoding, self.data, self.is_bigendian = encoding, data, False


def _native(msg: Any, encoding: str, dtype: np.dtype, channels: int) -> _Layout:
    row = int(msg.width) * dtype.itemsize * channels
    data = _checked_data(msg, dtype.itemsize * channels)
    height, step = int(msg.height), int(msg.step)
    if step != row:  # drop the padding: cv_bridge assumes whole pixels per step
        data = np.frombuffer(data, np.uint8).reshape(height, step)[:, :row].tobytes()
    if msg.is_bigendian and dtype.itemsize > 1:
        data = np.frombuffer(data, dtype.newbyteorder('>')).astype(dtype).tobytes()
    return _Layout(height, int(msg.width), row, encoding, data)


def _checked_data(msg: Any, pixel_bytes: int) -> bytes:
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageError(f'empty image {height}x{width}')
    if height * width > MAX_PIXELS:
        raise ImageError(f'image {height}x{width} exceeds the {MAX_PIXELS}-pixel limit')
    if step < width * pixel_bytes:
        raise ImageError(f'step {step} is smaller than one row ({width * pixel_bytes} bytes)')
    data = bytes(msg.data)
    if len(data) != step * height:
        raise ImageError(f'data has {len(data)} bytes, expected step*height = {step * height}')
    return data


def compressed_msg_to_array(msg: Any, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG or PNG).

    ``format`` is image_transport's, e.g. 'jpeg', 'bgr8; jpeg compressed bgr8' or
    'mono16; png compressed mono16'. Colour payloads decode to BGR, gray ones to (H, W).

    Raises:
        ImageError: an unsupported format (e.g. compressedDepth), a header claiming more than
            ``max_pixels``, or data that does not decode completely.
        MemoryError: the decoder ran out of memory.
    """
    fmt = str(msg.format).lower()
    if 'compresseddepth' in fmt.replace(' ', '') or not any(f in fmt for f in COMPRESSED_FORMATS):
        raise ImageError(f'unsupported CompressedImage format {quote(msg.format)}')
    try:
        image = decode_image(bytes(msg.data), max_pixels, cv2.IMREAD_UNCHANGED, 'CompressedImage')
    except ImageFileError as exc:
        raise ImageError(str(exc)) from exc
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    return np.ascontiguousarray(image)


def array_to_image_msg(array: np.ndarray, header: Any) -> Any:
    """A ``sensor_msgs/Image`` (mono8 or bgr8) of a (H, W) or (H, W, 3) uint8 array."""
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ImageError(f'expected uint8 (H, W) or (H, W, 3), got {array.dtype} {array.shape}')
    encoding = 'mono8' if array.ndim == 2 else 'bgr8'
    try:
        return bridge().cv2_to_imgmsg(np.ascontiguousarray(array), encoding, header)
    except CvBridgeError as exc:
        raise ImageError(str(exc)) from exc
