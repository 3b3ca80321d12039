"""Camera motion from image-to-image geometry, for visual odometry (OpenCV, NumPy).

Poses are 4x4 matrices. ``T_a_b`` maps points in frame ``b`` to frame ``a`` (so it is the
pose of camera ``b`` expressed in frame ``a``). Camera frames are optical frames (x right,
y down, z forward). Monocular translation has no metric scale: from a homography it is in
units of the distance from the first camera to the plane, from an essential matrix it is a
unit vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kp2d_core.epipolar import MIN_POSE_POINTS, fundamental_matrix, sampson_squared

PURE_ROTATION_T = 1e-6  # translation / plane distance below which motion is a rotation
NEAR_ROTATION_T = 0.02  # ... below which a decomposition with no visible plane is a rotation
PARALLAX_PX = 1.0  # epipolar distance (px) at which a match stops counting for a motion
PARALLAX_MARGIN = 0.06  # share of the matches a decomposition must win by (planar: < 0.03)
IN_FRONT_SHARE = 0.8  # share of the inliers a plane must be in front of to be a candidate
PRIOR_AGREEMENT = np.cos(np.radians(30.0))  # a solution this close to the prior is its plane
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


def pose_from_homography(
    H: np.ndarray,
    K: np.ndarray,
    pts_ref: np.ndarray,
    pts_cur: np.ndarray,
    prior_normal: np.ndarray | None = None,
    off_plane: tuple[np.ndarray, np.ndarray] | None = None,
) -> RelativePose | None:
    """The physically valid decomposition of ``H_ref_to_cur`` (pixels) given intrinsics.

    Of OpenCV's up to four solutions, two put the inlier points in front of both cameras,
    with plane normal and translation direction swapped. The points off the plane tell them
    apart: the one whose epipolar geometry clearly more of ``off_plane`` agree with wins (a
    camera moving along a wall otherwise takes the solution translating towards it, its
    rotation degrees off). Only the homography's outliers count: its inliers fit both
    solutions, and those near a solution's epipole fit it whatever their noise. When they do
    not decide (a plane alone, a tiny baseline), the solution whose plane is ``prior_normal``
    (the plane seen so far, in the reference camera: within 30 deg) wins among those in front
    of most inliers; without such a prior, of the solutions with every inlier in front, the
    one facing the reference camera most directly. The translation is in units of the
    reference camera's distance to the plane.

    Args:
        H: (3, 3) homography from reference to current pixels.
        K: (3, 3) intrinsics (same camera for both views).
        pts_ref, pts_cur: (N, 2) inlier correspondences used to reject solutions.
        prior_normal: (3,) unit normal of the plane in the reference camera, or None.
        off_plane: (M, 2) reference and (M, 2) current pixels of the matches that are not
            the homography's inliers (points off its plane, or mismatches), or None.
    """
    try:
        _, rotations, translations, normals = cv2.decomposeHomographyMat(H, K)
    except cv2.error:
        return None
    # For a near-rotation OpenCV returns the normalised homography itself as the rotation,
    # which a noisy fit leaves a little off SO(3).
    rotations = [nearest_rotation(R) for R in rotations]
    largest = max(float(np.linalg.norm(t)) for t in translations)
    if largest < PURE_ROTATION_T:
        # No translation (e.g. a still camera): every solution is the same rotation and the
        # plane normal is undefined, so the visibility test below cannot choose.
        return RelativePose(make_pose(rotations[0], np.zeros(3)), 'homography', prior_normal)
    ref, cur = normalized_coordinates(pts_ref, K), normalized_coordinates(pts_cur, K)
    try:
        valid = cv2.filterHomographyDecompByVisibleRefpoints(rotations, normals, ref, cur)
    except cv2.error:
        return None
    visible = [] if valid is None else [int(i) for i in np.asarray(valid).ravel()]
    if not visible and largest < NEAR_ROTATION_T:
        return _near_rotation(H, K, prior_normal)
    candidates = _in_front(normals, ref, visible)
    best = _by_parallax(candidates, rotations, translations, K, off_plane, len(ref))
    decided = best is not None
    if best is None:
        best = _by_prior(candidates, normals, prior_normal)
    if best is None and visible:
        best = max(visible, key=lambda i: abs(float(normals[i][2, 0])))  # facing the camera
    if best is None:
        return None
    T = make_pose(rotations[best], translations[best].ravel())
    return RelativePose(T, 'homography', normals[best].ravel(), decided=decided)


def _by_prior(
    candidates: list[int], normals: list[np.ndarray], prior_normal: np.ndarray | None
) -> int | None:
    """The candidate whose normal is the prior's (within PRIOR_AGREEMENT), else None."""
    if prior_normal is None or not candidates:
        return None
    best = max(candidates, key=lambda i: float(normals[i].ravel() @ prior_normal))
    return best if float(normals[best].ravel() @ prior_normal) >= PRIOR_AGREEMENT else None


def _in_front(normals: list[np.ndarray], ref: np.ndarray, visible: list[int]) -> list[int]:
    """``visible`` and the solutions whose plane is in front of IN_FRONT_SHARE of the
    reference points: a wall seen at a grazing angle leaves a few inliers off it (OpenCV's
    test needs all). A wrong solution's plane can cut the view in two (half in front)."""
    rays = np.column_stack([np.asarray(ref, np.float64).reshape(-1, 2), np.ones(len(ref))])
    shares = [np.mean(rays @ n.ravel() > 0) for n in normals]
    mostly = [i for i, share in enumerate(shares) if share >= IN_FRONT_SHARE]
    return sorted(set(visible) | set(mostly))


def _by_parallax(
    candidates: list[int],
    rotations: list[np.ndarray],
    translations: list[np.ndarray],
    K: np.ndarray,
    off_plane: tuple[np.ndarray, np.ndarray] | None,
    inliers: int,
) -> int | None:
    """The candidate whose epipolar geometry clearly more of the ``off_plane`` matches agree
    with (MSAC cost, Sampson distances capped at PARALLAX_PX), else None. Clearly: by
    PARALLAX_MARGIN of all the matches (``inliers`` of the homography and the others)."""
    if off_plane is None or len(candidates) < 2:
        return None
    ref, cur = (np.asarray(pts, np.float64).reshape(-1, 2) for pts in off_plane)
    support = {}
    for i in candidates:
        F = fundamental_matrix(rotations[i], translations[i], K)
        cost = np.minimum(sampson_squared(F, ref, cur) / PARALLAX_PX**2, 1.0)
        support[i] = len(ref) - float(cost.sum())
    ranked = sorted(candidates, key=support.get, reverse=True)
    margin = max(MIN_POSE_POINTS, PARALLAX_MARGIN * (len(ref) + inliers))
    return ranked[0] if support[ranked[0]] - support[ranked[1]] >= margin else None


def _near_rotation(H: np.ndarray, K: np.ndarray, prior_normal: np.ndarray | None) -> RelativePose:
    """A rotating camera's pose when no decomposition puts the points in front of a plane.

    Without translation the plane is undefined: noise gives the decompositions arbitrary
    normals and small translations (below NEAR_ROTATION_T), and often none passes the
    visibility test. The camera rotated: the rotation nearest to ``K^-1 H K`` (exact for a
    pure rotation), with no translation.
    """
    M = np.linalg.inv(K) @ np.asarray(H, np.float64) @ K
    R = nearest_rotation(-M if np.linalg.det(M) < 0 else M)  # H is known up to its sign
    return RelativePose(make_pose(R, np.zeros(3)), 'homography', prior_normal)


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
