"""One frame's keypoints in every coordinate system geometry needs, computed once per frame.

Raw pixels (where the network found them), the geometry frame's pixels (rectified when the
lens has distortion, see :mod:`kp2d_core.geometry.camera`) and undistorted normalised coordinates.
The homography tracker and the feature tracker both take them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kp2d_core.geometry.camera import CameraModel, as_points


@dataclass(frozen=True)
class ImagePoints:
    """One frame's keypoints in every coordinate system geometry needs (computed once).

    Attributes:
        raw: (N, 2) raw image pixels (where the keypoints were detected).
        pixels: (N, 2) pixels of the geometry frame: rectified (``camera.P``) when the camera
            has distortion, else the raw pixels.
        normalized: (N, 2) undistorted normalised coordinates, or None without a camera.
        camera: the camera model, or None (no intrinsics: homographies only).
    """

    raw: np.ndarray
    pixels: np.ndarray
    normalized: np.ndarray | None
    camera: CameraModel | None

    @classmethod
    def of(cls, raw: np.ndarray, camera: CameraModel | None) -> ImagePoints:
        raw = as_points(raw)
        if camera is None:
            return cls(raw, raw, None, None)
        normalized = camera.normalize(raw)
        pixels = camera.project_normalized(normalized) if camera.distorted else raw
        return cls(raw, pixels, normalized, camera)

    @property
    def rectified(self) -> bool:
        """``pixels`` are rectified pixels (the camera has distortion)."""
        return self.camera is not None and self.camera.distorted

    def pixel_jacobians(self, index: np.ndarray, step_px: float = 0.5) -> np.ndarray:
        """(M, 2, 2) derivatives of ``pixels`` by ``raw`` at the keypoints ``index`` selects
        (central differences): how far a raw pixel's error moves a geometry-frame pixel, up
        to several times near a fisheye's border. The identity without distortion."""
        raw, camera = self.raw[index], self.camera
        if camera is None or not camera.distorted:
            return np.broadcast_to(np.eye(2), (len(raw), 2, 2)).copy()
        jacobians = np.empty((len(raw), 2, 2))
        for axis in range(2):
            step = np.zeros(2)
            step[axis] = step_px
            ahead, behind = camera.rectify(raw + step), camera.rectify(raw - step)
            jacobians[:, :, axis] = (ahead - behind) / (2.0 * step_px)
        return jacobians

    @property
    def intrinsics(self) -> np.ndarray | None:
        """(3, 3) camera matrix of ``pixels`` (``P`` when rectified, else ``K``), or None."""
        if self.camera is None:
            return None
        return self.camera.P if self.camera.distorted else self.camera.K
