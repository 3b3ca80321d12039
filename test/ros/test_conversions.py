"""Image message <-> array conversion: cv_bridge, and the checks the node adds to it."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from kp2d_testing.ros import require_ros_libraries

require_ros_libraries()

from cv_bridge import CvBridge  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from kp2d_ros.image_conversion import (  # noqa: E402
    ImageError,
    array_to_image_msg,
    compressed_msg_to_array,
    image_msg_to_array,
)


def _msg(array: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False):
    if bigendian:
        array = array.astype(array.dtype.newbyteorder('>'))
    h, w = array.shape[:2]
    row = array.reshape(h, -1).view(np.uint8)
    padded = np.zeros((h, row.shape[1] + pad), np.uint8)
    padded[:, : row.shape[1]] = row
    return SimpleNamespace(
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=padded.shape[1],
        data=padded.tobytes(),
    )


RNG = np.random.default_rng(0)
BGR = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def test_decoded_arrays_are_writable_copies():
    for encoding, array in (('bgr8', BGR), ('mono8', BGR[..., 0].copy())):
        out = image_msg_to_array(_msg(array, encoding))
        assert out.flags.writeable and out.flags.c_contiguous
        out[0, 0] = 0  # drawing on it must work (the node's debug image does)


@pytest.mark.parametrize('pad', [0, 3])
def test_bgr_rgb_bgra_rgba_decode_to_bgr(pad):
    assert np.array_equal(image_msg_to_array(_msg(BGR, 'bgr8', pad)), BGR)
    assert np.array_equal(image_msg_to_array(_msg(BGR[..., ::-1].copy(), 'rgb8', pad)), BGR)
    alpha = np.full((5, 7, 1), 9, np.uint8)
    bgra = np.concatenate([BGR, alpha], axis=2)
    rgba = np.concatenate([BGR[..., ::-1], alpha], axis=2)
    assert np.array_equal(image_msg_to_array(_msg(bgra, 'bgra8', pad)), BGR)
    assert np.array_equal(image_msg_to_array(_msg(rgba, 'rgba8', pad)), BGR)


@pytest.mark.parametrize('bigendian', [False, True])
def test_mono16_and_float_honour_endianness(bigendian):
    mono16 = RNG.integers(0, 65536, (4, 6), dtype=np.uint16)
    out = image_msg_to_array(_msg(mono16, 'mono16', pad=2, bigendian=bigendian))
    assert out.dtype == np.uint16 and np.array_equal(out, mono16)
    depth = RNG.random((4, 6), dtype=np.float32)
    out = image_msg_to_array(_msg(depth, '32FC1', bigendian=bigendian))
    assert out.dtype == np.float32 and np.array_equal(out, depth)


def test_debug_images_round_trip_through_cv_bridge():
    gray = RNG.integers(0, 256, (3, 4), dtype=np.uint8)
    header = Header(frame_id='cam')
    msg = array_to_image_msg(gray, header)
    assert (msg.encoding, msg.step, msg.header.frame_id) == ('mono8', 4, 'cam')
    assert np.array_equal(image_msg_to_array(msg), gray)
    assert array_to_image_msg(BGR, header).encoding == 'bgr8'
    with pytest.raises(ImageError):
        array_to_image_msg(BGR.astype(np.float32), header)


@pytest.mark.parametrize(
    ('encoding', 'array', 'expected'),
    [
        ('bgr8', BGR, BGR),
        ('rgb8', BGR[..., ::-1].copy(), BGR),
        ('mono8', BGR[..., 1].copy(), BGR[..., 1]),
        ('bgr16', BGR.astype(np.uint16) * 257, BGR.astype(np.uint16) * 257),
        ('rgb16', BGR[..., ::-1].astype(np.uint16) * 257, BGR.astype(np.uint16) * 257),
        ('mono16', BGR[..., 0].astype(np.uint16) * 3, BGR[..., 0].astype(np.uint16) * 3),
        ('32FC1', BGR[..., 0].astype(np.float32) / 255, BGR[..., 0].astype(np.float32) / 255),
    ],
)
def test_every_cv_bridge_encoding_decodes_for_the_extractor(encoding, array, expected):
    """Messages made by cv_bridge itself (as camera drivers do) come back as BGR/gray."""
    msg = CvBridge().cv2_to_imgmsg(np.ascontiguousarray(array), encoding)
    out = image_msg_to_array(msg)
    assert out.dtype == expected.dtype and np.array_equal(out, expected)


@pytest.mark.parametrize(
    ('change', 'message'),
    [
        ({'encoding': 'yuv444_unknown'}, 'unsupported encoding'),
        ({'height': 0}, 'empty'),
        ({'width': 100000, 'height': 100000}, 'exceeds'),
        ({'step': 5}, 'smaller than one row'),
        ({'data': b'\x00' * 10}, 'bytes'),
    ],
)
def test_malformed_messages_raise(change, message):
    msg = _msg(BGR, 'bgr8')
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ImageError, match=message):
        image_msg_to_array(msg)


def test_yuv422_variants_decode_to_bgr():
    smooth = np.dstack(np.meshgrid(np.linspace(40, 200, 16), np.linspace(60, 180, 8)))
    bgr = np.concatenate([smooth, smooth[..., :1]], axis=2).astype(np.uint8)
    uyvy = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_UYVY)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(float)
    assert np.corrcoef(uyvy[..., 1].ravel(), gray.ravel())[0, 1] > 0.99  # UYVY: Y second
    yuyv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_YUY2)
    assert np.corrcoef(yuyv[..., 0].ravel(), gray.ravel())[0, 1] > 0.99  # YUY2: Y first
    for encoding, packed in (('yuv422', uyvy), ('uyvy', uyvy), ('yuyv', yuyv)):
        out = image_msg_to_array(_msg(np.ascontiguousarray(packed), encoding))
        assert out.shape == (8, 16, 3) and out.dtype == np.uint8
        assert np.abs(out.astype(int) - bgr).mean() < 4, encoding  # chroma is subsampled
    with pytest.raises(ImageError):
        image_msg_to_array(_msg(np.ascontiguousarray(uyvy[:, :15]), 'yuv422'))  # odd width


@pytest.mark.parametrize(
    ('encoding', 'offsets'),
    [
        ('bayer_rggb8', {'r': (0, 0), 'b': (1, 1)}),
        ('bayer_bggr8', {'b': (0, 0), 'r': (1, 1)}),
        ('bayer_gbrg8', {'b': (0, 1), 'r': (1, 0)}),
        ('bayer_grbg8', {'r': (0, 1), 'b': (1, 0)}),
    ],
)
def test_bayer_patterns_decode_to_the_right_colours(encoding, offsets):
    mosaic = np.full((8, 8), 60, np.uint8)  # green everywhere, then red and blue sites
    ry, rx = offsets['r']
    by, bx = offsets['b']
    mosaic[ry::2, rx::2] = 220
    mosaic[by::2, bx::2] = 20
    out = image_msg_to_array(_msg(mosaic, encoding))
    blue, green, red = out[2:6, 2:6].reshape(-1, 3).mean(axis=0)
    assert red > green > blue, (encoding, red, green, blue)  # a red scene, not a blue one


def test_compressed_jpeg_and_png():
    smooth = np.linspace(0, 255, 32 * 24 * 3).reshape(24, 32, 3).astype(np.uint8)
    for fmt, ext in (('bgr8; jpeg compressed bgr8', '.jpg'), ('png', '.png')):
        data = cv2.imencode(ext, smooth)[1].tobytes()
        out = compressed_msg_to_array(SimpleNamespace(format=fmt, data=data))
        assert out.shape == (24, 32, 3) and np.abs(out.astype(int) - smooth).mean() < 3
    mono16 = (np.arange(24 * 32).reshape(24, 32) * 50).astype(np.uint16)
    png16 = cv2.imencode('.png', mono16)[1].tobytes()
    out = compressed_msg_to_array(SimpleNamespace(format='mono16; png compressed', data=png16))
    assert out.dtype == np.uint16 and np.array_equal(out, mono16)
    for fmt, data in (('jpeg', b'not a jpeg'), ('jpeg', b''), ('compressedDepth png', png16)):
        with pytest.raises(ImageError):
            compressed_msg_to_array(SimpleNamespace(format=fmt, data=data))


def test_errors_quote_long_fields_briefly():
    bad = _msg(BGR, 'x' * 1_000_000)
    with pytest.raises(ImageError) as info:
        image_msg_to_array(bad)
    assert len(str(info.value)) < 1000  # a 1 MB encoding string is not copied into the log


def test_big_endian_uint16_arrays_are_images():
    from kp2d_core.images import to_unit_float

    mono16 = RNG.integers(0, 65536, (4, 6), dtype=np.uint16)
    swapped = mono16.astype('>u2')
    assert np.array_equal(to_unit_float(swapped), to_unit_float(mono16))


def _bomb_jpeg(height: int, width: int) -> bytes:
    """A small valid JPEG whose frame header is rewritten to claim ``height`` x ``width``."""
    data = bytearray(cv2.imencode('.jpg', BGR)[1].tobytes())
    sof = data.index(b'\xff\xc0')
    data[sof + 5 : sof + 9] = height.to_bytes(2, 'big') + width.to_bytes(2, 'big')
    return bytes(data)


def _bomb_png(height: int, width: int) -> bytes:
    data = bytearray(cv2.imencode('.png', BGR)[1].tobytes())
    data[16:24] = width.to_bytes(4, 'big') + height.to_bytes(4, 'big')
    return bytes(data)


@pytest.mark.parametrize(
    'payload', [_bomb_jpeg(65500, 65500), _bomb_jpeg(30000, 30000), _bomb_png(20000, 20000)]
)
def test_decompression_bombs_are_refused_from_the_header(payload):
    import time

    start = time.perf_counter()
    with pytest.raises(ImageError, match='header claims'):
        compressed_msg_to_array(
            SimpleNamespace(format='jpeg' if payload[:2] == b'\xff\xd8' else 'png', data=payload),
            8192 * 8192 // 4,
        )
    assert time.perf_counter() - start < 0.5  # nothing was decoded


def test_cut_and_corrupt_jpegs_are_refused():
    smooth = cv2.resize(BGR, (320, 240), interpolation=cv2.INTER_CUBIC)
    data = cv2.imencode('.jpg', smooth)[1].tobytes()
    for bad in (data[: len(data) // 3], data[: len(data) // 3] + b'\xff\xd9'):
        with pytest.raises(ImageError):
            compressed_msg_to_array(SimpleNamespace(format='jpeg', data=bad))
