"""Photometric alignment of matched keypoints: each match is moved to where the two images
agree, pixel by pixel, around the keyframe's keypoint, and gets the noise that agreement
leaves.

A matched keypoint of the current frame sits where the detector found it, up to a pixel from
the point its keyframe partner shows (the bundled model's localisation). Alignment keeps the
keyframe's keypoint and finds its partner in the current frame by image intensities: the
current image is resampled into the keyframe's pixels through the consensus homography and
the lens (:mod:`kp2d_core.geometry.lens_warp`), so a patch around the keypoint looks as it does in
the keyframe up to what the plane does not explain (parallax, noise, blur); its brightness is
matched to the keyframe's, and pyramidal Lucas-Kanade (OpenCV) refines the offset that remains. The
aligned point is mapped back into the current frame exactly.

Where the light changed across the image between the two frames (a shadow moved: the ratio of
their local brightness varies by more than :data:`SHADING_SPREAD`), one gain for the whole
image leaves each patch brighter on one side than its keyframe partner, and Lucas-Kanade
moves the point toward the light, the same way on every point the shadow crosses. There both
images are divided by their local brightness first (:func:`normalised_image`), so a light that
varies slowly cancels. Elsewhere they are not: dividing gives the dark parts of an image the
weight of the bright ones, and under sensor noise (a dim scene) the dark parts have less to
say. A point the alignment does not settle
(lost, or moved further than :data:`MAX_SHIFT_PX`) keeps its match.

The keyframe's own corners (Shi-Tomasi, away from its keypoints) are aligned into each frame
the same way, through the same resampled image: correspondences with no match and no track
behind them, which the homography's refinement weighs beside the matches
(:func:`kp2d_core.geometry.refinement.refined_result`).

An aligned point is as certain as its patch's texture: its covariance is the inverse of the
patch's structure tensor (summed gradient outer products), scaled so that the median patch
(of the matches and corners that settled) gives :data:`ALIGNED_SIGMA_PX`; along an edge it
is large, across it small. The keyframe's point carries no error (it defines the
correspondence).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np

from kp2d_core.geometry.camera import CameraModel
from kp2d_core.geometry.image_points import ImagePoints
from kp2d_core.geometry.lens_warp import frame_map, resample_into

__all__ = [
    'Alignment',
    'KeyImage',
    'align_matches',
    'aligned_points',
    'keyframe_corners',
    'normalised_image',
    'shading_spread',
]

WINDOW = (21, 21)
SMOOTH_SIGMA = 0.7  # px; both images, so interpolation and noise bias the optimum less
LEVELS = 1  # pyramid levels above the image (offsets up to ~2 x the window's half)
MAX_SHIFT_PX = 2.0  # further than this from the match: the alignment is not trusted
CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01)
ALIGNED_SIGMA_PX = 0.1  # error of an aligned point with a median-textured patch (raw px)
DETECTED_SIGMA_PX = 1.0  # error of a detected keypoint (raw px), as the refinement assumes
MIN_TEXTURE = 1e-3  # share of the median patch's texture below which a direction is flat
CORNER_QUALITY = 0.01  # Shi-Tomasi: weakest corner kept, share of the strongest's response
CORNER_SPACING_PX = 10.0  # no two of a keyframe's corners closer (raw px)
CORNER_CLEARANCE_PX = 5.0  # nor a corner this close to a keypoint (the same patch, twice)
SHADING_SIGMA_PX = 64.0  # scale of the local brightness a change of light is measured at
SHADING_SPREAD = 0.03  # sd of the log local brightness ratio above which images are normalised
# (per frame without a shadow, 99th percentile: night 0.007, fast motion 0.023; a shadow band
# that moved a few pixels since the keyframe: 0.03-0.05)
NORMALISED_SIGMA_PX = 8.0  # the local brightness a normalised image is divided by
NORMALISED_LEVEL = 128.0  # a normalised image's grey level where it equals its local brightness
MIN_BRIGHTNESS = 2.0  # grey level: darker local brightness is taken as this (covered, black)


@dataclass(frozen=True)
class Alignment:
    """Matches after :func:`align_matches`.

    Attributes:
        cur_raw: (M, 2) float64 current-frame points, raw pixels (aligned where ``ok``).
        ok: (M,) bool, aligned.
        key_noise, cur_noise: (M, 2, 2) square roots of each point's covariance in raw
            pixels: 0 for an aligned match's keyframe point, the patch's for its current
            point, :data:`DETECTED_SIGMA_PX` (isotropic) for both points of the others.
        corners_key, corners_cur: (C, 2) float64 the keyframe's corners that settled and
            where they are in the current frame, raw pixels.
        corners_noise: (C, 2, 2) their current points' noise, as an aligned match's.
        shaded: the light changed across the image: aligned on normalised images.
    """

    cur_raw: np.ndarray
    ok: np.ndarray
    key_noise: np.ndarray
    cur_noise: np.ndarray
    corners_key: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    corners_cur: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    corners_noise: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 2)))
    shaded: bool = False


def match_brightness(image: np.ndarray, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(H, W) uint8 ``image`` with its mean and contrast over ``valid`` set to ``target``'s (an
    exposure change between the frames would otherwise shift Lucas-Kanade's optimum); the
    statistics come from every fourth pixel in both directions."""
    sample = valid[::4, ::4]
    if sample.sum() < 16:
        return image
    src = image[::4, ::4][sample].astype(np.float32)
    dst = target[::4, ::4][sample].astype(np.float32)
    gain = float(dst.std()) / max(float(src.std()), 1e-6)
    offset = float(dst.mean()) - gain * float(src.mean())
    return cv2.addWeighted(image, gain, image, 0.0, offset)


def local_brightness(image: np.ndarray, valid: np.ndarray | None, sigma: float) -> np.ndarray:
    """(H, W) float32 Gaussian-weighted mean (``sigma`` pixels) of the (H, W) image over its
    ``valid`` pixels (every pixel where None)."""
    values = image.astype(np.float32)
    if valid is None:
        return cv2.GaussianBlur(values, (0, 0), sigma)
    weights = valid.astype(np.float32)
    total = cv2.GaussianBlur(values * weights, (0, 0), sigma)
    return total / np.maximum(cv2.GaussianBlur(weights, (0, 0), sigma), 1e-3)


def normalised_image(image: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(H, W) uint8 image divided by its local brightness (:data:`NORMALISED_SIGMA_PX`, over
    ``valid`` pixels), :data:`NORMALISED_LEVEL` where they are equal: a gain that varies
    slowly across the image cancels."""
    mean = local_brightness(image, valid, NORMALISED_SIGMA_PX)
    ratio = image.astype(np.float32) / np.maximum(mean, MIN_BRIGHTNESS)
    return np.clip(NORMALISED_LEVEL * ratio, 0, 255).astype(np.uint8)


def shading_spread(image: np.ndarray, target: np.ndarray, valid: np.ndarray) -> float:
    """How much the light changed across the image between two (H, W) uint8 images of the
    same view: the sd of the log ratio of their local brightness (:data:`SHADING_SIGMA_PX`)
    over ``valid`` pixels, on every fourth pixel in both directions; 0 for one gain."""
    step = 4
    sample = valid[::step, ::step]
    sigma = SHADING_SIGMA_PX / step
    inside = sample & (cv2.GaussianBlur(sample.astype(np.float32), (0, 0), sigma) > 0.5)
    if inside.sum() < 16:
        return 0.0
    key_light, cur_light = (
        np.maximum(local_brightness(a[::step, ::step], sample, sigma), 1.0)
        for a in (target, image)
    )
    return float(np.std(np.log(key_light / cur_light)[inside]))


def smoothed(gray: np.ndarray) -> np.ndarray:
    """(H, W) uint8 image under a Gaussian of :data:`SMOOTH_SIGMA` pixels."""
    return cv2.GaussianBlur(gray, (0, 0), SMOOTH_SIGMA)


def structure_tensors(gray: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(M, 2, 2) mean gradient outer products over the :data:`WINDOW` around each (M, 2)
    pixel of a (H, W) uint8 image (grey levels squared per pixel squared)."""
    image = gray.astype(np.float32)
    dx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    dy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    xx, xy_, yy = (cv2.blur(a, WINDOW) for a in (dx * dx, dx * dy, dy * dy))
    height, width = gray.shape[:2]
    cols = np.clip(np.rint(xy[:, 0]).astype(np.intp), 0, width - 1)
    rows = np.clip(np.rint(xy[:, 1]).astype(np.intp), 0, height - 1)
    a, b, c = xx[rows, cols], xy_[rows, cols], yy[rows, cols]
    return np.stack([np.stack([a, b], -1), np.stack([b, c], -1)], -2).astype(np.float64)


def patch_noise(tensors: np.ndarray) -> np.ndarray:
    """(M, 2, 2) structure tensors -> (M, 2, 2) square roots of the aligned points'
    covariances, raw pixels: ALIGNED_SIGMA_PX^2 x t / G with t the median of sqrt(det G)
    (the median patch's texture); a flat direction gets 1/MIN_TEXTURE of the median's."""
    if len(tensors) == 0:
        return np.zeros((0, 2, 2))
    values, vectors = np.linalg.eigh(tensors)
    typical = max(float(np.median(np.sqrt(np.maximum(values.prod(axis=1), 0.0)))), 1e-12)
    values = np.maximum(values, MIN_TEXTURE * typical)
    scales = ALIGNED_SIGMA_PX * np.sqrt(typical / values)  # (M, 2)
    return vectors @ (scales[:, :, None] * vectors.transpose(0, 2, 1))


@dataclass(frozen=True)
class KeyImage:
    """What alignment needs of a keyframe, computed once for every frame matched to it.

    Attributes:
        smooth: (H, W) uint8 keyframe image under :data:`SMOOTH_SIGMA` pixels.
        raw: (N, 2) float64 its keypoints, raw pixels.
        tensors: (N, 2, 2) the structure tensor of each keypoint's patch in ``smooth``.
        corners: (C, 2) float64 its corners to align as well (:func:`keyframe_corners`).
        corner_tensors: (C, 2, 2) their structure tensors.
    """

    smooth: np.ndarray
    raw: np.ndarray
    tensors: np.ndarray
    corners: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    corner_tensors: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 2)))

    @cached_property
    def normalised(self) -> np.ndarray:
        """(H, W) uint8 ``smooth`` divided by its local brightness (:func:`normalised_image`),
        made the first time a frame needs it."""
        return normalised_image(self.smooth)

    @classmethod
    def of(cls, gray: np.ndarray, raw: np.ndarray, corners: int = 0) -> KeyImage:
        """From the (H, W) uint8 keyframe image and its (N, 2) keypoints (raw pixels), with
        up to ``corners`` of its corners (:func:`keyframe_corners`)."""
        smooth = smoothed(gray)  # before resampling: a smooth image interpolates exactly
        raw = np.asarray(raw, np.float64).reshape(-1, 2)
        found = keyframe_corners(smooth, raw, corners)
        tensors = structure_tensors(smooth, np.concatenate([raw, found]))
        return cls(smooth, raw, tensors[: len(raw)], found, tensors[len(raw) :])


def keyframe_corners(smooth: np.ndarray, raw: np.ndarray, count: int) -> np.ndarray:
    """(C, 2) float64 up to ``count`` Shi-Tomasi corners of the (H, W) uint8 image, the
    strongest first, :data:`CORNER_SPACING_PX` apart and more than
    :data:`CORNER_CLEARANCE_PX` from each of the (N, 2) keypoints ``raw``; (0, 2) for
    ``count`` 0."""
    if count <= 0:
        return np.zeros((0, 2))
    mask = np.full(smooth.shape[:2], 255, np.uint8)
    radius = int(np.ceil(CORNER_CLEARANCE_PX))
    for x, y in np.rint(raw[np.isfinite(raw).all(axis=1)]).astype(np.intp):
        cv2.circle(mask, (int(x), int(y)), radius, 0, -1)
    found = cv2.goodFeaturesToTrack(smooth, count, CORNER_QUALITY, CORNER_SPACING_PX, mask=mask)
    return np.zeros((0, 2)) if found is None else found.reshape(-1, 2).astype(np.float64)


def _lucas_kanade(key: np.ndarray, warped: np.ndarray, key_raw, start) -> tuple:
    found, status, _ = cv2.calcOpticalFlowPyrLK(
        key,
        warped,
        key_raw.astype(np.float32).reshape(-1, 1, 2),
        start.astype(np.float32).reshape(-1, 1, 2),
        winSize=WINDOW,
        maxLevel=LEVELS,
        criteria=CRITERIA,
        flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
    )
    return found.reshape(-1, 2).astype(np.float64), status.ravel() == 1


def _settled(found, ok, aligned, cur_raw, inside, cur_hw) -> np.ndarray:
    """(M,) bool: aligned points that converged inside both images near their match."""
    ok = ok & np.isfinite(aligned).all(axis=1)
    ok &= np.linalg.norm(aligned - cur_raw, axis=1) <= MAX_SHIFT_PX
    height, width = cur_hw
    ok &= (aligned[:, 0] >= 0) & (aligned[:, 0] <= width - 1)
    ok &= (aligned[:, 1] >= 0) & (aligned[:, 1] <= height - 1)
    rows, cols = np.rint(found[:, 1]).astype(int), np.rint(found[:, 0]).astype(int)
    on_image = (rows >= 0) & (rows < inside.shape[0]) & (cols >= 0) & (cols < inside.shape[1])
    ok &= on_image
    ok[on_image] &= inside[rows[on_image], cols[on_image]]
    return ok


def align_matches(
    key: KeyImage,
    cur_gray: np.ndarray,
    camera: CameraModel | None,
    H_key_to_cur: np.ndarray,
    idx_key: np.ndarray,
    cur_raw: np.ndarray,
) -> Alignment:
    """Move each current-frame match to where the images agree around its keyframe partner,
    and find the keyframe's corners (``key.corners``) in the current frame the same way.

    Args:
        key: the keyframe's image, keypoints and corners (:meth:`KeyImage.of`).
        cur_gray: (H', W') uint8 current image.
        camera: the lens both frames share (None: raw pixels are the geometry frame).
        H_key_to_cur: (3, 3) geometry-frame homography from the keyframe to the current frame
            (the consensus of the matches).
        idx_key: (M,) the matched keyframe keypoints (indices into ``key.raw``).
        cur_raw: (M, 2) their matches in the current frame, raw pixels.

    Returns:
        :class:`Alignment` (points where it did not settle stay ``cur_raw``; corners where
        it did not settle are left out).
    """
    idx_key = np.asarray(idx_key, np.intp).ravel()
    key_raw = key.raw[idx_key]
    cur_raw = np.asarray(cur_raw, np.float64).reshape(-1, 2)
    detected = np.broadcast_to(DETECTED_SIGMA_PX * np.eye(2), (len(key_raw), 2, 2))
    if len(key_raw) == 0:
        return Alignment(cur_raw.copy(), np.zeros(0, bool), detected.copy(), detected.copy())
    warped, inside = resample_into(smoothed(cur_gray), camera, H_key_to_cur, key.smooth.shape)
    matched = match_brightness(warped, key.smooth, inside)
    shaded = shading_spread(matched, key.smooth, inside) > SHADING_SPREAD
    if shaded:
        key_view, cur_view = key.normalised, normalised_image(warped, inside)
    else:
        key_view, cur_view = key.smooth, matched
    start = frame_map(camera, np.linalg.inv(H_key_to_cur), cur_raw)  # the match, key pixels
    start = np.where(np.isfinite(start), start, key_raw)
    predicted = frame_map(camera, H_key_to_cur, key.corners)  # where the consensus puts them
    sources = np.concatenate([key_raw, key.corners])
    found, ok = _lucas_kanade(key_view, cur_view, sources, np.concatenate([start, key.corners]))
    aligned = frame_map(camera, H_key_to_cur, found)
    near = np.concatenate([cur_raw, np.where(np.isfinite(predicted), predicted, np.inf)])
    ok = _settled(found, ok, aligned, near, inside, cur_gray.shape[:2])
    tensors = np.concatenate([key.tensors[idx_key], key.corner_tensors])
    noise = np.zeros_like(tensors)
    noise[ok] = patch_noise(tensors[ok])  # the median over the points that settled
    m = len(key_raw)
    cur_noise, key_noise = detected.copy(), detected.copy()
    cur_noise[ok[:m]] = noise[:m][ok[:m]]
    key_noise[ok[:m]] = 0.0
    corners = ok[m:]
    return Alignment(
        np.where(ok[:m, None], aligned[:m], cur_raw),
        ok[:m],
        key_noise,
        cur_noise,
        key.corners[corners],
        aligned[m:][corners],
        noise[m:][corners],
        shaded,
    )


def aligned_points(
    points: ImagePoints,
    cur_gray: np.ndarray,
    key: KeyImage,
    idx_key: np.ndarray,
    idx_cur: np.ndarray,
    H_key_to_cur: np.ndarray,
) -> tuple[ImagePoints, Alignment]:
    """``points`` (the current frame's) with the matched ones, ``idx_cur``, aligned to their
    keyframe partners ``idx_key`` (:func:`align_matches`, whose result for the matches comes
    second); the others unchanged."""
    raw = points.raw.copy()
    alignment = align_matches(key, cur_gray, points.camera, H_key_to_cur, idx_key, raw[idx_cur])
    raw[idx_cur] = alignment.cur_raw
    return ImagePoints.of(raw, points.camera), alignment
