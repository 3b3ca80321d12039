"""Shared fixtures: seeded randomness and small random-initialised networks (CPU only)."""

from __future__ import annotations

import pytest
import torch

from kp2d_core import ExtractorConfig, KeypointExtractor, KeypointNet, ModelConfig

SEED = 1234


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
