"""Visual-odometry metrics on a sequence: what the per-frame pipeline did against the truth.

* ATE: absolute trajectory error, RMSE of camera positions after a Sim(3) alignment
  (Umeyama) of the estimate to the truth: monocular trajectories have no metric scale.
* RPE: relative pose error over pairs of frames ``delta_s`` apart (1 s: "per second of
  motion"), RMSE of the translation error (m, after the same scale) and of the rotation
  error (degrees); the rotation error's median too, which a few failed windows do not
  dominate.
* Homographies: corner error (px) of each keyframe-to-frame homography against the truth
  ``H_0to_cur @ inv(H_0to_key)`` (rectified pixels), median over frames that have one.
* Tracks: lengths (frames) of every track, median, and the mean length of the track an
  observation belongs to.
* Track identities (planar sequences, exact truth): wrong-id continuations per 1,000 (a track
  whose new position is more than ``WRONG_ID_PX`` from where the true homography puts its
  previous one, in rectified pixels: another physical point), and after each blackout (a run
  of black frames, the lens covered) the share of the tracks alive before it that come back
  with their ids within ``RESUME_FRAMES`` frames.

Where the ground truth cannot fix a Sim(3) alignment (its positions do not span a plane: a
camera turning in place, or moving along a line), ATE and the RPE translation are None with
the reason in ``ate_note``: any estimate would otherwise align to an error near 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import time

import cv2
import numpy as np

from kp2d_core.evaluation.sequences import NANOSECONDS, Sequence, SequenceError
from kp2d_core.geometry.coordinates import corner_error
from kp2d_core.images import read_image
from kp2d_core.vo.frame_pipeline import FramePipeline

RNG_SEED = 0  # OpenCV's generator, at the start of every run
WRONG_ID_PX = 3.0
BLACK_LEVEL = 8.0  # a frame whose mean grey level is below this is black (lens covered)
RESUME_FRAMES = 20  # frames after a blackout in which a track may come back
MIN_SPREAD_M = 1e-3  # RMS spread of the truth's positions along its second axis for a Sim(3)
MIN_SPREAD_SHARE = 0.01  # ... also relative to the first axis's


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
    detections: int = 0  # frames the front-end's detector ran on (hybrid: fewer than frames)
    identities: IdentityRecord = field(default_factory=lambda: IdentityRecord())


@dataclass
class IdentityRecord:
    """Where track ids went: continuations checked against the truth, and blackouts."""

    last: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)  # id -> stamp, px
    checked: int = 0
    wrong: int = 0
    before_blackout: set[int] = field(default_factory=set)  # alive when the last one began
    black_run: int = 0  # black frames in a row so far
    since_blackout: int | None = None  # frames since the last blackout ended
    resumed: set[int] = field(default_factory=set)
    resume_shares: list[float] = field(default_factory=list)
    previous_ids: set[int] = field(default_factory=set)

    def observe(self, sequence: Sequence, stamp: int, black: bool, tracks) -> None:
        """One processed frame's tracks (raw pixels)."""
        self._blackout(black, tracks)
        if black:
            self.previous_ids = set()
            return
        pixels = tracks.xy if sequence.camera is None else sequence.camera.rectify(tracks.xy)
        truth_now = sequence.homographies.get(stamp)
        for track_id, xy in zip(tracks.ids.tolist(), pixels):
            seen = self.last.get(track_id)
            truth_then = sequence.homographies.get(seen[0]) if seen is not None else None
            if seen is not None and truth_now is not None and truth_then is not None:
                H = truth_now @ np.linalg.inv(truth_then)
                expected = H @ np.array([seen[1][0], seen[1][1], 1.0])
                gap = np.linalg.norm(expected[:2] / expected[2] - xy)
                self.checked += 1
                self.wrong += int(gap > WRONG_ID_PX)
            self.last[track_id] = (stamp, xy)
        self.previous_ids = set(tracks.ids.tolist())

    def _blackout(self, black: bool, tracks) -> None:
        if black:
            if self.black_run == 0:
                self._close_resume_window()
                self.before_blackout = set(self.previous_ids)
            self.black_run += 1
            return
        if self.black_run:
            self.black_run, self.since_blackout, self.resumed = 0, 0, set()
        if self.since_blackout is not None:
            self.resumed |= set(tracks.ids.tolist()) & self.before_blackout
            self.since_blackout += 1
            if self.since_blackout >= RESUME_FRAMES:
                self._close_resume_window()

    def _close_resume_window(self) -> None:
        if self.since_blackout is not None and self.before_blackout:
            self.resume_shares.append(len(self.resumed) / len(self.before_blackout))
        self.since_blackout = None

    def finish(self) -> None:
        self._close_resume_window()


def run_sequence(
    pipeline: FramePipeline, sequence: Sequence, on_frame: Callable[[], None] | None = None
) -> RunRecord:
    """Every frame of ``sequence`` through ``pipeline`` (reset first), timed per frame.

    OpenCV's random generator (RANSAC, MAGSAC++, PnP) is seeded first, so a run does not
    depend on what ran before it in the process. Unreadable frames and frames of another size
    than the sequence's are left out and named in ``RunRecord.unreadable``; ``on_frame`` is
    called after every listed frame (a progress bar).

    Raises:
        SequenceError: the calibration is for another image size than the frames'.
    """
    pipeline.reset()
    cv2.setRNGSeed(RNG_SEED)
    record, lengths = RunRecord(), {}
    hw = sequence.camera.image_hw if sequence.camera is not None else None
    for stamp, path in zip(sequence.stamps.tolist(), sequence.paths):
        if on_frame is not None:
            on_frame()
        try:
            image = read_image(path)
        except (OSError, ValueError) as exc:
            record.unreadable.append(f'{path.name}: {exc}')
            continue
        if sequence.camera is not None and not record.stamps and image.shape[:2] != hw:
            raise SequenceError(
                f'{sequence.name}: the calibration is for {hw[1]}x{hw[0]} images, the frames '
                f'are {image.shape[1]}x{image.shape[0]} ({path.name})'
            )
        hw = hw or image.shape[:2]
        if image.shape[:2] != hw:
            size = f'{image.shape[1]}x{image.shape[0]}'
            record.unreadable.append(f"{path.name}: {size}, not the sequence's {hw[1]}x{hw[0]}")
            continue
        start = time.perf_counter()
        frame = pipeline.process(image, stamp, sequence.camera)
        record.latencies_ms.append(1e3 * (time.perf_counter() - start))
        record.stamps.append(stamp)
        record.detections += int(frame.network_ran)
        black = float(image[::4, ::4].mean()) < BLACK_LEVEL
        record.identities.observe(sequence, stamp, black, frame.tracks)
        track = frame.track
        if track.T_world_cur is not None:
            record.poses[stamp] = track.T_world_cur
        if track.H_key_to_cur is not None:
            record.with_homography += 1
            error = _homography_error(sequence, track, stamp, hw)
            if error is not None:
                record.homography_errors.append(error)
        for track_id in frame.tracks.ids.tolist():
            lengths[track_id] = lengths.get(track_id, 0) + 1
    record.track_lengths = list(lengths.values())
    record.identities.finish()
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


def spread(positions: np.ndarray) -> np.ndarray:
    """(3,) RMS spread of (N, 3) positions along their principal axes, largest first."""
    centred = positions - positions.mean(axis=0)
    return np.linalg.svd(centred, compute_uv=False) / np.sqrt(max(len(positions), 1))


def alignment_problem(truth_positions: np.ndarray) -> str:
    """Why these ground-truth positions cannot fix a Sim(3) alignment ('' when they can)."""
    if len(truth_positions) < 3:
        return 'fewer than 3 frames with a pose and ground truth'
    axes = spread(truth_positions)
    if axes[1] < max(MIN_SPREAD_M, MIN_SPREAD_SHARE * axes[0]):
        return (
            f"the ground truth's positions do not span a plane (RMS spread {axes[0]:.4f} m and "
            f'{axes[1]:.4f} m along their two main axes): no Sim(3) alignment'
        )
    return ''


def ate_rmse(
    estimate: dict[int, np.ndarray], truth: dict[int, np.ndarray]
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(ATE RMSE in m, Sim(3) scale, aligned estimate (N, 3), truth (N, 3)) over common stamps.

    NaN (and empty arrays) where :func:`alignment_problem` names a reason.
    """
    common = sorted(set(estimate) & set(truth))
    gt = np.array([truth[s][:3, 3] for s in common]).reshape(-1, 3)
    if alignment_problem(gt):
        return float('nan'), float('nan'), np.zeros((0, 3)), np.zeros((0, 3))
    est = np.array([estimate[s][:3, 3] for s in common])
    s, R, t = umeyama(est, gt)
    aligned = s * est @ R.T + t
    return float(np.sqrt(((aligned - gt) ** 2).sum(axis=1).mean())), s, aligned, gt


def relative_errors(
    estimate: dict[int, np.ndarray],
    truth: dict[int, np.ndarray],
    scale: float,
    delta_s: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """((P,) translation errors in m, (P,) rotation errors in degrees) of the P motions
    ``delta_s`` apart (each start pose's partner within a tenth of ``delta_s``).

    The estimate's translations are multiplied by ``scale`` (the ATE alignment's); empty
    where no pair of poses is that far apart or the scale is not finite.
    """
    common = sorted(set(estimate) & set(truth))
    if len(common) < 2 or not np.isfinite(scale):
        return np.zeros(0), np.zeros(0)
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
    return np.array(translations), np.array(rotations)


def rpe(
    estimate: dict[int, np.ndarray],
    truth: dict[int, np.ndarray],
    scale: float,
    delta_s: float = 1.0,
) -> tuple[float, float]:
    """(translation RMSE in m, rotation RMSE in degrees) of motions ``delta_s`` apart
    (:func:`relative_errors`); NaN when no pair of poses is that far apart."""
    translations, rotations = relative_errors(estimate, truth, scale, delta_s)
    return _rms(translations), _rms(rotations)


def _rms(values: np.ndarray) -> float:
    """Root mean square of (P,) values; NaN for none."""
    return float(np.sqrt(np.mean(np.square(values)))) if len(values) else float('nan')


def _relative(T_a: np.ndarray, T_b: np.ndarray, scale: float) -> np.ndarray:
    relative = np.linalg.inv(T_a) @ T_b
    relative[:3, 3] *= scale
    return relative


def summarise(sequence: Sequence, front_end: str, record: RunRecord) -> dict:
    """One result row (the keys of ``vo_results.json``)."""
    frames = len(record.stamps)
    ate, scale, _, _ = ate_rmse(record.poses, sequence.poses)
    rpe_t, _ = rpe(record.poses, sequence.poses, scale)
    # The rotation errors do not depend on the scale (which may be unknown).
    _, rotations = relative_errors(record.poses, sequence.poses, 1.0)
    common = sorted(set(record.poses) & set(sequence.poses))
    note = alignment_problem(np.array([sequence.poses[s][:3, 3] for s in common]).reshape(-1, 3))

    def median(values) -> float | None:
        return float(np.median(values)) if len(values) else None

    return {
        'sequence': sequence.name,
        'front_end': front_end,
        'frames': frames,
        'tracked_ratio': record.with_homography / max(frames - 1, 1),
        'pose_ratio': len(record.poses) / max(frames, 1),
        'ate_rmse': _finite(ate),
        'ate_note': note or None,
        'sim3_scale': _finite(scale),
        'rpe_trans': _finite(rpe_t),
        'rpe_rot_deg': _finite(_rms(rotations)),
        'rpe_rot_deg_median': float(np.median(rotations)) if len(rotations) else None,
        'h_corner_err_px_median': median(record.homography_errors)
        if sequence.homographies
        else None,
        'track_length_median': median(record.track_lengths),
        'track_length_per_observation': _observation_weighted(record.track_lengths),
        'latency_ms_median': median(record.latencies_ms),
        'detection_ratio': record.detections / max(frames, 1),
        'wrong_id_per_1000': (
            1000.0 * record.identities.wrong / record.identities.checked
            if record.identities.checked
            else None
        ),
        'reid_after_blackout': (
            float(np.mean(record.identities.resume_shares))
            if record.identities.resume_shares
            else None
        ),
        'unreadable_frames': len(record.unreadable) + len(sequence.skipped),
        'skipped': sequence.skipped + record.unreadable,
    }


def _observation_weighted(lengths: list[int]) -> float | None:
    """Mean length of the track an observation belongs to (long tracks count per frame seen:
    what a back-end gets; the median over tracks counts every one-frame track once)."""
    values = np.asarray(lengths, np.float64)
    return float((values**2).sum() / values.sum()) if values.sum() else None


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
