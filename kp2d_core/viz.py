"""Drawing helpers for people to look at keypoints and matches (uint8 BGR images, OpenCV)."""

from __future__ import annotations

import cv2
import numpy as np

INLIER_BGR = (80, 220, 60)
OUTLIER_BGR = (60, 60, 230)
KEYPOINT_BGR = (0, 200, 255)


def to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Copy of a gray / BGR / BGRA image (uint8, uint16 or float in [0, 1]) as (H, W, 3) uint8."""
    if image.dtype == np.uint16:
        image = (image / 257.0).round()
    elif image.dtype.kind == 'f':
        image = np.clip(image, 0.0, 1.0) * 255.0
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    return image[..., :3].copy()  # always a writable copy, even of a read-only buffer


def _pt(xy: np.ndarray) -> tuple[int, int]:
    return int(round(float(xy[0]))), int(round(float(xy[1])))


def draw_keypoints(
    image: np.ndarray, keypoints: np.ndarray, color: tuple[int, int, int] = KEYPOINT_BGR
) -> np.ndarray:
    """Circle each (N, 2) pixel keypoint on a copy of ``image``; returns (H, W, 3) uint8 BGR."""
    canvas = to_bgr_uint8(image)
    for xy in np.asarray(keypoints, dtype=np.float64).reshape(-1, 2):
        cv2.circle(canvas, _pt(xy), 2, color, -1, lineType=cv2.LINE_AA)
    return canvas


def draw_matches(
    image0: np.ndarray,
    image1: np.ndarray,
    pts0: np.ndarray,
    pts1: np.ndarray,
    inliers: np.ndarray | None = None,
    max_lines: int = 300,
) -> np.ndarray:
    """Side-by-side canvas with lines between matched points.

    Args:
        image0, image1: the two views (any format :func:`to_bgr_uint8` accepts).
        pts0, pts1: (M, 2) matched pixel coordinates in each view.
        inliers: (M,) bool; inliers are green, outliers red (None: all green).
        max_lines: draw at most this many matches (evenly subsampled) to keep it readable.

    Returns:
        (max(H0, H1), W0 + W1, 3) uint8 BGR image.
    """
    left, right = to_bgr_uint8(image0), to_bgr_uint8(image1)
    height = max(left.shape[0], right.shape[0])
    canvas = np.zeros((height, left.shape[1] + right.shape[1], 3), np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] :] = right
    pts1 = np.asarray(pts1, np.float64).reshape(-1, 2) + [left.shape[1], 0.0]
    return _draw_lines(canvas, pts0, pts1, inliers, max_lines)


def draw_flow(
    image: np.ndarray,
    pts_from: np.ndarray,
    pts_to: np.ndarray,
    inliers: np.ndarray | None = None,
    max_lines: int = 300,
) -> np.ndarray:
    """Copy of ``image`` with a line from each (M, 2) ``pts_from`` to its ``pts_to``.

    Shows where matched points moved (e.g. keyframe to current frame) in one image; colours
    and subsampling as in :func:`draw_matches`. Returns (H, W, 3) uint8 BGR.
    """
    return _draw_lines(to_bgr_uint8(image), pts_from, pts_to, inliers, max_lines)


def _draw_lines(canvas, pts0, pts1, inliers, max_lines) -> np.ndarray:
    """Draw lines and end points in place; inliers green, outliers red."""
    pts0 = np.asarray(pts0, np.float64).reshape(-1, 2)
    pts1 = np.asarray(pts1, np.float64).reshape(-1, 2)
    inliers = np.ones(len(pts0), bool) if inliers is None else np.asarray(inliers, bool)
    step = max(1, int(np.ceil(len(pts0) / max(max_lines, 1))))
    for i in range(0, len(pts0), step):
        color = INLIER_BGR if inliers[i] else OUTLIER_BGR
        cv2.line(canvas, _pt(pts0[i]), _pt(pts1[i]), color, 1, lineType=cv2.LINE_AA)
        cv2.circle(canvas, _pt(pts0[i]), 2, color, -1, lineType=cv2.LINE_AA)
        cv2.circle(canvas, _pt(pts1[i]), 2, color, -1, lineType=cv2.LINE_AA)
    return canvas


def put_text(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """Write lines of text at the top-left of ``image`` in place (white on a dark outline)."""
    for row, text in enumerate(lines):
        origin = (8, 20 + 20 * row)
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    return image


def age_colour(age: int, full_age: int = 30) -> tuple[int, int, int]:
    """BGR colour of a track of ``age`` frames: blue when new, through green, red at
    ``full_age`` frames and beyond."""
    level = np.uint8(round(255 * min(max(age, 0), full_age) / full_age))
    bgr = cv2.applyColorMap(np.array([[level]], np.uint8), cv2.COLORMAP_JET)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


class TrackTrails:
    """The last ``length`` positions of each live track, to draw as trails."""

    def __init__(self, length: int = 12) -> None:
        self.length = length
        self.trails: dict[int, list[tuple[float, float]]] = {}

    def update(self, ids: np.ndarray, xy: np.ndarray) -> None:
        """Record one frame's tracks: (N,) ids and (N, 2) pixel positions; ended tracks go."""
        trails = {}
        for track_id, point in zip(ids.tolist(), np.asarray(xy, np.float64).reshape(-1, 2)):
            trail = self.trails.get(track_id, [])
            trails[track_id] = ([*trail, (float(point[0]), float(point[1]))])[-self.length :]
        self.trails = trails

    def reset(self) -> None:
        self.trails = {}

    def draw(self, image: np.ndarray, ages: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Copy of ``image`` with each track's trail coloured by its age (see age_colour)."""
        canvas = to_bgr_uint8(image)
        for track_id, age in zip(ids.tolist(), np.asarray(ages).tolist()):
            trail = self.trails.get(track_id)
            if not trail:
                continue
            colour = age_colour(age)
            points = np.rint(np.asarray(trail)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(canvas, [points], False, colour, 1, lineType=cv2.LINE_AA)
            cv2.circle(canvas, _pt(trail[-1]), 2, colour, -1, lineType=cv2.LINE_AA)
        return canvas
