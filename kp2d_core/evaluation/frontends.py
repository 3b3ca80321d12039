"""Classical front-ends behind the pipeline's extractor interface (``extract(image) -> Features``),
so the sequence benchmark runs ORB, AKAZE, SIFT and KLT through the same keyframes,
homographies, poses and tracks as KP2D.

* ORB, AKAZE, SIFT: OpenCV's detectors (thresholds of :mod:`.extractors`), the ``top_k``
  strongest responses. Descriptors become unit vectors whose Euclidean distance ranks pairs as
  the method's own metric does: float descriptors (SIFT) are L2-normalised, binary ones (ORB,
  AKAZE) become +-1/sqrt(bits) per bit, whose squared distance is 4 x Hamming / bits.
* KLT: ``goodFeaturesToTrack`` + pyramidal Lucas-Kanade with a forward-backward check, new
  corners detected away from the tracked ones, as classical VIO front-ends do. It has no
  descriptors; the smallest adapter gives each tracked corner a fixed random unit vector drawn
  from its track id, so matching by descriptor pairs exactly the points KLT tracked (the
  pipeline runs it with a descriptor gate, :data:`KLT_MAX_DISTANCE`).
"""

from __future__ import annotations

import cv2
import numpy as np

from kp2d_core.evaluation.extractors import opencv_extractor
from kp2d_core.inference.features import Features
from kp2d_core.model.descriptors import unit_rows

KLT_DIM = 64
KLT_MAX_DISTANCE = 0.3  # identical ids: 0; different ids: ~1.41 +- 0.13 at 64 dims
KLT_WINDOW = (21, 21)
KLT_LEVELS = 3
KLT_BACK_PX = 1.0  # forward-backward check
KLT_MIN_DISTANCE = 10  # px between corners


def _features(xy: np.ndarray, scores: np.ndarray, desc: np.ndarray, hw) -> Features:
    order = np.argsort(-scores, kind='stable')
    return Features(
        np.asarray(xy[order], np.float32),
        np.asarray(scores[order], np.float32),
        np.asarray(desc[order], np.float32),
        (int(hw[0]), int(hw[1])),
    )


def unit_descriptors(descriptors: np.ndarray, norm: str) -> np.ndarray:
    """(N, D') unit vectors ranking pairs like the method's own distance (see module doc)."""
    if norm == 'hamming':
        bits = np.unpackbits(np.ascontiguousarray(descriptors, np.uint8), axis=1)
        return (2.0 * bits.astype(np.float32) - 1.0) / np.sqrt(bits.shape[1])
    return unit_rows(descriptors)


class ClassicalExtractor:
    """ORB, AKAZE or SIFT as a pipeline extractor (``extract(image) -> Features``)."""

    def __init__(self, name: str, top_k: int = 1000) -> None:
        self.name, self.top_k = name, top_k
        self._detect = opencv_extractor(name)

    def extract(self, image: np.ndarray) -> Features:
        found = self._detect(_uint8(image))
        keep = np.argsort(-found.scores, kind='stable')[: self.top_k]
        desc = unit_descriptors(found.descriptors[keep], found.norm)
        return _features(found.keypoints[keep], found.scores[keep], desc, image.shape[:2])


class KltExtractor:
    """Lucas-Kanade tracking of Shi-Tomasi corners as a pipeline extractor (see module doc)."""

    def __init__(self, max_corners: int = 1000, seed: int = 0) -> None:
        self.max_corners, self.seed = max_corners, seed
        self.reset()

    def reset(self) -> None:
        """Forget the previous image and its corners (a new sequence starts)."""
        self.previous: np.ndarray | None = None
        self.points = np.zeros((0, 2), np.float32)
        self.ids = np.zeros(0, np.int64)
        self.next_id = 0

    def extract(self, image: np.ndarray) -> Features:
        gray = cv2.cvtColor(_uint8(image), cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        gray = _uint8(gray)
        if self.previous is not None and len(self.points):
            self._track(gray)
        self._detect(gray)
        self.previous = gray
        scores = np.ones(len(self.points), np.float32)  # KLT has no score: keep the order
        scores -= np.arange(len(self.points), dtype=np.float32) * 1e-6
        return _features(self.points.astype(np.float64), scores, self._codes(), gray.shape)

    def _track(self, gray: np.ndarray) -> None:
        params = dict(winSize=KLT_WINDOW, maxLevel=KLT_LEVELS)
        p0 = self.points.reshape(-1, 1, 2)
        p1, ok, _ = cv2.calcOpticalFlowPyrLK(self.previous, gray, p0, None, **params)
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(gray, self.previous, p1, None, **params)
        height, width = gray.shape
        xy = p1.reshape(-1, 2)
        good = (ok.ravel() == 1) & (ok_back.ravel() == 1)
        good &= np.linalg.norm(back.reshape(-1, 2) - self.points, axis=1) < KLT_BACK_PX
        good &= (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
        self.points, self.ids = xy[good], self.ids[good]

    def _detect(self, gray: np.ndarray) -> None:
        room = self.max_corners - len(self.points)
        if room <= 0:
            return
        mask = np.full(gray.shape, 255, np.uint8)
        for x, y in np.rint(self.points).astype(int):
            cv2.circle(mask, (int(x), int(y)), KLT_MIN_DISTANCE, 0, -1)
        corners = cv2.goodFeaturesToTrack(gray, room, 0.01, KLT_MIN_DISTANCE, mask=mask)
        if corners is None:
            return
        corners = corners.reshape(-1, 2).astype(np.float32)
        new_ids = np.arange(self.next_id, self.next_id + len(corners))
        self.next_id += len(corners)
        self.points = np.concatenate([self.points, corners])
        self.ids = np.concatenate([self.ids, new_ids])

    def _codes(self) -> np.ndarray:
        """A fixed random unit vector per track id (the same id: the same vector)."""
        codes = np.empty((len(self.ids), KLT_DIM), np.float32)
        for row, track_id in enumerate(self.ids.tolist()):
            rng = np.random.default_rng([self.seed, track_id])
            codes[row] = rng.standard_normal(KLT_DIM)
        return codes / np.linalg.norm(codes, axis=1, keepdims=True)


def _uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image / 257.0).round().astype(np.uint8)
    return (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)
