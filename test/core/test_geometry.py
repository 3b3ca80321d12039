"""The single normalisation / coordinate / warp functions and their conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kp2d_core.geometry.coordinates import (
    corner_error,
    denormalize_coords,
    in_image,
    normalize_coords,
    resize_points,
    sample_map,
    scale_homography,
    warp_points,
)
from kp2d_core.images import normalize_image


def test_normalize_image_constants_and_no_mutation():
    image = torch.full((1, 3, 4, 4), 0.75)
    out = normalize_image(image)
    assert torch.allclose(out, torch.full_like(out, (0.75 - 0.5) * 0.225))
    assert (image == 0.75).all()
    gray = normalize_image(torch.rand(2, 3, 4, 4), use_color=False)
    assert gray.shape == (2, 1, 4, 4)
    assert normalize_image(torch.rand(1, 1, 4, 4)).shape == (1, 3, 4, 4)
    with pytest.raises(ValueError):
        normalize_image(torch.rand(3, 4, 4))


def test_coordinate_normalisation_edges_and_round_trip():
    xy = torch.tensor([[-0.5, -0.5], [319.5, 239.5], [159.5, 119.5]])
    xy_n = normalize_coords(xy, 240, 320)
    assert torch.allclose(xy_n, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    pts = torch.rand(10, 2) * 300
    assert torch.allclose(denormalize_coords(normalize_coords(pts, 240, 320), 240, 320), pts)


def test_sample_map_hits_cell_centres_of_a_coarse_map():
    # A map at stride 8: cell (r, c) covers pixels 8c..8c+7, centre 8c + 3.5.
    values = torch.arange(12.0).reshape(1, 1, 3, 4)
    centres = torch.tensor([[[3.5, 3.5], [11.5, 3.5], [27.5, 19.5]]])
    out = sample_map(values, centres, height=24, width=32)
    assert out.shape == (1, 3, 1)
    assert torch.allclose(out[0, :, 0], torch.tensor([0.0, 1.0, 11.0]), atol=1e-5)
    halfway = sample_map(values, torch.tensor([[[7.5, 3.5]]]), 24, 32)
    assert halfway.item() == pytest.approx(0.5)


@pytest.mark.parametrize('dtype', [np.uint8, np.float32, np.float64])
def test_sample_map_numpy_and_torch_agree(dtype):
    """Inference samples NumPy maps (quantised ones as uint8), training torch ones: the same
    bilinear values, batches and the clamped border included."""
    rng = np.random.default_rng(3)
    values = (rng.random((2, 5, 6, 8)) * 200).astype(dtype)
    xy = rng.uniform(-6.0, 70.0, (2, 40, 2)).astype(np.float32)  # some outside the 48x64 image
    out = sample_map(values, xy, 48, 64)
    expected = sample_map(torch.from_numpy(values).double(), torch.from_numpy(xy).double(), 48, 64)
    assert out.shape == (2, 40, 5)
    assert out.dtype == (np.float32 if dtype == np.uint8 else dtype)
    assert np.allclose(out, expected.numpy(), atol=1e-3)


def test_warp_points_numpy_and_torch_agree():
    H = np.array([[1.1, 0.1, 5.0], [0.0, 0.9, -3.0], [1e-3, 0.0, 1.0]])
    xy = np.array([[0.0, 0.0], [10.0, 20.0]])
    expected = np.array([[5.0, -3.0], [(11 + 2 + 5) / 1.01, (18 - 3) / 1.01]])
    assert np.allclose(warp_points(H, xy), expected)
    batched = warp_points(torch.tensor(H)[None], torch.tensor(xy)[None])
    assert torch.allclose(batched[0], torch.tensor(expected))


def test_scale_homography_matches_resized_points():
    H = np.array([[1.0, 0.02, 3.0], [0.01, 0.98, 2.0], [1e-4, 2e-4, 1.0]])
    pts = np.array([[10.0, 20.0], [200.0, 150.0]])
    size0, new0, size1, new1 = (480, 640), (240, 320), (600, 800), (240, 320)
    H_small = scale_homography(H, size0, new0, size1, new1)
    direct = resize_points(warp_points(H, pts), size1, new1)
    via_small = warp_points(H_small, resize_points(pts, size0, new0))
    assert np.allclose(direct, via_small)


def test_corner_error_and_in_image():
    shift = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 4.0], [0.0, 0.0, 1.0]])
    assert corner_error(shift, np.eye(3), 240, 320) == pytest.approx(5.0)
    mask = in_image(np.array([[0.0, 0.0], [319.0, 239.0], [319.5, 0.0], [-0.1, 5.0]]), 240, 320)
    assert mask.tolist() == [True, True, False, False]
