"""Shared fixtures: seeded randomness and small random-initialised networks (CPU only)."""

from __future__ import annotations

import os

import pytest
import torch

from kp2d_core import ExtractorConfig, KeypointExtractor, KeypointNet, ModelConfig

SEED = 1234


@pytest.fixture(scope='session', autouse=True)
def onnx_cache(tmp_path_factory):
    """Exported ONNX models go to a temporary cache, not the user's ~/.cache."""
    saved = os.environ.get('KP2D_CACHE_DIR')
    os.environ['KP2D_CACHE_DIR'] = str(tmp_path_factory.mktemp('kp2d_cache'))
    yield
    if saved is None:
        os.environ.pop('KP2D_CACHE_DIR', None)
    else:
        os.environ['KP2D_CACHE_DIR'] = saved


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(SEED)


@pytest.fixture(scope='session')
def net() -> KeypointNet:
    torch.manual_seed(SEED)
    return KeypointNet(ModelConfig()).eval()


@pytest.fixture(scope='session')
def extractor(net: KeypointNet) -> KeypointExtractor:
    return KeypointExtractor(net, ExtractorConfig(top_k=None))


@pytest.fixture(scope='session')
def bundled_int8(tmp_path_factory):
    """(fp32 ONNX export at 64x96, three seeded calibration images, the int8 model as the
    quantiser wrote it: no rewrites) of the bundled network, for the int8 rewrites' tests."""
    from kp2d_core.inference.export import export_onnx, quantize_int8
    from kp2d_core.model.checkpoint import load_model
    from kp2d_core.model.files import default_weights_path

    out = tmp_path_factory.mktemp('bundled_int8')
    fp32 = export_onnx(load_model(default_weights_path()), out / 'm.fp32.onnx', 'sha', (64, 96))
    rng = torch.Generator().manual_seed(2)
    images = [(torch.rand(1, 3, 64, 96, generator=rng) - 0.5).numpy() for _ in range(3)]
    plain = quantize_int8(fp32, out / 'plain.int8.onnx', images, 'sha', lean=False)
    return fp32, images, plain
