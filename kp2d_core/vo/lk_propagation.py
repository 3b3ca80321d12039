"""Points carried from one frame to the next by pyramidal Lucas-Kanade (OpenCV), checked
forward and backward, as classical VIO front-ends track between detections."""

from __future__ import annotations

import cv2
import numpy as np

WINDOW = (21, 21)
LEVELS = 3
FORWARD_BACKWARD_PX = 1.0  # tracked back, a point must land this close to where it started
CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)


def propagate(
    previous: np.ndarray, current: np.ndarray, xy: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where the (N, 2) raw pixels ``xy`` of the ``previous`` (H, W) uint8 image went in the
    ``current`` one.

    Returns:
        (N, 2) float64 positions and (N,) bool: converged both ways, back within
        FORWARD_BACKWARD_PX of the start, inside the current image. A point that fails keeps
        its old position (and False).
    """
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    if len(xy) == 0 or previous.shape != current.shape:
        return xy.copy(), np.zeros(len(xy), bool)
    params = dict(winSize=WINDOW, maxLevel=LEVELS, criteria=CRITERIA)
    start = np.ascontiguousarray(xy, np.float32).reshape(-1, 1, 2)
    ahead, ok, _ = cv2.calcOpticalFlowPyrLK(previous, current, start, None, **params)
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(current, previous, ahead, None, **params)
    moved = ahead.reshape(-1, 2).astype(np.float64)
    height, width = current.shape[:2]
    good = (ok.ravel() == 1) & (ok_back.ravel() == 1) & np.isfinite(moved).all(axis=1)
    good &= np.linalg.norm(back.reshape(-1, 2) - start.reshape(-1, 2), axis=1) < (
        FORWARD_BACKWARD_PX
    )
    good &= (moved[:, 0] >= 0) & (moved[:, 0] <= width - 1)
    good &= (moved[:, 1] >= 0) & (moved[:, 1] <= height - 1)
    return np.where(good[:, None], moved, xy), good


def brightness(gray: np.ndarray) -> float:
    """Mean grey level of every fourth pixel in both directions (an illumination jump)."""
    return float(gray[::4, ::4].mean()) if gray.size else 0.0
