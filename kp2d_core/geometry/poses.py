"""Camera motion from image-to-image geometry, for visual odometry (OpenCV, NumPy).

Poses are 4x4 matrices. ``T_a_b`` maps points in frame ``b`` to frame ``a`` (so it is the
pose of camera ``b`` expressed in frame ``a``). Camera frames are optical frames (x right,
y down, z forward). Monocular translation has no metric scale: from a homography it is in
units of the distance from the first camera to the plane, from an essential matrix it is a
unit vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_NOISE_PX = 0.3  # keypoints are not localised better than this, whatever the fit says
TRANSLATION_FACTOR = 3.0  # translation from a homography is less certain than rotation


@dataclass(frozen=True)
class RelativePose:
    """Motion between a reference and a current view.

    Attributes:
        T_cur_ref: (4, 4) transform of reference-camera points into the current camera.
        method: 'homography', 'essential' or 'pnp' (points of known depth).
        normal: (3,) plane normal in the reference camera (homography only), else None.
        support: correspondences consistent with the motion (essential matrix: its inliers
            in front of both cameras), 0 when not counted.
        inliers: (N,) bool, essential matrix only: its inliers in front of both cameras.
        decided: homography only: the points off the plane chose the decomposition (not a
            prior or the fallback), so its normal can serve as the prior of later views.
    """

    T_cur_ref: np.ndarray
    method: str
    normal: np.ndarray | None = None
    support: int = 0
    inliers: np.ndarray | None = None
    decided: bool = False


def make_pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(4, 4) rigid transform from a (3, 3) rotation and a (3,) translation."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, np.float64).ravel()
    return T


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of a (4, 4) rigid transform."""
    R, t = T[:3, :3], T[:3, 3]
    return make_pose(R.T, -R.T @ t)


def nearest_rotation(M: np.ndarray) -> np.ndarray:
    """The (3, 3) rotation closest to ``M`` in the Frobenius norm (SVD projection)."""
    U, _, Vt = np.linalg.svd(np.asarray(M, np.float64))
    return U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0]) @ Vt


def normalized_coordinates(pts: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 2) pixels -> (N, 1, 2) float32 normalised image coordinates (K^-1 p)."""
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    xy = (pts - K[:2, 2]) / [K[0, 0], K[1, 1]]
    xy[:, 0] -= K[0, 1] / K[0, 0] * xy[:, 1]  # skew
    return np.ascontiguousarray(xy.reshape(-1, 1, 2), np.float32)


def is_pose(T: np.ndarray | None) -> bool:
    """A finite (4, 4) rigid transform (orthonormal rotation, last row 0 0 0 1)."""
    if T is None or T.shape != (4, 4) or not np.isfinite(T).all():
        return False
    R = T[:3, :3]
    return bool(np.allclose(R @ R.T, np.eye(3), atol=1e-6) and np.allclose(T[3], [0, 0, 0, 1]))


def twist(T_prev: np.ndarray, T_cur: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear and angular velocity of the current frame, both expressed in it (as Odometry's
    twist), from two world poses ``dt`` seconds apart."""
    delta = invert_pose(T_prev) @ T_cur  # current pose in the previous frame
    R = delta[:3, :3]
    angle = np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    norm = np.linalg.norm(axis)
    rotvec = axis / norm * angle if norm > 1e-12 else 0.5 * axis
    linear = T_cur[:3, :3].T @ (T_cur[:3, 3] - T_prev[:3, 3])
    return linear / dt, rotvec / dt  # the axis has the same coordinates in both frames


def rotation_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) unit quaternion of a (3, 3) rotation matrix."""
    m = np.asarray(R, np.float64)
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, (m[k, j] - m[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
    q = np.asarray(q) / np.linalg.norm(q)
    return float(q[0]), float(q[1]), float(q[2]), float(q[3])


def quaternion_to_rotation(x: float, y: float, z: float, w: float) -> np.ndarray:
    """(3, 3) rotation matrix of a quaternion (normalised here).

    Raises:
        ValueError: the quaternion is not finite or has zero length.
    """
    q = np.array([x, y, z, w], np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-12:
        raise ValueError(f'not a rotation quaternion: {q.tolist()}')
    x, y, z, w = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def blend_poses(T_a: np.ndarray, T_b: np.ndarray, weight: float) -> np.ndarray:
    """(4, 4) pose ``weight`` of the way from ``T_a`` (0) to ``T_b`` (1): the rotation along
    the shortest arc between them (spherical interpolation), the position on the line."""
    q_a = np.array(rotation_to_quaternion(T_a[:3, :3]))
    q_b = np.array(rotation_to_quaternion(T_b[:3, :3]))
    if q_a @ q_b < 0.0:
        q_b = -q_b  # the same rotation, on the near side
    angle = np.arccos(np.clip(q_a @ q_b, -1.0, 1.0))
    if angle < 1e-9:
        q = (1.0 - weight) * q_a + weight * q_b
    else:
        q = (np.sin((1.0 - weight) * angle) * q_a + np.sin(weight * angle) * q_b) / np.sin(angle)
    position = (1.0 - weight) * T_a[:3, 3] + weight * T_b[:3, 3]
    return make_pose(quaternion_to_rotation(*q), position)


def relative_pose_variance(
    residual_px: float, num_inliers: int, K: np.ndarray, scaled: bool
) -> np.ndarray:
    """Variances (6,) of a keyframe-relative pose from the fit's quality.

    The pixel noise (the inlier residual, at least MIN_NOISE_PX) averaged over the inliers
    and divided by the focal length gives the angular uncertainty; translation (in world
    units) gets the same, times TRANSLATION_FACTOR. A pose without the trajectory's scale
    (``scaled`` False: an essential matrix that nothing measured) has translation variance
    1. Chaining keyframes adds the variances.
    """
    noise = max(residual_px if np.isfinite(residual_px) else 1.0, MIN_NOISE_PX)
    sigma = noise / (0.5 * (K[0, 0] + K[1, 1]) * np.sqrt(max(num_inliers, 1)))
    rotation = np.full(3, sigma**2)
    translation = np.full(3, (TRANSLATION_FACTOR * sigma) ** 2)
    if not scaled:
        translation[:] = 1.0
    return np.concatenate([translation, rotation])
