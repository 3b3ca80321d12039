"""kp2d_core: KP2D networks, inference, training and evaluation, free of any ROS import.

Typical use::

    from kp2d_core import KeypointExtractor, match, estimate_homography
    extractor = KeypointExtractor.from_checkpoint()          # bundled weights, CUDA if present
    f0, f1 = extractor.extract(img0), extractor.extract(img1)
    m = match(f0, f1)
    result = estimate_homography(f0.keypoints, f1.keypoints, m)
"""

from kp2d_core.checkpoint import CheckpointError, load_model, save_checkpoint
from kp2d_core.config import ExtractorConfig, ModelConfig
from kp2d_core.frontend import Features, KeypointExtractor
from kp2d_core.homography import HomographyResult, estimate_homography
from kp2d_core.matching import Matches, match, match_descriptors
from kp2d_core.networks import IONet, KeypointNet
from kp2d_core.tracking import HomographyTracker, TrackerConfig, TrackResult

__version__ = '0.1.0'

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
    'save_checkpoint',
]
