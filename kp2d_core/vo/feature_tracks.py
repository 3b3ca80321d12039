"""Persistent feature tracks: the same physical point under the same id from frame to frame.

What VIO and SLAM back-ends consume (VINS-Fusion, OpenVINS-style filters, bundle adjusters).
Each frame's keypoints are matched against the previous frame's *tracked* points: mutual
nearest neighbours in descriptor space, a descriptor-distance gate, then geometric
verification against the frame-to-frame motion (a fundamental matrix fitted with MAGSAC++ on
the geometry frame's pixels; a homography when fewer than 8 matches remain). A verified
match continues its track (same id, age + 1); unmatched tracks end. New tracks start from
the best-scored remaining keypoints that keep ``min_distance_px`` from every live track
(longer tracks keep their place first, as VIO front-ends do), up to ``max_tracks``. A track
without a verified match gets a second chance at the unclaimed keypoint nearest to where the
frame-to-frame homography predicts it (guided matching, within ``max_epipolar_px`` and the
descriptor gate). Ids are uint64, increasing, and never reused by one tracker, across resets
included. A motion that too few matches verify (fewer than ``min_verified``, or a fifth of the
matches) is chance, not a motion: a homography fitted to random matches between unrelated
images verifies 4-5 of 100; then every track ends and new ids start, rather than a few ids
moving onto other points. New tracks need texture (``min_texture``): a black frame starts
none.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kp2d_core.geometry.coordinates import warp_points
from kp2d_core.geometry.homography import verify_motion
from kp2d_core.geometry.image_points import ImagePoints
from kp2d_core.inference.features import Features
from kp2d_core.inference.matching import match_descriptors
from kp2d_core.model.descriptors import distance_from_cosine
from kp2d_core.vo.photometric_alignment import structure_tensors

MIN_VERIFIED_SHARE = 0.2  # of the descriptor matches (random matches verify about 5 %)


@dataclass(frozen=True)
class TrackConfig:
    """Track matching and spreading settings."""

    max_tracks: int = 300  # live tracks at most (0: tracking off)
    min_distance_px: float = 12.0  # no two tracks closer than this (raw pixels); 0 = off
    max_descriptor_distance: float = 1.0  # descriptor gate in (0, 2]
    max_epipolar_px: float = 2.0  # geometric verification threshold (geometry-frame px)
    max_parallax_px: float = 16.0  # off-homography motion allowed between two frames (px)
    min_verified: int = 12  # fewer verified matches: no motion is supported, every track ends
    min_texture: float = 0.25  # new tracks need this much texture (grey levels^2 / px^2)

    def __post_init__(self) -> None:
        if not 0 <= self.max_tracks <= 100_000:
            raise ValueError(f'max_tracks must be in [0, 100000], got {self.max_tracks}')
        if not 0.0 <= self.min_distance_px <= 1000.0:
            raise ValueError(f'min_distance_px must be in [0, 1000], got {self.min_distance_px}')
        if not 0.0 < self.max_descriptor_distance <= 2.0:
            raise ValueError(
                f'max_descriptor_distance must be in (0, 2], got {self.max_descriptor_distance}'
            )
        if not 0.0 < self.max_epipolar_px <= 100.0:
            raise ValueError(f'max_epipolar_px must be in (0, 100], got {self.max_epipolar_px}')
        if not 0.0 <= self.max_parallax_px <= 1000.0:
            raise ValueError(f'max_parallax_px must be in [0, 1000], got {self.max_parallax_px}')
        if not 4 <= self.min_verified <= 100_000:
            raise ValueError(f'min_verified must be in [4, 100000], got {self.min_verified}')
        if not 0.0 <= self.min_texture <= 1e6:
            raise ValueError(f'min_texture must be in [0, 1e6], got {self.min_texture}')


@dataclass(frozen=True)
class Tracks:
    """The live tracks of one frame (N tracks, continued ones first, then new ones).

    Attributes:
        ids: (N,) uint64 track ids.
        ages: (N,) int64 frames since the track started (0 for a new track).
        xy: (N, 2) float64 positions in raw image pixels.
        normalized: (N, 2) float64 undistorted normalised coordinates, or None without a camera.
        velocity: (N, 2) float64 image velocity in raw pixels per second (0 for new tracks).
        velocity_normalized: (N, 2) float64 velocity of ``normalized`` per second, or None.
        scores: (N,) float32 keypoint scores.
        indices: (N,) int64 index of each track's keypoint in the frame's Features.
    """

    ids: np.ndarray
    ages: np.ndarray
    xy: np.ndarray
    normalized: np.ndarray | None
    velocity: np.ndarray
    velocity_normalized: np.ndarray | None
    scores: np.ndarray
    indices: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def continued(self) -> np.ndarray:
        """(N,) bool: the track existed in the previous frame."""
        return self.ages > 0


@dataclass
class _State:
    tracks: Tracks
    descriptors: np.ndarray  # (N, D)
    pixels: np.ndarray  # (N, 2) geometry-frame pixels
    stamp_ns: int


class FeatureTracker:
    """Feed :meth:`update` one frame at a time; see the module docstring."""

    def __init__(self, cfg: TrackConfig | None = None) -> None:
        self.cfg = cfg or TrackConfig()
        self.next_id = 0
        self.state: _State | None = None

    def reset(self) -> None:
        """End every track (ids keep increasing: a reset never reuses one)."""
        self.state = None

    def update(self, features: Features, points: ImagePoints, stamp_ns: int) -> Tracks:
        """Continue, end and start tracks with one frame's keypoints.

        Args:
            features: the frame's keypoints (descriptors used for matching).
            points: the same keypoints with their camera (``ImagePoints.of``).
            stamp_ns: the frame's stamp (ns); velocities need increasing stamps.
        """
        previous = self.state
        prev_idx = cur_idx = np.zeros(0, np.int64)
        if previous is not None and len(previous.tracks) and len(features):
            prev_idx, cur_idx = self._continue(previous, features, points)
            ages = previous.tracks.ages[prev_idx]
            keep = _spread(
                points.raw[cur_idx], ages, features.image_size, self.cfg.min_distance_px
            )
            prev_idx, cur_idx = prev_idx[keep], cur_idx[keep]
        new_idx = self._new_points(features, points, cur_idx)
        tracks = self._assemble(previous, features, points, stamp_ns, prev_idx, cur_idx, new_idx)
        self.state = _State(
            tracks,
            features.descriptors[tracks.indices],
            points.pixels[tracks.indices],
            int(stamp_ns),
        )
        return tracks

    def _continue(
        self, previous: _State, features: Features, points: ImagePoints
    ) -> tuple[np.ndarray, np.ndarray]:
        """(previous track index, current keypoint index) of verified matches."""
        cfg = self.cfg
        descriptors = features.descriptors
        matches = match_descriptors(
            previous.descriptors,
            descriptors,
            mutual=True,
            max_distance=cfg.max_descriptor_distance,
        )
        prev_idx, cur_idx = matches.indices[:, 0], matches.indices[:, 1]
        prev_px, cur_px = previous.pixels[prev_idx], points.pixels[cur_idx]
        inliers, H = verify_motion(prev_px, cur_px, cfg.max_epipolar_px, cfg.max_parallax_px)
        if inliers.sum() < max(cfg.min_verified, MIN_VERIFIED_SHARE * len(prev_idx)):
            none = np.zeros(0, np.int64)  # a motion this few matches support is chance:
            return none, none  # every track ends rather than one moving to another point
        prev_idx, cur_idx = prev_idx[inliers], cur_idx[inliers]
        if H is None:
            return prev_idx, cur_idx
        extra_prev, extra_cur = self._guided(previous, descriptors, points, prev_idx, cur_idx, H)
        return np.concatenate([prev_idx, extra_prev]), np.concatenate([cur_idx, extra_cur])

    def _guided(self, previous, descriptors, points, prev_idx, cur_idx, H):
        """Second chance for tracks without a verified match (guided matching): the unclaimed
        keypoint nearest to the frame-to-frame homography's prediction, when it is within
        ``max_epipolar_px`` of it and passes the descriptor gate (one keypoint per track)."""
        lost = np.setdiff1d(np.arange(len(previous.tracks)), prev_idx)
        free = np.setdiff1d(np.arange(len(points.pixels)), cur_idx)
        none = np.zeros(0, np.int64)
        if len(lost) == 0 or len(free) == 0:
            return none, none
        predicted = warp_points(H, previous.pixels[lost])
        rows, chosen = claim_nearest(
            predicted,
            points.pixels[free],
            self.cfg.max_epipolar_px,
            (previous.descriptors[lost], descriptors[free]),
            self.cfg.max_descriptor_distance,
        )
        return lost[rows], free[chosen]

    def _new_points(
        self, features: Features, points: ImagePoints, taken: np.ndarray
    ) -> np.ndarray:
        """Indices of keypoints that start new tracks (best score first, spread out)."""
        room = self.cfg.max_tracks - len(taken)
        if room <= 0:
            return np.zeros(0, np.int64)
        free = np.ones(len(features), bool)
        free[taken] = False
        if features.gray is not None and self.cfg.min_texture > 0:
            free &= texture(features.gray, points.raw) >= self.cfg.min_texture
        candidates = np.flatnonzero(free)  # Features are sorted by decreasing score
        return fill_spread(
            points.raw, taken, candidates, features.image_size, self.cfg.min_distance_px, room
        )

    def _assemble(self, previous, features, points, stamp_ns, prev_idx, cur_idx, new_idx):
        indices = np.concatenate([cur_idx, new_idx]).astype(np.int64)
        count_new = len(new_idx)
        new_ids = np.arange(self.next_id, self.next_id + count_new, dtype=np.uint64)
        self.next_id += count_new
        old = previous.tracks if previous is not None else None
        ids = np.concatenate([old.ids[prev_idx] if old else np.zeros(0, np.uint64), new_ids])
        ages = np.concatenate(
            [
                old.ages[prev_idx] + 1 if old else np.zeros(0, np.int64),
                np.zeros(count_new, np.int64),
            ]
        )
        xy = points.raw[indices]
        dt = (int(stamp_ns) - previous.stamp_ns) * 1e-9 if previous is not None else 0.0
        velocity = np.zeros_like(xy)
        if dt > 0 and len(prev_idx):
            velocity[: len(prev_idx)] = (xy[: len(prev_idx)] - old.xy[prev_idx]) / dt
        normalized = velocity_normalized = None
        if points.normalized is not None:
            normalized = points.normalized[indices]
            velocity_normalized = np.zeros_like(normalized)
            if dt > 0 and len(prev_idx) and old.normalized is not None:
                moved = normalized[: len(prev_idx)] - old.normalized[prev_idx]
                velocity_normalized[: len(prev_idx)] = moved / dt
        scores = features.scores[indices].astype(np.float32)
        return Tracks(ids, ages, xy, normalized, velocity, velocity_normalized, scores, indices)


def texture(gray: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(N,) the smaller eigenvalue of the structure tensor around each (N, 2) raw pixel of a
    (H, W) uint8 image (grey levels squared per pixel squared): 0 on a flat patch (a black
    frame), about 0.5 for sensor noise of 2 grey levels, tens to thousands on real texture."""
    if len(xy) == 0:
        return np.zeros(0)
    return np.linalg.eigvalsh(structure_tensors(gray, xy))[:, 0]


def _spread(
    xy: np.ndarray, ages: np.ndarray, image_hw: tuple[int, int], min_distance: float
) -> np.ndarray:
    """(M,) bool: keep continued tracks oldest first, dropping any too close to a kept one."""
    if min_distance <= 0 or len(xy) == 0:
        return np.ones(len(xy), bool)
    order = np.argsort(-ages, kind='stable')
    kept = fill_spread(xy, np.zeros(0, np.int64), order, image_hw, min_distance, len(xy))
    keep = np.zeros(len(xy), bool)
    keep[kept] = True
    return keep


def fill_spread(
    xy: np.ndarray,
    taken: np.ndarray,
    candidates: np.ndarray,
    image_hw: tuple[int, int],
    min_distance: float,
    room: int,
) -> np.ndarray:
    """Candidates, in order, that keep ``min_distance`` from ``taken`` and each other."""
    if min_distance <= 0:
        return candidates[:room].astype(np.int64)
    height, width = image_hw
    mask = np.full((height, width), 255, np.uint8)  # 255 = free
    radius = max(int(np.ceil(min_distance)) - 1, 0)
    for x, y in np.rint(xy[taken]).astype(int).tolist():
        cv2.circle(mask, (x, y), radius, 0, -1)
    chosen = []
    spots = np.rint(xy[candidates]).astype(int).tolist()
    for index, (x, y) in zip(candidates.tolist(), spots):
        if not (0 <= x < width and 0 <= y < height) or mask[y, x] == 0:
            continue
        chosen.append(index)
        if len(chosen) >= room:
            break
        cv2.circle(mask, (x, y), radius, 0, -1)
    return np.asarray(chosen, np.int64)


def nearest_within(
    queries: np.ndarray, points: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest of ``points`` within ``radius`` of each query or -1, distance).

    Points are bucketed in a grid of ``radius`` cells, so only the 3 x 3 cells around each
    query are searched.
    """
    cells: dict[tuple[int, int], list[int]] = {}
    keys = np.floor(points / radius).astype(int).tolist()
    for index, key in enumerate(keys):
        cells.setdefault((key[0], key[1]), []).append(index)
    nearest = np.full(len(queries), -1, np.int64)
    gaps = np.full(len(queries), np.inf)
    finite = np.isfinite(queries).all(axis=1)
    for row in np.flatnonzero(finite).tolist():
        qx, qy = queries[row]
        cx, cy = int(np.floor(qx / radius)), int(np.floor(qy / radius))
        near = [
            i for dx in (-1, 0, 1) for dy in (-1, 0, 1) for i in cells.get((cx + dx, cy + dy), ())
        ]
        if not near:
            continue
        distances = np.hypot(points[near, 0] - qx, points[near, 1] - qy)
        best = int(np.argmin(distances))
        if distances[best] <= radius:
            nearest[row], gaps[row] = near[best], distances[best]
    return nearest, gaps


def claim_nearest(
    queries: np.ndarray,
    points: np.ndarray,
    radius: float,
    descriptors: tuple[np.ndarray, np.ndarray],
    max_distance: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (query row, point row), each query with the nearest of ``points`` within
    ``radius`` when their descriptors (``descriptors``: the queries' (N, D) and the points'
    (M, D) unit rows) are within ``max_distance``; a point claimed twice goes to the closer
    query. Returns two (K,) int64 arrays."""
    nearest, gap = nearest_within(queries, points, radius)
    close = np.flatnonzero(nearest >= 0)
    cosine = (descriptors[0][close] * descriptors[1][nearest[close]]).sum(axis=1)
    close = close[distance_from_cosine(cosine) <= max_distance]
    order = close[np.argsort(gap[close], kind='stable')]
    _, first = np.unique(nearest[order], return_index=True)
    rows = order[first]
    return rows.astype(np.int64), nearest[rows].astype(np.int64)
