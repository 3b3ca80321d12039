"""The camera model: intrinsics, lens distortion and the rectified frame, validated once.

It follows ``sensor_msgs/CameraInfo`` (and OpenCV): ``K`` the (3, 3) camera matrix of the raw
image, ``D`` the distortion coefficients of ``distortion_model``, ``R`` the rectification
rotation and ``P`` the camera matrix of the rectified image (what image_proc's rectify node
produces). Supported models:

* ``plumb_bob`` and ``rational_polynomial``: OpenCV's pinhole model, 5, 8, 12 or 14
  coefficients (k1, k2, p1, p2[, k3[, k4, k5, k6[, s1..s4[, tx, ty]]]]);
* ``equidistant``: OpenCV's fisheye model, 4 coefficients (k1..k4).

Keypoints stay in raw image pixels; geometry (homographies, poses) uses :meth:`rectify` or
:meth:`normalize`. All-zero coefficients mean an undistorted (already rectified) stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from kp2d_core.checks import check_shape

DISTORTION_LENGTHS = {
    'plumb_bob': (5, 8, 12, 14),
    'rational_polynomial': (5, 8, 12, 14),
    'equidistant': (4,),
}
MAX_COEFFICIENT = 1e3  # |d_i| above this is not a lens
MAX_SKEW = 0.1  # |K[0, 1]| / fx
ROUND_TRIP_PX = 0.5  # undistort then distort the image border: must come back this close
ASPECT_TOLERANCE = 0.01  # relative difference of two scale factors still called a resize
BORDER_SAMPLES = 16  # points per image side in the round-trip check
_ITERATIONS = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-9)


def camera_matrix(
    k: np.ndarray | Sequence[float], image_hw: tuple[int, int] | None = None, name: str = 'K'
) -> np.ndarray:
    """(3, 3) intrinsics from 9 row-major values (CameraInfo.k), validated as a camera.

    A camera matrix is upper triangular with K[2] = (0, 0, 1), finite, positive focal lengths
    of similar size, and a bounded skew; with the image size, the focal lengths must be within
    [1/20, 100] times the image's longer side and the principal point near the image.

    Raises:
        ValueError: naming what is wrong.
    """
    K = np.asarray(k, np.float64).reshape(3, 3)
    if not np.isfinite(K).all():
        raise ValueError(f'{name} has non-finite values: {K.ravel().tolist()}')
    if not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-9) or abs(K[1, 0]) > 1e-9:
        raise ValueError(f'{name} must be upper triangular with last row (0, 0, 1): {K[2]}')
    fx, fy = K[0, 0], K[1, 1]
    if not (fx > 0 and fy > 0 and 0.2 <= fx / fy <= 5.0):
        raise ValueError(f'{name}: focal lengths must be positive and similar, got {fx:g}, {fy:g}')
    if abs(K[0, 1]) > MAX_SKEW * fx:
        raise ValueError(f'{name}: skew {K[0, 1]:g} exceeds {MAX_SKEW:g} * fx')
    if image_hw is not None and image_hw[0] > 0 and image_hw[1] > 0:
        _check_against_image(K, image_hw, name)
    return K


def _check_against_image(K: np.ndarray, image_hw: tuple[int, int], name: str) -> None:
    height, width = image_hw
    side = max(height, width)
    if not (side / 20 <= min(K[0, 0], K[1, 1]) and max(K[0, 0], K[1, 1]) <= 100 * side):
        raise ValueError(
            f'{name}: focal lengths {K[0, 0]:g}, {K[1, 1]:g} px are implausible for a '
            f'{width}x{height} image'
        )
    cx, cy = K[0, 2], K[1, 2]
    if not (-0.5 * width <= cx <= 1.5 * width and -0.5 * height <= cy <= 1.5 * height):
        raise ValueError(
            f'{name}: principal point ({cx:g}, {cy:g}) is far outside the {width}x{height} image'
        )


@dataclass(frozen=True, eq=False)
class CameraModel:
    """A validated camera (build it with :meth:`create`).

    Attributes:
        K: (3, 3) raw camera matrix.
        D: (n,) distortion coefficients (n = 0 when there is no distortion).
        model: '' (no distortion), 'plumb_bob', 'rational_polynomial' or 'equidistant'.
        R: (3, 3) rectification rotation.
        P: (3, 3) rectified camera matrix (P[0:3, 0:3] of CameraInfo, or K).
        image_hw: (H, W) of the raw image, (0, 0) when unknown.
    """

    K: np.ndarray
    D: np.ndarray
    model: str
    R: np.ndarray
    P: np.ndarray
    image_hw: tuple[int, int]

    @classmethod
    def create(
        cls,
        k: np.ndarray | Sequence[float],
        d: np.ndarray | Sequence[float] = (),
        distortion_model: str = '',
        r: np.ndarray | Sequence[float] | None = None,
        p: np.ndarray | Sequence[float] | None = None,
        image_hw: tuple[int, int] = (0, 0),
    ) -> CameraModel:
        """Validate CameraInfo-style fields (``p`` may be 12 values (3x4) or 9).

        All-zero ``r`` or ``p`` (unset in many drivers) mean identity and ``K``.

        Raises:
            ValueError: naming the offending field.
        """
        hw = (int(image_hw[0]), int(image_hw[1]))
        K = camera_matrix(k, hw)
        model, D = _distortion(distortion_model, d)
        R = _rotation(r)
        P = _rectified_matrix(p, K, hw)
        camera = cls(K, D, model, R, P, hw)
        if model:
            camera._check_round_trip()
        return camera

    @property
    def distorted(self) -> bool:
        """The lens has distortion to remove (non-zero coefficients)."""
        return bool(self.model)

    def scaled_to(self, image_hw: tuple[int, int]) -> CameraModel:
        """The same camera for its images resized (or binned) to ``image_hw`` (H, W).

        K and P scale about pixel centres (``x' = s (x + 0.5) - 0.5``); the distortion, in
        normalised coordinates, is unchanged.

        Raises:
            ValueError: the calibration's size is unknown, or ``image_hw`` has another aspect
                ratio (1 % tolerance): a crop or another camera, not a resize.
        """
        height, width = self.image_hw
        new_h, new_w = int(image_hw[0]), int(image_hw[1])
        if height <= 0 or width <= 0 or new_h <= 0 or new_w <= 0:
            raise ValueError('the calibration or the image has no size to scale between')
        sx, sy = new_w / width, new_h / height
        if abs(sx - sy) > ASPECT_TOLERANCE * max(sx, sy):
            raise ValueError(
                f'the calibration is for {width}x{height} images, the frame is {new_w}x{new_h}: '
                'another aspect ratio (a crop or another camera), not a resize'
            )
        S = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
        D = self.D if self.model else ()
        return CameraModel.create(
            (S @ self.K).ravel(), D, self.model, self.R.ravel(), (S @ self.P).ravel(), image_hw
        )

    def normalize(self, pts: np.ndarray) -> np.ndarray:
        """(N, 2) raw pixels -> (N, 2) undistorted normalised coordinates (rectified frame)."""
        pts = as_points(pts)
        if len(pts) == 0:
            return np.zeros((0, 2))
        src = pts.reshape(-1, 1, 2)
        if self.model == 'equidistant':
            out = cv2.fisheye.undistortPoints(src, self.K, self.D, R=self.R, criteria=_ITERATIONS)
        elif self.model:
            out = cv2.undistortPointsIter(src, self.K, self.D, self.R, None, _ITERATIONS)
        else:
            out = cv2.undistortPoints(src, self.K, None, R=self.R)
        return out.reshape(-1, 2).astype(np.float64)

    def rectify(self, pts: np.ndarray) -> np.ndarray:
        """(N, 2) raw pixels -> (N, 2) pixels of the rectified camera ``P``."""
        return self.project_normalized(self.normalize(pts))

    def project_normalized(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) normalised coordinates -> (N, 2) rectified pixels (``P``, no distortion)."""
        xy = as_points(xy)
        homogeneous = np.concatenate([xy, np.ones((len(xy), 1))], axis=1) @ self.P.T
        return homogeneous[:, :2] / homogeneous[:, 2:]

    def distort(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) normalised coordinates (rectified frame) -> (N, 2) raw pixels (with the lens).

        The inverse of :meth:`normalize`; renders distorted images and checks calibrations.
        """
        xy = as_points(xy)
        if len(xy) == 0:
            return np.zeros((0, 2))
        rays = np.concatenate([xy, np.ones((len(xy), 1))], axis=1) @ self.R  # R^T applied
        with np.errstate(divide='ignore', invalid='ignore'):
            raw = np.ascontiguousarray((rays[:, :2] / rays[:, 2:]).reshape(-1, 1, 2))
        if self.model == 'equidistant':
            out = cv2.fisheye.distortPoints(raw, self.K, self.D)
        else:
            zero = np.zeros(3)
            out, _ = cv2.projectPoints(
                np.concatenate([raw.reshape(-1, 2), np.ones((len(raw), 1))], axis=1),
                zero,
                zero,
                self.K,
                self.D if self.model else None,
            )
        return out.reshape(-1, 2).astype(np.float64)

    def _check_round_trip(self) -> None:
        """Undistorting then distorting the image border must give it back: coefficients that
        fold the image (finite but not a lens) are refused."""
        border = image_border(self.image_hw if min(self.image_hw) > 0 else _size_from_k(self.K))
        back = self.distort(self.normalize(border))
        error = np.linalg.norm(back - border, axis=1) if np.isfinite(back).all() else [np.inf]
        if not np.max(error) <= ROUND_TRIP_PX:
            raise ValueError(
                f'{self.model} coefficients {self.D.tolist()} do not describe an invertible lens '
                f'over the image (border round trip off by {np.max(error):.3g} px)'
            )


def image_border(image_hw: tuple[int, int], samples: int = BORDER_SAMPLES) -> np.ndarray:
    """(4 * samples, 2) pixel points along the border of an (H, W) image."""
    height, width = image_hw
    xs = np.linspace(0.0, width - 1.0, samples)
    ys = np.linspace(0.0, height - 1.0, samples)
    return np.concatenate(
        [
            np.stack([xs, np.zeros_like(xs)], 1),
            np.stack([xs, np.full_like(xs, height - 1.0)], 1),
            np.stack([np.zeros_like(ys), ys], 1),
            np.stack([np.full_like(ys, width - 1.0), ys], 1),
        ]
    )


def _size_from_k(K: np.ndarray) -> tuple[int, int]:
    return max(int(round(2 * K[1, 2])), 8), max(int(round(2 * K[0, 2])), 8)


def as_points(pts: np.ndarray) -> np.ndarray:
    """(N, 2) float64 contiguous points (raises ValueError for another shape)."""
    pts = np.asarray(pts, np.float64)
    check_shape(pts, 'N,2', 'points')
    return np.ascontiguousarray(pts)


def _distortion(model: str, d: np.ndarray | Sequence[float]) -> tuple[str, np.ndarray]:
    """('' or the model name, coefficients); all-zero or empty coefficients mean none."""
    D = np.asarray(d, np.float64).ravel()
    if not np.isfinite(D).all():
        raise ValueError(f'distortion coefficients are not finite: {D.tolist()}')
    if np.abs(D).max(initial=0.0) > MAX_COEFFICIENT:
        raise ValueError(f'distortion coefficients exceed {MAX_COEFFICIENT:g}: {D.tolist()}')
    if not D.any():
        return '', np.zeros(0)
    model = str(model)
    if model not in DISTORTION_LENGTHS:
        raise ValueError(
            f'unknown distortion_model {model[:40]!r}; supported: {sorted(DISTORTION_LENGTHS)}'
        )
    if len(D) not in DISTORTION_LENGTHS[model]:
        raise ValueError(f'{model} takes {DISTORTION_LENGTHS[model]} coefficients, got {len(D)}')
    return model, D


def _rotation(r: np.ndarray | Sequence[float] | None) -> np.ndarray:
    R = np.eye(3) if r is None else np.asarray(r, np.float64).reshape(3, 3)
    if not np.isfinite(R).all():
        raise ValueError('rectification rotation R is not finite')
    if not R.any():
        return np.eye(3)
    if not (np.allclose(R @ R.T, np.eye(3), atol=1e-6) and np.linalg.det(R) > 0):
        raise ValueError(f'R is not a rotation matrix: {R.ravel().tolist()}')
    return R


def _rectified_matrix(
    p: np.ndarray | Sequence[float] | None, K: np.ndarray, image_hw: tuple[int, int]
) -> np.ndarray:
    if p is None:
        return K.copy()
    P = np.asarray(p, np.float64).ravel()
    if P.size not in (9, 12):
        raise ValueError(f'P must have 12 (3x4) or 9 values, got {P.size}')
    if not np.isfinite(P).all():
        raise ValueError('P is not finite')
    if not P.any():
        return K.copy()
    P = P.reshape(3, -1)
    return camera_matrix(P[:, :3], image_hw, 'P')


def same_camera(a: CameraModel | None, b: CameraModel | None) -> bool:
    """Both None, or the same calibration (every field equal)."""
    if a is None or b is None:
        return a is b
    return (
        a.model == b.model
        and a.image_hw == b.image_hw
        and all(np.array_equal(x, y) for x, y in ((a.K, b.K), (a.D, b.D), (a.R, b.R), (a.P, b.P)))
    )
