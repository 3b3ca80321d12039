"""Visual-odometry metrics on a sequence: what the per-frame pipeline did against the truth.

* ATE: absolute trajectory error, RMSE of camera positions after a Sim(3) alignment
  (Umeyama) of the estimate to the truth: monocular trajectories have no metric scale.
* RPE: relative pose error over pairs of frames ``delta_s`` apart (1 s: "per second of
  motion"), RMSE of the translation error (m, after the same scale) and of the rotation
  error (degrees).
* Homographies: corner error (px) of each keyframe-to-frame homography against the truth
  ``H_0to_cur @ inv(H_0to_key)`` (rectified pixels), median over frames that have one.
* Tracks: lengths (frames) of every track, median, and the mean length of the track an
  observation belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import time

import cv2
import numpy as np

from kp2d_core.evaluation.sequences import NANOSECONDS, Sequence
from kp2d_core.geometry.coordinates import corner_error
from kp2d_core.images import read_image
from kp2d_core.vo.frame_pipeline import FramePipeline

RNG_SEED = 0  # OpenCV's generator, at the start of every run


@dataclass
class RunRecord:
    """What the pipeline produced along a sequence (per processed frame)."""

    stamps: list[int] = field(default_factory=list)
    poses: dict[int, np.ndarray] = field(default_factory=dict)  # stamp -> T_world_cam
    homography_errors: list[float] = field(default_factory=list)  # px, frames with truth
    with_homography: int = 0
    track_lengths: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def run_sequence(pipeline: FramePipeline, sequence: Sequence) -> RunRecord:
    """Every frame of ``sequence`` through ``pipeline`` (reset first), timed per frame.

    OpenCV's random generator (RANSAC, MAGSAC++, PnP) is seeded first, so a run does not
    depend on what ran before it in the process.
    """
    pipeline.reset()
    cv2.setRNGSeed(RNG_SEED)
    record, lengths = RunRecord(), {}
    hw = sequence.camera.image_hw if sequence.camera is not None else None
    for stamp, path in zip(sequence.stamps.tolist(), sequence.paths):
        try:
            image = read_image(path)
        except (OSError, ValueError) as exc:
            record.unreadable.append(f'{path.name}: {exc}')
            continue
        start = time.perf_counter()
        frame = pipeline.process(image, stamp, sequence.camera)
        record.latencies_ms.append(1e3 * (time.perf_counter() - start))
        record.stamps.append(stamp)
        track = frame.track
        if track.T_world_cur is not None:
            record.poses[stamp] = track.T_world_cur
        if track.H_key_to_cur is not None:
            record.with_homography += 1
            error = _homography_error(sequence, track, stamp, hw or image.shape[:2])
            if error is not None:
                record.homography_errors.append(error)
        for track_id in frame.tracks.ids.tolist():
            lengths[track_id] = lengths.get(track_id, 0) + 1
    record.track_lengths = list(lengths.values())
    return record


def _homography_error(sequence: Sequence, track, stamp: int, hw) -> float | None:
    truth_cur = sequence.homographies.get(stamp)
    truth_key = sequence.homographies.get(track.key_stamp_ns)
    if truth_cur is None or truth_key is None:
        return None
    truth = truth_cur @ np.linalg.inv(truth_key)
    return corner_error(track.H_key_to_cur, truth / truth[2, 2], *hw)


def umeyama(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) minimising |target - (s R source + t)|^2 over (N, 3) point sets (N >= 3)."""
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    xs, xt = source - mu_s, target - mu_t
    covariance = xt.T @ xs / len(source)
    U, D, Vt = np.linalg.svd(covariance)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    variance = (xs**2).sum() / len(source)
    s = float(np.trace(np.diag(D) @ S) / variance) if variance > 0 else 1.0
    return s, R, mu_t - s * R @ mu_s


def ate_rmse(
    estimate: dict[int, np.ndarray], truth: dict[int, np.ndarray]
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(ATE RMSE in m, Sim(3) scale, aligned estimate (N, 3), truth (N, 3)) over common stamps.

    NaN with fewer than 3 common poses.
    """
    common = sorted(set(estimate) & set(truth))
    if len(common) < 3:
        return float('nan'), float('nan'), np.zeros((0, 3)), np.zeros((0, 3))
    est = np.array([estimate[s][:3, 3] for s in common])
    gt = np.array([truth[s][:3, 3] for s in common])
    s, R, t = umeyama(est, gt)
    aligned = s * est @ R.T + t
    return float(np.sqrt(((aligned - gt) ** 2).sum(axis=1).mean())), s, aligned, gt


def rpe(
    estimate: dict[int, np.ndarray],
    truth: dict[int, np.ndarray],
    scale: float,
    delta_s: float = 1.0,
) -> tuple[float, float]:
    """(translation RMSE in m, rotation RMSE in degrees) of motions ``delta_s`` apart.

    The estimate's translations are multiplied by ``scale`` (the ATE alignment's). NaN when
    no pair of poses is that far apart.
    """
    common = sorted(set(estimate) & set(truth))
    if len(common) < 2 or not np.isfinite(scale):
        return float('nan'), float('nan')
    stamps = np.array(common, np.int64)
    step = int(delta_s * NANOSECONDS)
    translations, rotations = [], []
    for start in common:
        j = int(np.searchsorted(stamps, start + step))
        if j >= len(common) or abs(common[j] - start - step) > step // 10:
            continue
        moved_est = _relative(estimate[start], estimate[common[j]], scale)
        moved_gt = _relative(truth[start], truth[common[j]], 1.0)
        error = np.linalg.inv(moved_gt) @ moved_est
        translations.append(np.linalg.norm(error[:3, 3]))
        cosine = np.clip((np.trace(error[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
        rotations.append(np.degrees(np.arccos(cosine)))
    if not translations:
        return float('nan'), float('nan')
    return float(np.sqrt(np.mean(np.square(translations)))), float(
        np.sqrt(np.mean(np.square(rotations)))
    )


def _relative(T_a: np.ndarray, T_b: np.ndarray, scale: float) -> np.ndarray:
    relative = np.linalg.inv(T_a) @ T_b
    relative[:3, 3] *= scale
    return relative


def summarise(sequence: Sequence, front_end: str, record: RunRecord) -> dict:
    """One result row (the keys of ``vo_results.json``)."""
    frames = len(record.stamps)
    ate, scale, _, _ = ate_rmse(record.poses, sequence.poses)
    rpe_t, rpe_r = rpe(record.poses, sequence.poses, scale)

    def median(values) -> float | None:
        return float(np.median(values)) if len(values) else None

    return {
        'sequence': sequence.name,
        'front_end': front_end,
        'frames': frames,
        'tracked_ratio': record.with_homography / max(frames - 1, 1),
        'pose_ratio': len(record.poses) / max(frames, 1),
        'ate_rmse': _finite(ate),
        'sim3_scale': _finite(scale),
        'rpe_trans': _finite(rpe_t),
        'rpe_rot_deg': _finite(rpe_r),
        'h_corner_err_px_median': median(record.homography_errors)
        if sequence.homographies
        else None,
        'track_length_median': median(record.track_lengths),
        'track_length_per_observation': _observation_weighted(record.track_lengths),
        'latency_ms_median': median(record.latencies_ms),
        'unreadable_frames': len(record.unreadable) + len(sequence.skipped),
    }


def _observation_weighted(lengths: list[int]) -> float | None:
    """Mean length of the track an observation belongs to (long tracks count per frame seen:
    what a back-end gets; the median over tracks counts every one-frame track once)."""
    values = np.asarray(lengths, np.float64)
    return float((values**2).sum() / values.sum()) if values.sum() else None


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
