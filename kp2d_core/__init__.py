"""kp2d_core: KP2D networks, inference, training and evaluation, free of any ROS import.

Typical use::

    from kp2d_core import KeypointExtractor, match, estimate_homography
    extractor = KeypointExtractor.from_checkpoint()          # bundled weights, CUDA if present
    f0, f1 = extractor.extract(img0), extractor.extract(img1)
    m = match(f0, f1)
    result = estimate_homography(f0.keypoints, f1.keypoints, m)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = '0.1.0'

# Where each public name lives. Imported on first use, so a program that needs only the
# PyTorch-free parts (the ONNX Runtime node) does not load PyTorch by importing the package.
_EXPORTS = {
    'CheckpointError': 'kp2d_core.artifacts',
    'ExtractorConfig': 'kp2d_core.config',
    'Features': 'kp2d_core.frontend',
    'HomographyResult': 'kp2d_core.homography',
    'HomographyTracker': 'kp2d_core.tracking',
    'IONet': 'kp2d_core.networks',
    'KeypointExtractor': 'kp2d_core.frontend',
    'KeypointNet': 'kp2d_core.networks',
    'Matches': 'kp2d_core.matching',
    'ModelConfig': 'kp2d_core.config',
    'TrackResult': 'kp2d_core.tracking',
    'TrackerConfig': 'kp2d_core.tracking',
    'estimate_homography': 'kp2d_core.homography',
    'load_model': 'kp2d_core.checkpoint',
    'match': 'kp2d_core.matching',
    'match_descriptors': 'kp2d_core.matching',
    'refine_homography': 'kp2d_core.refine',
    'refine_matches': 'kp2d_core.subpixel',
    'save_checkpoint': 'kp2d_core.checkpoint',
}

__all__ = [
    'CheckpointError',
    'ExtractorConfig',
    'Features',
    'HomographyResult',
    'HomographyTracker',
    'IONet',
    'KeypointExtractor',
    'KeypointNet',
    'Matches',
    'ModelConfig',
    'TrackResult',
    'TrackerConfig',
    'estimate_homography',
    'load_model',
    'match',
    'match_descriptors',
    'refine_homography',
    'refine_matches',
    'save_checkpoint',
]

if TYPE_CHECKING:
    from kp2d_core.artifacts import CheckpointError
    from kp2d_core.checkpoint import load_model, save_checkpoint
    from kp2d_core.config import ExtractorConfig, ModelConfig
    from kp2d_core.frontend import Features, KeypointExtractor
    from kp2d_core.homography import HomographyResult, estimate_homography
    from kp2d_core.matching import Matches, match, match_descriptors
    from kp2d_core.networks import IONet, KeypointNet
    from kp2d_core.tracking import HomographyTracker, TrackerConfig, TrackResult


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
