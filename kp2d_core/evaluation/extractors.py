"""Feature extractors behind one interface, so KP2D and OpenCV baselines share the harness.

An extractor maps a uint8 BGR image to :class:`MethodFeatures` (NumPy). OpenCV detectors run
with lowered thresholds: their defaults return too few points on low-texture images for a
top-300 / top-1000 protocol, which would measure the threshold instead of the method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from kp2d_core.config import ExtractorConfig
from kp2d_core.inference.backends import Backend
from kp2d_core.inference.extractor import KeypointExtractor
from kp2d_core.model.keypoint_net import KeypointNet

MAX_BASELINE_FEATURES = 5000  # detected before the protocol's own top-k selection

# Thresholds used for the baselines (OpenCV defaults in comments).
ORB_FAST_THRESHOLD = 5  # default 20
SIFT_CONTRAST_THRESHOLD = 0.01  # default 0.04
AKAZE_THRESHOLD = 1e-4  # default 1e-3


@dataclass(frozen=True)
class MethodFeatures:
    """What any evaluated method (KP2D or a baseline) gives for one image: keypoints (N, 2)
    float64 pixels, scores (N,), descriptors (N, D) and their norm. Unlike
    :class:`~kp2d_core.inference.features.Features`, the descriptors may be binary (ORB, AKAZE:
    uint8, Hamming distance)."""

    keypoints: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    norm: str  # 'l2' (float descriptors) or 'hamming' (binary, uint8)


Extractor = Callable[[np.ndarray], MethodFeatures]


def kp2d_extractor(model: KeypointNet | Backend) -> Extractor:
    """Every non-border cell of the KP2D model (score > 0, no NMS), as in the protocol; any
    backend (a KeypointNet runs as eager fp32 PyTorch)."""
    frontend = KeypointExtractor(model, ExtractorConfig(top_k=None, score_threshold=0.0))

    def extract(image: np.ndarray) -> MethodFeatures:
        kpts, scores, desc = frontend.extract(image).numpy()
        return MethodFeatures(kpts.astype(np.float64), scores, desc, 'l2')

    return extract


def _from_opencv(detector: cv2.Feature2D, norm: str) -> Extractor:
    def extract(image: np.ndarray) -> MethodFeatures:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        kps, desc = detector.detectAndCompute(gray, None)
        if desc is None or not kps:
            width = detector.descriptorSize() if norm == 'hamming' else 128
            return MethodFeatures(np.zeros((0, 2)), np.zeros(0), np.zeros((0, width)), norm)
        xy = np.array([k.pt for k in kps], np.float64)
        scores = np.array([k.response for k in kps], np.float64)
        return MethodFeatures(xy, scores, desc, norm)

    return extract


def opencv_extractor(name: str) -> Extractor:
    """'orb', 'sift' or 'akaze' with the thresholds documented above."""
    if name == 'orb':
        return _from_opencv(
            cv2.ORB_create(nfeatures=MAX_BASELINE_FEATURES, fastThreshold=ORB_FAST_THRESHOLD),
            'hamming',
        )
    if name == 'sift':
        return _from_opencv(
            cv2.SIFT_create(
                nfeatures=MAX_BASELINE_FEATURES, contrastThreshold=SIFT_CONTRAST_THRESHOLD
            ),
            'l2',
        )
    if name == 'akaze':
        return _from_opencv(cv2.AKAZE_create(threshold=AKAZE_THRESHOLD), 'hamming')
    raise ValueError(f"unknown baseline {name!r}; choose from 'orb', 'sift', 'akaze'")
