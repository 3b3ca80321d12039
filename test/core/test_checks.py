"""Shape checks at the public API boundaries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kp2d_core.checks import check_shape
from kp2d_core.geometry.coordinates import corner_error, normalize_coords, sample_map, warp_points
from kp2d_core.geometry.image_points import ImagePoints
from kp2d_core.model.keypoint_net import KeypointOutput
from kp2d_core.model.losses import LossConfig, kp2d_losses


def test_check_shape_spec():
    assert check_shape(np.zeros((4, 2)), 'N,2') == {'N': 4}
    assert check_shape(torch.zeros(2, 5, 2), '*,2') == {}
    assert check_shape(torch.zeros(3, 3), '*,3,3') == {}
    with pytest.raises(ValueError, match=r'xy must have shape \(N,2\), got \(4, 3\)'):
        check_shape(np.zeros((4, 3)), 'N,2', 'xy')
    with pytest.raises(ValueError, match='one size for N'):
        check_shape(np.zeros((4, 5)), 'N,N')
    with pytest.raises(ValueError, match='array or tensor'):
        check_shape([1, 2], 'N')


def test_public_functions_name_the_wrong_argument():
    with pytest.raises(ValueError, match='H must have shape'):
        warp_points(np.eye(2), np.zeros((3, 2)))
    with pytest.raises(ValueError, match='xy must have shape'):
        warp_points(np.eye(3), np.zeros((3, 3)))
    with pytest.raises(ValueError, match='xy'):
        normalize_coords(torch.zeros(4, 3), 8, 8)
    with pytest.raises(ValueError, match='differ in B'):
        sample_map(torch.zeros(2, 4, 3, 3), torch.zeros(1, 5, 2), 24, 24)
    with pytest.raises(ValueError, match='H_est'):
        corner_error(np.eye(4), np.eye(3), 10, 10)
    with pytest.raises(ValueError, match='points must have shape'):
        ImagePoints.of(np.zeros((4, 3)), None)
    out = KeypointOutput(torch.rand(2, 1, 3, 3), torch.rand(2, 2, 3, 3), torch.rand(2, 8, 6, 6))
    with pytest.raises(ValueError, match='H must have shape'):
        kp2d_losses(out, out, torch.eye(3).expand(3, 3, 3), LossConfig(use_io_loss=False))
