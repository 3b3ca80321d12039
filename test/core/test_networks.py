"""KeypointNet and IONet: shapes, Eq. 2 coordinates, border ring, gradients, determinism."""

from __future__ import annotations

import pytest
import torch

from kp2d_core import IONet, KeypointNet, ModelConfig
from kp2d_core.images import normalize_image
from kp2d_core.model.keypoint_net import offsets_to_pixels


def _images(b: int, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    return normalize_image(torch.rand(b, 3, h, w, generator=generator))


@pytest.mark.parametrize('hw', [(240, 320), (480, 640), (24, 40)])
@pytest.mark.parametrize('upsample', [True, False])
def test_output_shapes(hw, upsample, generator):
    h, w = hw
    net = KeypointNet(ModelConfig(do_upsample=upsample)).eval()
    with torch.no_grad():
        out = net(_images(2, h, w, generator))
    stride = 4 if upsample else 8
    assert out.score.shape == (2, 1, h // 8, w // 8)
    assert out.coords.shape == (2, 2, h // 8, w // 8)
    assert out.descriptors.shape == (2, 256, h // stride, w // stride)
    assert net.descriptor_stride == stride


def test_parameter_count_matches_reference():
    # The reference KeypointNet has about 5.31 M parameters (sec. 1.1 of the study).
    count = sum(p.numel() for p in KeypointNet().parameters())
    assert 5.25e6 < count < 5.35e6


@pytest.mark.parametrize('bad', [(23, 32), (240, 321), (16, 16)])
def test_rejects_unaligned_or_tiny_input(bad):
    with pytest.raises(ValueError, match='divisible'):
        KeypointNet().eval()(torch.zeros(1, 3, *bad))


def test_cross_border_formula_known_values():
    # 2 x 3 cells of an image 16 x 24; centres are 8 * index + 3.5.
    offsets = torch.zeros(1, 2, 2, 3)
    offsets[0, 0, 0, 1] = 1.0  # x of cell (row 0, col 1) pushed fully right
    offsets[0, 1, 1, 2] = -0.5  # y of cell (row 1, col 2) half up
    offsets[0, 0, 0, 0] = -1.0  # x of the first cell fully left -> clamped at 0
    cross = offsets_to_pixels(offsets, sigma1=2.0, height=16, width=24)
    inside = offsets_to_pixels(offsets, sigma1=1.0, height=16, width=24)
    assert cross[0, 0, 0, 1] == pytest.approx(8 + 3.5 + 7.0)  # into the next cell
    assert inside[0, 0, 0, 1] == pytest.approx(8 + 3.5 + 3.5)  # stays inside its cell
    assert cross[0, 1, 1, 2] == pytest.approx(8 + 3.5 - 3.5)
    assert inside[0, 1, 1, 2] == pytest.approx(8 + 3.5 - 1.75)
    assert cross[0, 0, 0, 0] == 0.0 and inside[0, 0, 0, 0] == pytest.approx(0.0)
    assert cross[0, 0, 1, 1] == pytest.approx(11.5) and cross[0, 1, 1, 1] == pytest.approx(11.5)
    # Clamp at the far edge too: x may not exceed W - 1.
    assert offsets_to_pixels(torch.ones(1, 2, 2, 3), 2.0, 16, 24)[0, 0, 0, 2] == 23.0


def test_sigma1_follows_config():
    assert ModelConfig(do_cross=True, cross_ratio=2.0).sigma1 == 2.0
    assert ModelConfig(do_cross=False).sigma1 == 1.0
    with pytest.raises(ValueError):
        ModelConfig(cross_ratio=0.5)


def test_coords_stay_within_reach_of_their_cell(generator):
    net = KeypointNet(ModelConfig(do_cross=False)).eval()
    with torch.no_grad():
        coords = net(_images(1, 64, 96, generator)).coords[0]
    cell = torch.div(coords, 8, rounding_mode='floor')
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(12), indexing='ij')
    assert torch.equal(cell[0], cols.float()) and torch.equal(cell[1], rows.float())


def test_border_cells_are_zero_and_interior_positive(net, generator):
    with torch.no_grad():
        score = net(_images(2, 240, 320, generator)).score
    ring = torch.ones_like(score, dtype=torch.bool)
    ring[..., 1:-1, 1:-1] = False
    assert (score[ring] == 0).all()
    assert (score[~ring] > 0).all() and (score <= 1).all()
    assert int(ring[0, 0].sum()) == 136  # 30 x 40 cells, as in the reference


def test_deterministic_with_seed(generator):
    def build() -> KeypointNet:
        torch.manual_seed(7)
        return KeypointNet().eval()

    images = _images(1, 64, 64, generator)
    with torch.no_grad():
        a, b = build()(images), build()(images)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_gradients_reach_every_head(generator):
    net = KeypointNet().train()
    out = net(_images(2, 64, 64, generator))
    (out.score.sum() + out.coords.sum() + out.descriptors.sum()).backward()
    for name in ('score_head', 'location_head', 'descriptor_head', 'encoder'):
        grads = [p.grad for p in getattr(net, name).parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name


def test_ionet_shapes_and_gradient(generator):
    io = IONet().train()
    pairs = torch.randn(3, 5, 300, generator=generator, requires_grad=True)
    out = io(pairs)
    assert out.shape == (3, 300)
    out.sum().backward()
    assert pairs.grad is not None and pairs.grad.abs().sum() > 0
    assert IONet().eval()(torch.randn(1, 5, 10, generator=generator)).shape == (1, 10)
    assert 1.2e5 < sum(p.numel() for p in io.parameters()) < 1.5e5


@pytest.mark.parametrize('shape', [(2, 4, 10), (2, 5), (1, 5, 1)])
def test_ionet_rejects_bad_input(shape):
    with pytest.raises(ValueError, match='pairs'):
        IONet()(torch.zeros(shape))
