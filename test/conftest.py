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
