"""Image message <-> array conversion (pure NumPy; no ROS needed)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from kp2d_ros.conversions import ImageError, array_to_image_fields, image_msg_to_array


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


def test_mono8_round_trip_through_fields():
    gray = RNG.integers(0, 256, (3, 4), dtype=np.uint8)
    fields = array_to_image_fields(gray)
    assert fields['encoding'] == 'mono8' and fields['step'] == 4
    assert np.array_equal(image_msg_to_array(SimpleNamespace(**fields)), gray)
    assert array_to_image_fields(BGR)['encoding'] == 'bgr8'
    with pytest.raises(ImageError):
        array_to_image_fields(BGR.astype(np.float32))


@pytest.mark.parametrize(
    ('change', 'message'),
    [
        ({'encoding': 'yuv422'}, 'unsupported encoding'),
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
