"""extract(): input validation, any size, selection (threshold, NMS, top-k), descriptors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from kp2d_core import ExtractorConfig, KeypointExtractor
from kp2d_core.geometry.coordinates import resize_points
from kp2d_core.images import image_to_array
from kp2d_core.inference.extractor import radius_nms


def _image(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize('hw', [(240, 320), (480, 640), (241, 323), (100, 37)])
def test_extract_any_size(extractor, hw):
    h, w = hw
    f = extractor.extract(_image(h, w))
    n = len(f)
    assert n > 0 and f.image_size == (h, w)
    assert (
        f.keypoints.shape == (n, 2) and f.scores.shape == (n,) and f.descriptors.shape == (n, 256)
    )
    assert f.keypoints.dtype == np.float32 and f.descriptors.dtype == np.float32
    assert (f.keypoints[:, 0] >= 0).all() and (f.keypoints[:, 0] <= w - 1).all()
    assert (f.keypoints[:, 1] >= 0).all() and (f.keypoints[:, 1] <= h - 1).all()
    assert np.allclose(np.linalg.norm(f.descriptors, axis=1), 1.0, atol=1e-5)
    assert (f.scores[:-1] >= f.scores[1:]).all() and (f.scores > 0).all()


def test_default_keeps_every_interior_cell(extractor):
    # 240x320 has 30x40 cells; the zeroed outer ring (136 cells) is dropped by threshold 0.
    assert len(extractor.extract(_image(240, 320))) == 1200 - 136


def test_top_k_and_threshold(net):
    image = _image(240, 320)
    top = KeypointExtractor(net, ExtractorConfig(top_k=50)).extract(image)
    everything = KeypointExtractor(net, ExtractorConfig(top_k=None)).extract(image)
    assert len(top) == 50
    assert np.array_equal(top.keypoints, everything.keypoints[:50])
    cut = float(everything.scores[100])
    thresholded = KeypointExtractor(net, ExtractorConfig(top_k=None, score_threshold=cut))
    assert len(thresholded.extract(image)) == int((everything.scores > cut).sum())


def test_nms_radius_spaces_points(net):
    image = _image(240, 320)
    f = KeypointExtractor(net, ExtractorConfig(top_k=None, nms_radius=12.0)).extract(image)
    gap = f.keypoints[:, None] - f.keypoints[None]
    dist = np.linalg.norm(gap, axis=-1) + np.eye(len(f)) * 1e3
    assert dist.min() >= 12.0
    assert len(f) < 1064


def test_radius_nms_known_answer():
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [10.5, 0.0], [30.0, 0.0]])
    scores = np.array([0.5, 0.9, 0.3, 0.3, 0.1])
    keep = radius_nms(xy, scores, radius=2.0)
    assert keep.tolist() == [False, True, True, False, True]  # tie: lower index wins


def test_resize_maps_keypoints_back(net):
    image = _image(480, 640)
    f = KeypointExtractor(net, ExtractorConfig(top_k=None, resize=(240, 320))).extract(image)
    assert f.image_size == (480, 640) and len(f) == 1064
    assert f.keypoints[:, 0].max() > 320  # coordinates are in the 640-wide input


def test_a_scale_shrinks_the_network_input_and_maps_keypoints_back(net):
    """extract(scale=0.5) is the network on the image shrunk to half its network size (on a
    configured resize too), with the keypoints in the input's pixels."""
    image = _image(480, 640)
    extractor = KeypointExtractor(net, ExtractorConfig(top_k=None))
    half = extractor.extract(image, scale=0.5)
    small = extractor.extract(cv2.resize(image, (320, 240), interpolation=cv2.INTER_AREA))
    assert half.image_size == (480, 640) and len(half) == len(small) == 1064
    expected = resize_points(small.keypoints, (240, 320), (480, 640))
    assert np.allclose(half.keypoints, expected, atol=1e-3)
    assert np.allclose(half.descriptors, small.descriptors, atol=1e-5)
    resized = KeypointExtractor(net, ExtractorConfig(top_k=None, resize=(240, 320)))
    assert resized.network_size(480, 640, 0.5) == (120, 160)
    assert resized.extract(image, scale=0.5).keypoints[:, 0].max() > 320
    for scale in (0.0, 1.5):
        with pytest.raises(ValueError, match='scale must be in'):
            extractor.extract(image, scale=scale)


def test_colour_order_and_formats_agree(net):
    ex_bgr = KeypointExtractor(net, ExtractorConfig(top_k=None))
    ex_rgb = KeypointExtractor(net, ExtractorConfig(top_k=None, channel_order='rgb'))
    bgr = _image(64, 96)
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    a, b = ex_bgr.extract(bgr), ex_rgb.extract(rgb)
    assert np.array_equal(a.keypoints, b.keypoints)
    assert np.array_equal(a.descriptors, b.descriptors)
    as_float = ex_bgr.extract(bgr.astype(np.float32) / 255.0)
    assert np.allclose(as_float.keypoints, a.keypoints, atol=1e-4)
    bgra = np.dstack([bgr, np.full(bgr.shape[:2], 7, np.uint8)])
    assert np.array_equal(ex_bgr.extract(bgra).keypoints, a.keypoints)
    gray = _image(64, 96, channels=1)
    assert len(ex_bgr.extract(gray)) == len(ex_bgr.extract(gray[..., None])) > 0
    assert len(ex_bgr.extract(gray.astype(np.uint16) * 257)) > 0


@pytest.mark.parametrize(
    ('image', 'message'),
    [
        (np.zeros((0, 0, 3), np.uint8), 'empty'),
        (np.zeros((1, 1), np.uint8), 'too small'),
        (np.zeros((10, 200, 3), np.uint8), 'too small'),
        (np.zeros((64, 64, 3), np.int64), 'dtype'),
        (np.zeros((64, 64, 3), bool), 'dtype'),
        (np.zeros((64, 64, 2), np.uint8), 'shape'),
        (np.zeros((2, 64, 64, 3), np.uint8), 'shape'),
        (np.full((64, 64), np.nan, np.float32), 'NaN'),
        (np.full((64, 64), 3.0, np.float32), r'\[0, 1\]'),
        (np.full((64, 64), 1e300), r'\[0, 1\], got range \[1e\+300'),  # beyond float32
        (np.full((64, 64), np.inf, np.float16), 'infinite'),
        ([[0, 1], [2, 3]], 'NumPy'),
    ],
)
def test_bad_inputs_raise_clear_errors(extractor, image, message):
    with pytest.raises(ValueError, match=message):
        extractor.extract(image)


def test_image_to_array_does_not_modify_input():
    image = _image(32, 32)
    before = image.copy()
    array = image_to_array(image, 'bgr')
    assert array.shape == (1, 3, 32, 32) and array.dtype == np.float32
    assert np.array_equal(image, before) and array.flags.c_contiguous
    assert array[0, 0, 0, 0] == pytest.approx(image[0, 0, 2] / 255.0)  # channel 0 is red


def test_extract_batch_matches_single_and_takes_tensors(extractor):
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    batch = extractor.extract_batch(images)
    single = extractor.extract_batch(images[1:].numpy())[0]
    assert len(batch) == 2
    assert np.allclose(batch[1].keypoints, single.keypoints, atol=1e-4)


@pytest.mark.parametrize(
    'kwargs', [{'top_k': 0}, {'score_threshold': 1.0}, {'nms_radius': -1}, {'resize': (8, 64)}]
)
def test_extractor_config_validation(kwargs):
    with pytest.raises(ValueError):
        ExtractorConfig(**kwargs)
