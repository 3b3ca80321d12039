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
    'CheckpointError': 'kp2d_core.model.files',
    'ExtractorConfig': 'kp2d_core.config',
    'Features': 'kp2d_core.inference.features',
    'HomographyResult': 'kp2d_core.geometry.homography',
    'HomographyTracker': 'kp2d_core.vo.keyframe_tracker',
    'IONet': 'kp2d_core.model.io_net',
    'KeypointExtractor': 'kp2d_core.inference.extractor',
    'KeypointNet': 'kp2d_core.model.keypoint_net',
    'Matches': 'kp2d_core.geometry.correspondences',
    'ModelConfig': 'kp2d_core.config',
    'TrackResult': 'kp2d_core.vo.keyframe_tracker',
    'TrackerConfig': 'kp2d_core.vo.keyframe_tracker',
    'estimate_homography': 'kp2d_core.geometry.homography',
    'load_model': 'kp2d_core.model.checkpoint',
    'match': 'kp2d_core.inference.matching',
    'match_descriptors': 'kp2d_core.inference.matching',
    'refine_homography': 'kp2d_core.geometry.refinement',
    'refine_matches': 'kp2d_core.inference.subpixel',
    'save_checkpoint': 'kp2d_core.model.checkpoint',
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
    from kp2d_core.config import ExtractorConfig, ModelConfig
    from kp2d_core.geometry.correspondences import Matches
    from kp2d_core.geometry.homography import HomographyResult, estimate_homography
    from kp2d_core.inference.extractor import KeypointExtractor
    from kp2d_core.inference.features import Features
    from kp2d_core.inference.matching import match, match_descriptors
    from kp2d_core.model.checkpoint import load_model, save_checkpoint
    from kp2d_core.model.files import CheckpointError
    from kp2d_core.model.io_net import IONet
    from kp2d_core.model.keypoint_net import KeypointNet
    from kp2d_core.vo.keyframe_tracker import HomographyTracker, TrackerConfig, TrackResult


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
