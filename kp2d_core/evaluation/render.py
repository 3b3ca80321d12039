"""Ray-cast images of piecewise-planar textured scenes through a camera model (with its lens).

The sequence generator renders camera sequences with exact ground truth from these: each
raw pixel's ray (from the camera model's undistortion, so the image has the lens' distortion)
is intersected with every textured rectangle of the scene and the nearest hit samples that
rectangle's photo. Motion blur averages sub-frame renders; exposure, sensor noise and JPEG
compression are applied afterwards (:func:`photometric`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kp2d_core.geometry.camera import CameraModel

MIN_DEPTH = 0.05  # m: nearer hits are behind the lens


@dataclass(frozen=True)
class TexturedPlane:
    """A rectangle ``origin + a * u + b * v`` (a, b in [0, 1]) showing ``texture``.

    ``u`` spans the texture's width (left to right), ``v`` its height (top to bottom); both in
    world units, perpendicular.
    """

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    texture: np.ndarray

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.u, self.v)
        return n / np.linalg.norm(n)


def look_at(position: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(4, 4) camera-to-world pose of an optical frame (x right, y down, z forward)."""
    z = np.asarray(target, np.float64) - position
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = position
    return T


def camera_rays(camera: CameraModel) -> np.ndarray:
    """(H, W, 3) ray direction (x, y, 1) in the camera frame of every raw pixel."""
    height, width = camera.image_hw
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    normalized = camera.normalize(np.stack([xs.ravel(), ys.ravel()], axis=1))
    rays = np.concatenate([normalized, np.ones((len(normalized), 1))], axis=1)
    return rays.reshape(height, width, 3)


def render(planes: list[TexturedPlane], T_world_cam: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 image in [0, 255] of ``planes`` seen from ``T_world_cam``; pixels
    that hit nothing are black."""
    height, width = rays.shape[:2]
    directions = rays.reshape(-1, 3) @ T_world_cam[:3, :3].T
    centre = T_world_cam[:3, 3]
    best = np.full(len(directions), np.inf)
    image = np.zeros((len(directions), 3), np.float32)
    for plane in planes:
        depth, a, b = _intersect(plane, centre, directions)
        hit = (depth > MIN_DEPTH) & (depth < best) & (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
        if not hit.any():
            continue
        th, tw = plane.texture.shape[:2]
        map_x = (a * (tw - 1)).astype(np.float32).reshape(height, width)
        map_y = (b * (th - 1)).astype(np.float32).reshape(height, width)
        sampled = cv2.remap(plane.texture, map_x, map_y, cv2.INTER_LINEAR)
        image[hit] = sampled.reshape(-1, 3)[hit]
        best[hit] = depth[hit]
    return image.reshape(height, width, 3)


def _intersect(plane: TexturedPlane, centre: np.ndarray, directions: np.ndarray):
    """(depth along the ray, a, b) of every ray's hit with the plane (inf where parallel)."""
    normal = plane.normal
    facing = directions @ normal
    with np.errstate(divide='ignore', invalid='ignore'):
        depth = ((plane.origin - centre) @ normal) / facing
    depth = np.where(np.abs(facing) > 1e-12, depth, np.inf)
    offset = centre - plane.origin + directions * depth[:, None]
    with np.errstate(invalid='ignore'):
        a = offset @ plane.u / (plane.u @ plane.u)
        b = offset @ plane.v / (plane.v @ plane.v)
    return depth, a, b


def plane_homography(
    plane: TexturedPlane, T_world_a: np.ndarray, T_world_b: np.ndarray, P: np.ndarray
) -> np.ndarray:
    """(3, 3) homography from view a's rectified pixels to view b's, induced by ``plane``
    (``P``: the rectified camera matrix of both views)."""
    T_b_a = np.linalg.inv(T_world_b) @ T_world_a
    R_a = T_world_a[:3, :3].T
    normal_a = R_a @ plane.normal
    distance_a = normal_a @ (R_a @ (plane.origin - T_world_a[:3, 3]))
    H = P @ (T_b_a[:3, :3] + np.outer(T_b_a[:3, 3], normal_a) / distance_a) @ np.linalg.inv(P)
    return H / H[2, 2]


def photometric(
    image: np.ndarray, gain: float, noise_sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """Exposure gain and Gaussian sensor noise, clipped to uint8."""
    noisy = image * gain + rng.normal(0.0, noise_sigma, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OSError('JPEG encoding failed')
    return data.tobytes()
