"""Bundled sample data (exact synthetic homographies) and the drawing helpers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kp2d_core.data.samples import read_image, synthetic_pair, synthetic_sequence
from kp2d_core.geometry.coordinates import warp_image
from kp2d_core.inference.probe import sample_photo_path
from kp2d_core.viz import draw_flow, draw_keypoints, draw_matches, to_bgr_uint8


def _interior_photometric_error(image0, image1, H_0to1) -> float:
    """Mean abs difference between image1 and image0 warped by H, on the central region."""
    warped = warp_image(image0, H_0to1, image1.shape[:2]).astype(np.float32)
    h, w = image1.shape[:2]
    crop = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
    return float(np.abs(warped[crop] - image1[crop].astype(np.float32)).mean())


def test_pair_homography_is_exact():
    image0, image1, H = synthetic_pair((240, 320))
    assert image0.shape == image1.shape == (240, 320, 3) and image0.dtype == np.uint8
    assert _interior_photometric_error(image0, image1, H) < 6.0
    # A wrong homography (shifted by 4 px) is clearly worse: the check can fail.
    shifted = np.array([[1, 0, 4], [0, 1, 0], [0, 0, 1.0]]) @ H
    assert _interior_photometric_error(
        image0, image1, shifted
    ) > 1.5 * _interior_photometric_error(image0, image1, H)


def test_sequence_is_smooth_and_starts_at_identity():
    frames, H_0to = synthetic_sequence(5, (120, 160))
    assert len(frames) == len(H_0to) == 5
    assert np.allclose(H_0to[0], np.eye(3), atol=1e-9)
    for k in range(1, 5):
        assert _interior_photometric_error(frames[0], frames[k], H_0to[k]) < 8.0
    with pytest.raises(ValueError):
        synthetic_sequence(1)


def test_read_image_errors(tmp_path):
    assert read_image(sample_photo_path()).shape == (400, 600, 3)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / 'missing.jpg')
    corrupt = tmp_path / 'corrupt.jpg'
    corrupt.write_bytes(b'\xff\xd8 not really a jpeg')
    with pytest.raises(ValueError, match='broken header'):
        read_image(corrupt)
    whole = sample_photo_path().read_bytes()
    cut = tmp_path / 'cut.jpg'
    cut.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(ValueError, match='truncated JPEG'):
        read_image(cut)
    cut.write_bytes(whole[: len(whole) // 3] + b'\xff\xd9')  # a cut file with its marker
    with pytest.raises(ValueError, match='corrupt JPEG'):
        read_image(cut)


def test_drawing_shapes_and_colours():
    gray = np.zeros((40, 50), np.uint8)
    assert to_bgr_uint8(gray).shape == (40, 50, 3)
    assert to_bgr_uint8(np.ones((4, 4), np.float32)).max() == 255
    assert to_bgr_uint8(np.full((4, 4), 65535, np.uint16)).max() == 255
    frozen = np.zeros((40, 50, 3), np.uint8)
    frozen.flags.writeable = False
    assert draw_keypoints(frozen, np.array([[10.0, 20.0]])).max() > 0
    dots = draw_keypoints(gray, np.array([[10.0, 20.0]]))
    assert dots[20, 10].tolist() != [0, 0, 0] and gray.max() == 0  # input untouched
    pts = np.array([[5.0, 5.0], [30.0, 30.0]])
    canvas = draw_matches(gray, np.zeros((30, 60, 3), np.uint8), pts, pts, np.array([True, False]))
    assert canvas.shape == (40, 110, 3)
    green, red = canvas[5, 5], canvas[30, 30]
    assert green[1] > green[2] and red[2] > red[1]
    assert cv2.countNonZero(cv2.cvtColor(canvas, cv2.COLOR_BGR2GRAY)) > 50


def test_flow_lines_join_the_two_positions_in_one_image():
    image = np.zeros((40, 60, 3), np.uint8)
    flow = draw_flow(image, np.array([[5.0, 20.0]]), np.array([[50.0, 20.0]]))
    assert flow.shape == (40, 60, 3) and image.max() == 0
    assert (flow[20, 5:51, 1] > 0).all()  # a green line along the whole displacement


def test_encoded_sizes_come_from_the_header_before_decoding():
    import cv2

    from kp2d_core.images import decode_image, encoded_size

    image = np.zeros((30, 40, 3), np.uint8)
    for ext, kind in (
        ('.jpg', 'jpeg'),
        ('.png', 'png'),
        ('.ppm', 'pnm'),
        ('.bmp', 'bmp'),
        ('.webp', 'webp'),
    ):
        data = cv2.imencode(ext, image)[1].tobytes()
        assert encoded_size(data) == (kind, 30, 40), ext
        assert decode_image(data).shape == (30, 40, 3)
    png = bytearray(cv2.imencode('.png', image)[1].tobytes())
    png[16:24] = (20000).to_bytes(4, 'big') * 2  # a 389 KB-style bomb: 20000 x 20000
    with pytest.raises(ValueError, match='header claims 20000x20000'):
        decode_image(bytes(png), max_pixels=64_000_000)
    assert encoded_size(b'GIF89a....') is None and encoded_size(b'\x89PNG') is None
