"""Hybrid tracking: tracks carried by Lucas-Kanade, the network where Lucas-Kanade cannot go.

Classical VIO front-ends (VINS-Fusion's feature tracker, OpenVINS) track with Lucas-Kanade
between frames and detect only to top up; learned front-ends that do better keep that
structure and use the learned detector where Lucas-Kanade fails. Per frame:

* Live tracks are carried from the previous frame by pyramidal Lucas-Kanade with a
  forward-backward check (:func:`~kp2d_core.vo.lk_propagation.propagate`, guided by the frame's
  motion, or by the last frame's where plain Lucas-Kanade cannot estimate it), then verified
  geometrically through the lens model: the carried points must agree with one motion between
  the two frames (:func:`~kp2d_core.geometry.homography.verify_motion`, at least
  ``TrackConfig.min_verified`` of them, as the feature tracker requires). On a frame where
  Lucas-Kanade failed (it lost more than ``HybridConfig.max_lost_share`` of the tracks or kept
  fewer than ``min_tracks``: blur, a gain swing, a jump) the points it kept are doubtful, and a
  fundamental matrix admits a wrong one anywhere along its epipolar line: there they must also
  fit the frame's homography within ``TrackConfig.max_epipolar_px``, as a re-identified point
  must. A track with parallax may end there and come back by re-identification.
* On a frame the :class:`~kp2d_core.vo.detection_policy.DetectionPolicy` picks, or when
  Lucas-Kanade lost too many tracks, the network runs (on such a recovery frame
  ``HybridConfig.recovery_model``'s network, at ``HybridConfig.recovery_scale`` of its input
  size). Each carried track takes the nearest detection within ``ASSOCIATE_PX`` whose
  descriptor passes the gate (its descriptor is refreshed, its position stays
  Lucas-Kanade's); a track without one is kept at its carried position. Detections left
  over first re-identify lost tracks: recently lost tracks (``HybridConfig.reid_window_s``,
  the newest ``reid_max_lost``) whose descriptors match (mutual nearest neighbours, the
  descriptor gate) at positions that agree with one motion from where they were lost, with
  the same support as any continuation, take their id back (an occlusion, a dropped
  second). Where none of the tracks of that moment is alive again (a blackout), the motion
  those found gives every other track of it one place to be found at: the nearest
  detection there, or, where Lucas-Kanade failed at the loss (its frame is kept), the
  track's patch from that frame, tracked there by Lucas-Kanade under that motion (the
  network does not detect every point again where it was).
  The rest start new tracks (best score first, textured, spread, up to ``max_tracks``: in
  hybrid mode ``HybridConfig.max_tracks``).
* On other frames the frame's features are the carried tracks themselves, with the
  descriptors of their last detection. The frame pipeline hands the keyframe tracker the
  track id of every keypoint: a track's point in the keyframe is its match, the keypoints
  without a track are matched by their descriptors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from kp2d_core.geometry.camera import CameraModel, same_camera
from kp2d_core.geometry.coordinates import warp_points
from kp2d_core.geometry.homography import fit_homography, verify_motion
from kp2d_core.geometry.image_points import ImagePoints
from kp2d_core.geometry.lens_warp import resample_into, to_raw
from kp2d_core.inference.features import Features
from kp2d_core.inference.matching import match_descriptors
from kp2d_core.vo.detection_policy import DetectionPolicy, HybridConfig
from kp2d_core.vo.feature_tracks import (
    MIN_VERIFIED_SHARE,
    TrackConfig,
    Tracks,
    claim_nearest,
    fill_spread,
    texture,
)
from kp2d_core.vo.lk_propagation import brightness, propagate, track

ASSOCIATE_PX = 2.0  # a detection this close to a carried track is that track's
# A re-identified point without anchors (below): within this of the homography of the motion
# the candidates agree on (over a gap the epipolar line alone admits points far along it, on
# another physical point).
REID_PARALLAX_PX = 2.0
# Against the motion of the tracks of its moment alive again (anchors): within this of that
# motion's homography. Within 2 px, 56 of 1459 re-identified points under moving shadows were
# more than 3 px from their own point (tracks carried through gain swings drift by pixels over
# seconds); at 1.5 px wrong ids per 1000 there fell 0.63 -> 0.34 (docs/hybrid_tracking.md).
REID_ANCHORED_PX = 1.5
MIN_ANCHORS = 20  # tracks of a loss event alive again that give the motion since the loss
# Frames kept for finding lost tracks by their patches: those of the newest losses where
# Lucas-Kanade failed (at most 8 were held at once on the hard renders; a camera shaken for
# seconds would otherwise keep every frame of the re-identification window).
KEPT_FRAMES = 10
NANOSECONDS = 1_000_000_000
NONE = np.zeros(0, np.int64)


@dataclass
class TrackSet:
    """Tracks, one row each: live ones after a frame, or recently lost ones."""

    ids: np.ndarray  # (N,) uint64
    ages: np.ndarray  # (N,) int64 frames since the track started
    xy: np.ndarray  # (N, 2) raw pixels (where each was last seen)
    descriptors: np.ndarray  # (N, D) unit rows, of each track's last detection
    scores: np.ndarray  # (N,) float32
    stamps: np.ndarray  # (N,) int64 stamp of the frame each was last seen in

    def take(self, rows: np.ndarray) -> TrackSet:
        return TrackSet(*(getattr(self, f)[rows] for f in TRACK_FIELDS))

    def __len__(self) -> int:
        return int(self.ids.shape[0])


TRACK_FIELDS = ('ids', 'ages', 'xy', 'descriptors', 'scores', 'stamps')


@dataclass(frozen=True)
class LossSnapshot:
    """Every track live at a moment tracks were lost (a loss event).

    Attributes:
        ids: (N,) uint64 their ids.
        xy: (N, 2) raw pixels, where they were in the frame before the loss.
        pixels: (N, 2) the same in the geometry frame of ``HybridTracker.snapshot_camera``.
        gray: (H, W) uint8 that frame, kept where Lucas-Kanade failed at the loss (a
            blackout, a jump), to find its lost tracks again by their patches; else None.
    """

    ids: np.ndarray
    xy: np.ndarray
    pixels: np.ndarray
    gray: np.ndarray | None


def _joined(a: TrackSet | None, b: TrackSet) -> TrackSet:
    if a is None:
        return b
    return TrackSet(*(np.concatenate([getattr(a, f), getattr(b, f)]) for f in TRACK_FIELDS))


@dataclass(frozen=True)
class HybridFrame:
    """What the hybrid tracker made of one frame.

    Attributes:
        features: the frame's keypoints (detections and carried tracks, or carried tracks).
        points: the same in every coordinate system (``ImagePoints``).
        tracks: the live tracks (continued first, then resumed, then new).
        detection: why the network ran on this frame, or '' (Lucas-Kanade carried it).
        resumed: tracks re-identified on this frame.
    """

    features: Features
    points: ImagePoints
    tracks: Tracks
    detection: str
    resumed: int


class HybridTracker:
    """Feed :meth:`step` one frame at a time; see the module docstring."""

    def __init__(self, cfg: HybridConfig | None = None, tracks: TrackConfig | None = None) -> None:
        self.cfg = cfg or HybridConfig(mode='hybrid')
        self.track_cfg = tracks or TrackConfig()
        self.policy = DetectionPolicy(self.cfg)
        self.next_id = 0
        self.reset()

    def reset(self) -> None:
        """End every track (ids keep increasing: a reset never reuses one), forget lost ones."""
        self.live: TrackSet | None = None
        self.lost: TrackSet | None = None  # its ``stamps`` are loss events (``snapshots``)
        self.snapshots: dict[int, LossSnapshot] = {}  # loss event -> the tracks live then
        self.snapshot_camera: CameraModel | None = None
        self.event_stamps: dict[int, int] = {}
        self.next_event = 0
        self.gray: np.ndarray | None = None
        self.normalized: np.ndarray | None = None
        self.motion: np.ndarray | None = None  # (3, 3) the last frame's, raw pixels
        self.policy.reset()

    def request_detection(self, reason: str) -> None:
        """Run the network on the next frame (the keyframe tracker needs a keyframe)."""
        self.policy.request(reason)

    def step(
        self,
        image: np.ndarray,
        gray: np.ndarray,
        stamp_ns: int,
        camera: CameraModel | None,
        detect: Callable[[np.ndarray, bool], Features],
    ) -> HybridFrame:
        """Track one frame.

        Args:
            image: the frame, as ``detect`` takes it.
            gray: (H, W) uint8 grey image of the frame.
            stamp_ns: its stamp (ns), increasing.
            camera: the camera model, or None.
            detect: runs the network on ``image`` (called only when it is needed), its second
                argument True on a frame where Lucas-Kanade failed (the caller's recovery
                network and ``recovery_scale``).
        """
        level = brightness(gray)
        live = self.live if self.gray is not None and self.gray.shape == gray.shape else None
        reason = self.policy.decide(stamp_ns, level, 0 if live is None else len(live))
        moved, carried = self._carry(live, gray, camera)
        self.motion = self._motion(live, moved, carried)
        if not reason and live is not None and self._failed(int(carried.sum()), len(live)):
            reason = 'lk_failed'
        if not reason and live is None:
            reason = 'first_frame'
        if live is not None and self.cfg.reid_window_s > 0 and not carried.all():
            self._lose(live, carried, camera, self._failed(int(carried.sum()), len(live)))
        if reason:
            detected = detect(image, reason == 'lk_failed')
            frame = self._detection_frame(gray, stamp_ns, camera, detected, moved, carried)
        else:
            frame = self._carried_frame(gray, stamp_ns, camera, moved, carried)
        self.policy.observed(stamp_ns, level, bool(reason))
        return HybridFrame(frame[0], frame[1], frame[2], reason, frame[3])

    # ---------------------------------------------------------------- Lucas-Kanade
    def _carry(
        self, live: TrackSet | None, gray: np.ndarray, camera: CameraModel | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """((N, 2) positions of the live tracks in this frame, (N,) bool carried: followed by
        Lucas-Kanade and part of the one motion the carried points agree on, and on its
        homography where Lucas-Kanade failed)."""
        if live is None or not len(live):
            return np.zeros((0, 2)), np.zeros(0, bool)
        moved, ok = propagate(self.gray, gray, live.xy, predicted=self.motion)
        index = np.flatnonzero(ok)
        carried = np.zeros(len(ok), bool)
        cfg = self.track_cfg
        if len(index) >= cfg.min_verified:
            before = ImagePoints.of(live.xy[index], camera).pixels
            after = ImagePoints.of(moved[index], camera).pixels
            inliers, H = verify_motion(before, after, cfg.max_epipolar_px, cfg.max_parallax_px)
            if inliers.sum() >= max(cfg.min_verified, MIN_VERIFIED_SHARE * len(index)):
                if H is not None and self._failed(int(inliers.sum()), len(live)):
                    off = np.linalg.norm(warp_points(H, before) - after, axis=1)
                    inliers &= off <= cfg.max_epipolar_px
                carried[index[inliers]] = True
        return moved, carried

    def _motion(
        self, live: TrackSet | None, moved: np.ndarray, carried: np.ndarray
    ) -> np.ndarray | None:
        """(3, 3) homography of the carried tracks from the previous frame to this one (raw
        pixels), Lucas-Kanade's prediction for the next frame; None with too few of them."""
        if live is None or carried.sum() < self.track_cfg.min_verified:
            return None
        H, _ = fit_homography(live.xy[carried], moved[carried], self.track_cfg.max_epipolar_px)
        return H

    def _failed(self, kept: int, live: int) -> bool:
        """Lucas-Kanade failed on a frame where it kept ``kept`` of ``live`` tracks."""
        cfg = self.cfg
        return kept < cfg.min_tracks or kept < (1 - cfg.max_lost_share) * live

    def _lose(
        self, live: TrackSet, carried: np.ndarray, camera: CameraModel | None, failed: bool
    ) -> None:
        """Remember the tracks lost on this frame with where every live track was, so that a
        later re-identification can be checked against the tracks found again before it, and
        where Lucas-Kanade ``failed`` on it, the frame they were last seen in."""
        event = self.next_event
        self.next_event += 1
        self._snapshots_for(camera)
        pixels = ImagePoints.of(live.xy, camera).pixels
        gray = self.gray if failed else None
        self.snapshots[event] = LossSnapshot(live.ids.copy(), live.xy.copy(), pixels, gray)
        kept = sorted(e for e, snap in self.snapshots.items() if snap.gray is not None)
        for old in kept[: max(0, len(kept) - KEPT_FRAMES)]:  # events are numbered in time
            self.snapshots[old] = replace(self.snapshots[old], gray=None)
        self.event_stamps[event] = int(live.stamps[0]) if len(live) else 0
        gone = live.take(np.flatnonzero(~carried))
        gone.stamps = np.full(len(gone), event, np.int64)  # stamps hold the loss event
        self.lost = _joined(self.lost, gone)

    def _snapshots_for(self, camera: CameraModel | None) -> None:
        """Keep the snapshots' geometry-frame pixels in ``camera``'s frame: computed once per
        loss, and again from the raw pixels only when the camera changed (CameraInfo arriving
        after the first frames), so that a re-identification never mixes two frames."""
        if same_camera(self.snapshot_camera, camera):
            return
        self.snapshots = {
            event: replace(snap, pixels=ImagePoints.of(snap.xy, camera).pixels)
            for event, snap in self.snapshots.items()
        }
        self.snapshot_camera = camera

    # ---------------------------------------------------------------- frames
    def _carried_frame(self, gray, stamp_ns, camera, moved, carried):
        """Features, points, tracks and 0 resumed of a frame Lucas-Kanade carried alone."""
        live = self.live
        keep = np.flatnonzero(carried)
        order = keep[np.argsort(-live.scores[keep], kind='stable')]
        features = Features(
            moved[order], live.scores[order], live.descriptors[order], gray.shape[:2], gray=gray
        )
        points = ImagePoints.of(features.keypoints.astype(np.float64), camera)
        rows = np.arange(len(order))
        tracks = self._assemble(features, points, stamp_ns, order, rows, NONE, NONE, NONE)
        self.gray = gray
        return features, points, tracks, 0

    def _detection_frame(self, gray, stamp_ns, camera, detected, moved, carried):
        """Features, points, tracks and the number resumed of a frame the network ran on
        (``detected``: its detections)."""
        live = self.live
        keep = np.flatnonzero(carried)
        det_for = self._associate(moved[keep], keep, detected)
        taken = det_for >= 0
        extra = keep[~taken]
        # The frame's keypoints: the detections (a taken one at its track's carried position)
        # and the carried tracks no detection confirmed, best score first.
        xy = detected.keypoints.astype(np.float64)
        xy[det_for[taken]] = moved[keep[taken]]
        if len(extra):
            more = (moved[extra], live.scores[extra], live.descriptors[extra])
        else:
            more = (np.zeros((0, 2)), np.zeros(0, np.float32), detected.descriptors[:0])
        at = replace(detected, keypoints=xy, image_size=gray.shape[:2], dense=None, gray=gray)
        features, rank, added = at.appended(*more)
        points = ImagePoints.of(features.keypoints.astype(np.float64), camera)
        previous = np.concatenate([keep[taken], extra]).astype(np.int64)
        count = len(detected)
        rows = np.concatenate([rank[det_for[taken]], added]).astype(np.int64)
        free = np.ones(count, bool)
        free[det_for[taken]] = False
        free_rows = np.sort(rank[np.flatnonzero(free)])
        ids_now = live.ids[previous] if live is not None else np.zeros(0, np.uint64)
        alive = (ids_now, points.pixels[rows])
        lost_idx, lost_rows, motions = self._reidentify(free_rows, features, points, alive)
        aligned_idx, aligned_xy = self._realign(motions, (lost_idx, lost_rows), gray, points)
        if len(aligned_idx):  # keypoints of their own, with their last detection's descriptor
            back = self.lost.take(aligned_idx)
            features, moved_to, new_at = features.appended(
                aligned_xy, back.scores, back.descriptors
            )
            points = ImagePoints.of(features.keypoints.astype(np.float64), camera)
            rows, free_rows = moved_to[rows], np.sort(moved_to[free_rows])
            lost_idx = np.concatenate([lost_idx, aligned_idx])
            lost_rows = np.concatenate([moved_to[lost_rows], new_at])
        new_rows = self._new_rows(features, points, np.concatenate([rows, lost_rows]), free_rows)
        tracks = self._assemble(
            features, points, stamp_ns, previous, rows, lost_idx, lost_rows, new_rows
        )
        self.gray = gray
        return features, points, tracks, len(lost_idx)

    def _associate(self, moved: np.ndarray, keep: np.ndarray, detected: Features) -> np.ndarray:
        """(len(keep),) the detection each carried track takes (nearest within ASSOCIATE_PX,
        descriptor gate, one track per detection), or -1."""
        taken = np.full(len(keep), -1, np.int64)
        if not len(keep) or not len(detected):
            return taken
        rows, chosen = claim_nearest(
            moved,
            detected.keypoints.astype(np.float64),
            ASSOCIATE_PX,
            (self.live.descriptors[keep], detected.descriptors),
            self.track_cfg.max_descriptor_distance,
        )
        taken[rows] = chosen
        return taken

    def _reidentify(
        self, candidates: np.ndarray, features: Features, points: ImagePoints, alive: tuple
    ) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
        """(rows of the lost tracks, rows of ``features``) found again among the candidate
        rows: mutual nearest descriptors within the gate, at positions that agree with the
        motion since they were lost. That motion comes from the tracks of the same moment
        that are alive again (anchors), where there are enough of them; otherwise the
        candidates must agree on one motion among themselves, with the support any
        continuation needs, and the motion they agree on finds the others
        (:meth:`_guided`); third, those motions (loss event -> (3, 3), geometry-frame
        pixels)."""
        lost, cfg = self.lost, self.track_cfg
        if lost is None or not len(lost) or len(candidates) < 1:
            return NONE, NONE, {}
        found = match_descriptors(
            lost.descriptors,
            features.descriptors[candidates],
            max_distance=cfg.max_descriptor_distance,
        )
        lost_idx, rows = found.indices[:, 0], candidates[found.indices[:, 1]]
        keep = np.zeros(len(lost_idx), bool)
        self._snapshots_for(points.camera)
        before = ImagePoints.of(lost.xy[lost_idx], points.camera).pixels
        motions: dict[int, np.ndarray] = {}
        for event in np.unique(lost.stamps[lost_idx]).tolist():
            mine = np.flatnonzero(lost.stamps[lost_idx] == event)
            keep[mine], H = self._agree(event, before[mine], points.pixels[rows[mine]], alive)
            if H is not None:
                motions[event] = H
        lost_idx, rows = lost_idx[keep].astype(np.int64), rows[keep].astype(np.int64)
        more_idx, more_rows = self._guided(motions, (lost_idx, rows), candidates, features, points)
        return np.concatenate([lost_idx, more_idx]), np.concatenate([rows, more_rows]), motions

    def _agree(self, event, before, after, alive) -> tuple[np.ndarray, np.ndarray | None]:
        """((M,) bool: the candidate pairs of one loss event ((M, 2) geometry-frame pixels
        where they were lost and where they are now) that fit its motion, and where the
        candidates gave that motion themselves (no anchors), the (3, 3) homography from the
        loss to now (geometry-frame pixels), else None. Only then: where anchors give the
        motion, most tracks of the moment were carried on and the lost ones were lost for a
        cause (drifted, occluded); found by their motion alone, 1000 tracks at 10 px had
        more wrong ids under night and moving shadows (docs/hybrid_tracking.md)."""
        cfg = self.track_cfg
        ids_then, pixels_then = self.snapshots[event].ids, self.snapshots[event].pixels
        ids_now, pixels_now = alive
        common, then_idx, now_idx = np.intersect1d(ids_then, ids_now, return_indices=True)
        refused = np.zeros(len(before), bool), None
        if len(common) >= MIN_ANCHORS:
            H, _ = fit_homography(pixels_then[then_idx], pixels_now[now_idx], cfg.max_epipolar_px)
            if H is None:
                return refused
            near = np.linalg.norm(warp_points(H, before) - after, axis=1) <= REID_ANCHORED_PX
            return near, None
        if len(before) < cfg.min_verified:
            return refused
        inliers, H = verify_motion(before, after, cfg.max_epipolar_px, REID_PARALLAX_PX)
        if inliers.sum() < max(cfg.min_verified, MIN_VERIFIED_SHARE * len(before)):
            return refused
        return inliers, H

    def _others(self, event, H, found_idx, camera) -> tuple[np.ndarray, np.ndarray]:
        """(K,) rows of the lost tracks of loss ``event`` not among ``found_idx``, and (K, 2)
        where its motion ``H`` (geometry-frame pixels) puts them now, geometry-frame pixels of
        ``camera``."""
        lost = self.lost
        rest = np.setdiff1d(np.flatnonzero(lost.stamps == event), found_idx)
        return rest, warp_points(H, ImagePoints.of(lost.xy[rest], camera).pixels)

    def _guided(self, motions, found, candidates, features, points):
        """(rows of the lost tracks, rows of ``features``) found again, beside the pairs
        ``found`` (the same two arrays), where the motion of their loss event (``motions``:
        event -> (3, 3) homography, geometry-frame pixels) puts them: the nearest candidate
        within REID_PARALLAX_PX whose descriptor passes the gate, one track per candidate.
        Mutual nearest neighbours over every remembered track and every detection find only
        some of them; the motion those give narrows each of the others to one place."""
        lost, used = self.lost, found[1]
        found_idx, found_rows = [NONE], [NONE]
        for event, H in motions.items():
            free = np.setdiff1d(candidates, used)
            if not len(free):
                break  # every candidate is taken
            rest, expected = self._others(event, H, found[0], points.camera)
            if not len(rest):
                continue
            rows, chosen = claim_nearest(
                expected,
                points.pixels[free],
                REID_PARALLAX_PX,
                (lost.descriptors[rest], features.descriptors[free]),
                self.track_cfg.max_descriptor_distance,
            )
            found_idx.append(rest[rows])
            found_rows.append(free[chosen])
            used = np.concatenate([used, found_rows[-1]])
        return np.concatenate(found_idx), np.concatenate(found_rows)

    def _realign(self, motions, found, gray, points) -> tuple[np.ndarray, np.ndarray]:
        """(rows of the lost tracks, (M, 2) raw pixels) found again by their patches, beside
        the pairs ``found`` (rows of the lost tracks, rows of ``points``): for each loss event
        where Lucas-Kanade failed (its frame kept) and the tracks found again gave a motion
        (``motions``), that frame is mapped into ``gray``'s by the motion (through the lens;
        where it has no pixel, ``gray``'s own, so that no border edge pulls Lucas-Kanade's
        coarse levels) and each other track of the event is tracked by Lucas-Kanade from
        where the motion puts it; it is kept where it lands within REID_PARALLAX_PX of that
        place, as a guided detection must. Most points the network found before a blackout
        are not detected again where they are; their patches are still there
        (docs/hybrid_tracking.md)."""
        camera = points.camera
        found_idx, found_xy = [NONE], [np.zeros((0, 2))]
        for event, H in motions.items():
            then = self.snapshots[event].gray
            if then is None or then.shape != gray.shape:
                continue
            rest, expected = self._others(event, H, found[0], camera)
            if not len(rest):
                continue
            start = to_raw(camera, expected)
            finite = np.isfinite(start).all(axis=1)
            rest, start, expected = rest[finite], start[finite], expected[finite]
            mapped, inside = resample_into(then, camera, np.linalg.inv(H), gray.shape[:2])
            mapped[~inside] = gray[~inside]
            moved, ok = track(mapped, gray, start)
            rest, moved, expected = rest[ok], moved[ok], expected[ok]
            landed = ImagePoints.of(moved, camera).pixels
            near = np.linalg.norm(landed - expected, axis=1) <= REID_PARALLAX_PX
            found_idx.append(rest[near])
            found_xy.append(moved[near])
        return np.concatenate(found_idx), np.concatenate(found_xy)

    def _new_rows(self, features, points, taken, free_rows) -> np.ndarray:
        """Rows of ``features`` that start new tracks: free detections (rows are in score
        order) with texture, spread out from every live track, up to ``max_tracks``."""
        cfg = self.track_cfg
        room = cfg.max_tracks - len(taken)
        candidates = np.setdiff1d(free_rows, taken)
        if room <= 0 or not len(candidates):
            return NONE
        if cfg.min_texture > 0 and features.gray is not None:
            candidates = candidates[
                texture(features.gray, points.raw[candidates]) >= cfg.min_texture
            ]
        return fill_spread(
            points.raw,
            taken.astype(np.int64),
            candidates,
            features.image_size,
            cfg.min_distance_px,
            room,
        )

    def _assemble(
        self, features, points, stamp_ns, previous, rows, lost_idx, lost_rows, new_rows
    ) -> Tracks:
        """The frame's tracks (continued: ``previous`` live rows at ``rows``; resumed; new),
        and the state the next frame starts from."""
        live, lost = self.live, self.lost
        new_ids = np.arange(self.next_id, self.next_id + len(new_rows), dtype=np.uint64)
        self.next_id += len(new_rows)
        indices = np.concatenate([rows, lost_rows, new_rows]).astype(np.int64)
        ids = [new_ids]
        ages = [np.zeros(len(new_rows), np.int64)]
        if len(lost_idx):
            ids.insert(0, lost.ids[lost_idx])
            ages.insert(0, lost.ages[lost_idx] + 1)
        if live is not None:
            ids.insert(0, live.ids[previous])
            ages.insert(0, live.ages[previous] + 1)
        xy = points.raw[indices]
        velocity = np.zeros_like(xy)
        normalized = points.normalized[indices] if points.normalized is not None else None
        velocity_normalized = None if normalized is None else np.zeros_like(normalized)
        dt = (
            (int(stamp_ns) - int(live.stamps[0])) / NANOSECONDS
            if live is not None and len(live)
            else 0.0
        )
        count = len(previous)
        if dt > 0 and count:
            velocity[:count] = (xy[:count] - live.xy[previous]) / dt
            if normalized is not None and self.normalized is not None:
                moved = normalized[:count] - self.normalized[previous]
                velocity_normalized[:count] = moved / dt
        scores = features.scores[indices].astype(np.float32)
        tracks = Tracks(
            np.concatenate(ids).astype(np.uint64),
            np.concatenate(ages).astype(np.int64),
            xy,
            normalized,
            velocity,
            velocity_normalized,
            scores,
            indices,
        )
        if len(lost_idx):
            self.lost = lost.take(np.setdiff1d(np.arange(len(lost)), lost_idx))
        self.live = TrackSet(
            tracks.ids,
            tracks.ages,
            xy.copy(),
            features.descriptors[indices],
            scores,
            np.full(len(indices), int(stamp_ns), np.int64),
        )
        self.normalized = normalized
        self._forget(int(stamp_ns))
        return tracks

    def _forget(self, stamp_ns: int) -> None:
        """Drop lost tracks older than the re-identification window and the oldest beyond
        ``reid_max_lost``, and the snapshots no lost track needs any more."""
        if self.lost is None:
            return
        window = int(self.cfg.reid_window_s * NANOSECONDS)
        recent = [e for e, s in self.event_stamps.items() if s >= stamp_ns - window]
        rows = np.flatnonzero(np.isin(self.lost.stamps, recent))
        if len(rows) > self.cfg.reid_max_lost:  # events are numbered in time: newest first
            newest = np.argsort(-self.lost.stamps[rows], kind='stable')[: self.cfg.reid_max_lost]
            rows = np.sort(rows[newest])
        self.lost = self.lost.take(rows)
        used = set(np.unique(self.lost.stamps).tolist())
        for event in list(self.snapshots):
            if event not in used:
                del self.snapshots[event]
                self.event_stamps.pop(event, None)
