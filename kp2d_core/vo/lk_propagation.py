"""Points carried from one frame to the next by pyramidal Lucas-Kanade (OpenCV), checked
forward and backward, as classical VIO front-ends track between detections.

Lucas-Kanade's window moves by a translation only; where the frame also rotates, scales or
tilts, the window's content changes shape and the tracked positions are biased (on the
hand-held benchmark sequences a median 0.17 px per frame, 1.5 px with frame drops). So the
frame's motion is estimated first, from a spread subset of the points (one homography,
RANSAC), the previous frame is warped by it, and the points are tracked from their predicted
positions in the warped frame: what is left is a small translation, which the window models
(0.04 px; docs/hybrid_tracking.md, "Lucas-Kanade guided by the frame's motion"). Where the
motion is too large for plain Lucas-Kanade to estimate it (frame drops: the view turns by
~17 deg between frames), it is estimated the same way in the previous frame warped by a
predicted motion (the last frame's), if the caller has one.
"""

from __future__ import annotations

import cv2
import numpy as np

from kp2d_core.geometry.coordinates import in_image, warp_points

WINDOW = (21, 21)
LEVELS = 3
FORWARD_BACKWARD_PX = 1.0  # tracked back, a point must land this close to where it started
CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
PYRAMID = dict(winSize=WINDOW, maxLevel=LEVELS, criteria=CRITERIA)  # every call's settings
GUIDE_POINTS = 100  # at most this many of the points (spread over the list) give the motion
GUIDE_MIN_INLIERS = 12  # fewer of them agree on one homography: Lucas-Kanade is not guided
GUIDE_MIN_SHARE = 0.3  # nor where fewer than this share of them agree
GUIDE_RANSAC_PX = 2.0


def propagate(
    previous: np.ndarray,
    current: np.ndarray,
    xy: np.ndarray,
    guided: bool = True,
    predicted: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Where the (N, 2) raw pixels ``xy`` of the ``previous`` (H, W) uint8 image went in the
    ``current`` one.

    Args:
        guided: track in the previous frame warped by the frame's motion (see the module
            docstring); without enough agreeing points, or False, plain Lucas-Kanade.
        predicted: (3, 3) homography, raw pixels, the motion expected from ``previous`` to
            ``current``: where plain Lucas-Kanade cannot estimate the frame's motion, it is
            estimated from the previous frame warped by this one (guided only).

    Returns:
        (N, 2) float64 positions and (N,) bool: converged both ways, back within
        FORWARD_BACKWARD_PX of the start, inside the current image. A point that fails keeps
        its old position (and False).
    """
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    if len(xy) == 0 or previous.shape != current.shape:
        return xy.copy(), np.zeros(len(xy), bool)
    motion = frame_motion(previous, current, xy) if guided else None
    if motion is None and guided and predicted is not None:
        motion = _motion_after(predicted, previous, current, xy)
    if motion is None:
        moved, good = track(previous, current, xy)
    else:
        start = warp_points(motion, xy)
        finite = np.isfinite(start).all(axis=1)
        warped = _warped(previous, motion)
        moved, good = track(warped, current, np.where(finite[:, None], start, xy))
        good &= finite
    return np.where(good[:, None], moved, xy), good


def _warped(image: np.ndarray, H: np.ndarray) -> np.ndarray:
    """``image`` warped by the homography ``H`` (its borders repeated)."""
    height, width = image.shape[:2]
    return cv2.warpPerspective(
        image, H, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def _motion_after(
    predicted: np.ndarray, previous: np.ndarray, current: np.ndarray, xy: np.ndarray
) -> np.ndarray | None:
    """The frame's motion estimated from ``previous`` warped by ``predicted`` (the points at
    their predicted positions): (3, 3), or None where too few agree there either."""
    if not np.isfinite(predicted).all():
        return None
    start = warp_points(predicted, xy)
    inside = np.isfinite(start).all(axis=1) & in_image(start, *current.shape[:2])
    rest = frame_motion(_warped(previous, predicted), current, start[inside])
    return None if rest is None else rest @ predicted


def frame_motion(previous: np.ndarray, current: np.ndarray, xy: np.ndarray) -> np.ndarray | None:
    """(3, 3) homography from the ``previous`` image's raw pixels to the ``current`` one's,
    from plain Lucas-Kanade on at most GUIDE_POINTS of the (N, 2) points ``xy`` (forward
    only, RANSAC), or None where too few agree."""
    step = max(1, len(xy) // GUIDE_POINTS)
    subset = np.ascontiguousarray(xy[::step][:GUIDE_POINTS], np.float32).reshape(-1, 1, 2)
    if len(subset) < GUIDE_MIN_INLIERS:
        return None
    ahead, ok, _ = cv2.calcOpticalFlowPyrLK(previous, current, subset, None, **PYRAMID)
    ok = (ok.ravel() == 1) & np.isfinite(ahead.reshape(-1, 2)).all(axis=1)
    if ok.sum() < GUIDE_MIN_INLIERS:
        return None
    H, inliers = cv2.findHomography(
        subset[ok], ahead[ok], cv2.RANSAC, GUIDE_RANSAC_PX, maxIters=500
    )
    if H is None or not np.isfinite(H).all():
        return None
    support = int(inliers.sum())
    if support < max(GUIDE_MIN_INLIERS, GUIDE_MIN_SHARE * len(subset)):
        return None
    return H


def track(
    previous: np.ndarray, current: np.ndarray, xy: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Plain Lucas-Kanade of the (N, 2) raw pixels ``xy`` of ``previous`` into ``current``
    ((H, W) uint8 each), the points' start there too, with the forward-backward check:
    ((N, 2) positions, (N,) bool: converged both ways, back within FORWARD_BACKWARD_PX,
    inside the current image)."""
    start = np.ascontiguousarray(xy, np.float32).reshape(-1, 1, 2)
    ahead, ok, _ = cv2.calcOpticalFlowPyrLK(previous, current, start, None, **PYRAMID)
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(current, previous, ahead, None, **PYRAMID)
    moved = ahead.reshape(-1, 2).astype(np.float64)
    height, width = current.shape[:2]
    good = (ok.ravel() == 1) & (ok_back.ravel() == 1) & np.isfinite(moved).all(axis=1)
    good &= np.linalg.norm(back.reshape(-1, 2) - start.reshape(-1, 2), axis=1) < (
        FORWARD_BACKWARD_PX
    )
    good &= in_image(moved, height, width)
    return moved, good


def brightness(gray: np.ndarray) -> float:
    """Mean grey level of every fourth pixel in both directions (an illumination jump)."""
    return float(gray[::4, ::4].mean()) if gray.size else 0.0
