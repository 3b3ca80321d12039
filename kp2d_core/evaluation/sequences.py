"""Camera sequences with ground truth, in the two layouts real datasets ship in.

* TUM RGB-D style: ``rgb.txt`` (``timestamp path`` per line, ``#`` comments),
  ``groundtruth.txt`` (``timestamp tx ty tz qx qy qz qw``, camera-to-world), ``camera.yaml``
  in the format ROS' camera_calibration writes, and optionally ``groundtruth_homography.txt``
  (``timestamp h00 .. h22``: the homography from the FIRST frame's rectified pixels to this
  frame's rectified pixels, for planar scenes).
* EuRoC ASL: ``mav0/cam0/data.csv``, ``mav0/cam0/sensor.yaml`` and
  ``mav0/state_groundtruth_estimate0/data.csv`` (body poses; the camera pose is
  ``T_WB @ T_BS``).

Timestamps become integer nanoseconds (parsed from their decimal text, never through a
float) and must be times in [0, 1e10) s. Ground truth is associated one to one with the frames
by nearest timestamp within ``max_difference_s``, as the TUM tools do (each ground-truth sample
serves one frame). Listed frames whose file is missing are skipped and named in
``Sequence.skipped``; ground truth that reaches no frame is explained in ``Sequence.notes``.
Anything else that is not what the format says (non-UTF-8 text, a stamp that is not a time,
a quaternion that is not a unit one, a singular homography, an extrinsic that is not a rigid
transform) is a :class:`SequenceError` naming the file and the line.

Estimated trajectories are written in the TUM format too (:func:`write_trajectory`), so the
usual trajectory tools read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from kp2d_core.geometry import poses
from kp2d_core.geometry.camera import CameraModel
from kp2d_core.geometry.poses import is_pose, make_pose, rotation_to_quaternion
from kp2d_core.output_files import atomic_write_text

NANOSECONDS = 1_000_000_000
MAX_DIFFERENCE_S = 0.02  # the TUM association tools' default
MAX_STAMP_S = 10**10  # stamps are times in [0, 1e10) s (before the year 2286)
UNIT_TOLERANCE = 0.01  # a ground-truth quaternion's norm may differ from 1 by this much
MIN_DETERMINANT = 1e-9  # of a ground-truth homography scaled to H[2, 2] = 1


class SequenceError(ValueError):
    """A sequence folder that cannot be read (names the file and the line)."""


@dataclass
class Sequence:
    """Frames of one camera with what is known about them.

    Attributes:
        name: the folder's name.
        stamps: (N,) int64 frame stamps (ns), increasing.
        paths: N image paths.
        camera: the camera model, or None when the sequence has no calibration.
        poses: stamp -> (4, 4) camera-to-world pose, for frames with associated ground truth.
        homographies: stamp -> (3, 3) first-frame-to-this-frame homography (rectified
            pixels), for planar sequences; empty otherwise.
        skipped: listed frames that were left out, with the reason.
        notes: what the reader noticed without refusing it (ground truth that reaches no
            frame, and why).
    """

    name: str
    stamps: np.ndarray
    paths: list[Path]
    camera: CameraModel | None
    poses: dict[int, np.ndarray] = field(default_factory=dict)
    homographies: dict[int, np.ndarray] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_sequence(folder: str | Path, max_difference_s: float = MAX_DIFFERENCE_S) -> Sequence:
    """A TUM-style or EuRoC sequence folder (detected from its files).

    Raises:
        SequenceError: not a sequence folder, or a file that cannot be parsed.
    """
    folder = Path(folder)
    if (folder / 'rgb.txt').is_file():
        return _read_tum(folder, max_difference_s)
    if (folder / 'mav0' / 'cam0' / 'data.csv').is_file():
        return _read_euroc(folder, max_difference_s)
    raise SequenceError(f'{folder}: neither rgb.txt (TUM) nor mav0/cam0/data.csv (EuRoC)')


def to_ns(text: str, where: str) -> int:
    """Decimal seconds -> integer ns.

    Raises:
        SequenceError: not a number, or not a time in [0, MAX_STAMP_S) seconds (NaN,
            infinities, negative or absurd stamps would reorder or overflow the frames).
    """
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise SequenceError(f'{where}: {text[:40]!r} is not a timestamp') from None
    if not value.is_finite() or not 0 <= value < MAX_STAMP_S:
        raise SequenceError(f'{where}: timestamp {text[:40]!r} is not a time in [0, 1e10) s')
    return int(value * NANOSECONDS)


def _rows(path: Path, columns: int, sep: str | None = None) -> list[tuple[str, list[str]]]:
    """('file:line', fields) of each data line (``#`` comments and blank lines skipped)."""
    rows = []
    try:
        text = path.read_bytes().decode('utf-8')
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b'\n') + 1
        raise SequenceError(f'{path.name}:{line}: not UTF-8 text') from None
    for number, line in enumerate(text.splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith('#'):
            continue
        fields = [f.strip() for f in text.split(sep)]
        where = f'{path.name}:{number}'
        if len(fields) < columns:
            raise SequenceError(f'{where}: expected {columns} fields, got {len(fields)}')
        rows.append((where, fields))
    return rows


def _numbers(fields: list[str], where: str) -> np.ndarray:
    try:
        values = np.array([float(v) for v in fields], np.float64)
    except ValueError as exc:
        raise SequenceError(f'{where}: {exc}') from exc
    if not np.isfinite(values).all():
        raise SequenceError(f'{where}: non-finite value')
    return values


def quaternion_to_rotation(x: float, y: float, z: float, w: float) -> np.ndarray:
    """(3, 3) rotation of a unit quaternion.

    Raises:
        ValueError: the norm differs from 1 by more than UNIT_TOLERANCE (a zero or scaled
            quaternion is a broken file: normalising it would hide the error).
    """
    norm = float(np.linalg.norm([x, y, z, w]))
    if not abs(norm - 1.0) <= UNIT_TOLERANCE:
        raise ValueError(f'quaternion of norm {norm:.4g} is not a unit quaternion')
    return poses.quaternion_to_rotation(x, y, z, w)


def associate(
    stamps: np.ndarray, truth: dict[int, np.ndarray], max_difference_s: float
) -> dict[int, np.ndarray]:
    """Frame stamp -> ground truth, one to one, as the TUM tools associate: every (frame,
    sample) pair within ``max_difference_s``, closest pairs first, each frame and each
    sample used once (a sample between two frames serves the nearer one only)."""
    if not truth:
        return {}
    keys = np.array(sorted(truth), np.int64)
    limit = int(max_difference_s * NANOSECONDS)
    pairs = []
    for stamp in stamps.tolist():
        low = int(np.searchsorted(keys, stamp - limit, side='left'))
        high = int(np.searchsorted(keys, stamp + limit, side='right'))
        pairs += [(abs(key - stamp), stamp, key) for key in keys[low:high].tolist()]
    out, used = {}, set()
    for _, stamp, key in sorted(pairs):
        if stamp not in out and key not in used:
            out[stamp] = truth[key]
            used.add(key)
    return out


def association_note(
    stamps: np.ndarray, truth: dict[int, np.ndarray], matched: dict, what: str, limit_s: float
) -> list[str]:
    """Why ground truth that exists reaches no frame (empty when some of it does)."""
    if not truth or matched or not len(stamps):
        return []
    keys = np.array(sorted(truth), np.int64)
    gaps = [abs(keys - s).min() for s in stamps.tolist()]
    return [
        f'{what}: no sample within {limit_s * 1e3:.0f} ms of any frame (the nearest is '
        f'{min(gaps) / NANOSECONDS:.3f} s away): is it from another clock or sequence?'
    ]


def _frames(entries: list[tuple[int, Path]], skipped: list[str]) -> tuple[np.ndarray, list[Path]]:
    """Existing image files in time order; the others go to ``skipped``."""
    kept = []
    for stamp, path in sorted(entries, key=lambda e: e[0]):
        if not path.is_file():
            skipped.append(f'{path.name}: missing')
        elif kept and stamp <= kept[-1][0]:
            skipped.append(f'{path.name}: duplicate timestamp')
        else:
            kept.append((stamp, path))
    return np.array([s for s, _ in kept], np.int64), [p for _, p in kept]


def _read_tum(folder: Path, max_difference_s: float) -> Sequence:
    skipped: list[str] = []
    entries = [(to_ns(f[0], where), folder / f[1]) for where, f in _rows(folder / 'rgb.txt', 2)]
    stamps, paths = _frames(entries, skipped)
    camera = (
        read_camera_yaml(folder / 'camera.yaml') if (folder / 'camera.yaml').is_file() else None
    )
    poses = read_trajectory(folder / 'groundtruth.txt')
    homographies: dict[int, np.ndarray] = {}
    if (folder / 'groundtruth_homography.txt').is_file():
        for where, f in _rows(folder / 'groundtruth_homography.txt', 10):
            homographies[to_ns(f[0], where)] = _homography(f[1:10], where)
    matched_poses = associate(stamps, poses, max_difference_s)
    matched_homographies = associate(stamps, homographies, max_difference_s)
    notes = association_note(stamps, poses, matched_poses, 'groundtruth.txt', max_difference_s)
    notes += association_note(
        stamps,
        homographies,
        matched_homographies,
        'groundtruth_homography.txt',
        max_difference_s,
    )
    return Sequence(
        folder.name, stamps, paths, camera, matched_poses, matched_homographies, skipped, notes
    )


def read_trajectory(path: Path) -> dict[int, np.ndarray]:
    """stamp (ns) -> (4, 4) pose of a TUM trajectory file (``timestamp tx ty tz qx qy qz qw``
    per line); {} when the file does not exist."""
    poses: dict[int, np.ndarray] = {}
    if not path.is_file():
        return poses
    for where, f in _rows(path, 8):
        t = _numbers(f[1:8], where)
        poses[to_ns(f[0], where)] = make_pose(_rotation(t[3:7], where), t[:3])
    return poses


def format_stamp(stamp_ns: int) -> str:
    """Integer ns as the decimal seconds of TUM files (exact: 9 decimals)."""
    return f'{stamp_ns // NANOSECONDS}.{stamp_ns % NANOSECONDS:09d}'


def trajectory_text(poses: dict[int, np.ndarray], header: str = '') -> str:
    """A TUM trajectory: ``timestamp tx ty tz qx qy qz qw`` per pose, in time order."""
    lines = [f'# {header}'] if header else []
    lines.append('# timestamp tx ty tz qx qy qz qw')
    for stamp in sorted(poses):
        T = poses[stamp]
        q = rotation_to_quaternion(T[:3, :3])
        lines.append(' '.join([format_stamp(stamp), *(f'{v:.9f}' for v in (*T[:3, 3], *q))]))
    return '\n'.join(lines) + '\n'


def write_trajectory(path: Path, poses: dict[int, np.ndarray], header: str = '') -> None:
    """Write :func:`trajectory_text` atomically (evo, the TUM tools and this reader read it)."""
    atomic_write_text(path, trajectory_text(poses, header))


def _rotation(q: np.ndarray, where: str) -> np.ndarray:
    try:
        return quaternion_to_rotation(*q)
    except ValueError as exc:
        raise SequenceError(f'{where}: {exc}') from None


def _homography(fields: list[str], where: str) -> np.ndarray:
    """A ground-truth homography of a line: finite, H[2, 2] != 0, not singular."""
    H = _numbers(fields, where).reshape(3, 3)
    if abs(H[2, 2]) < 1e-12 or abs(np.linalg.det(H / H[2, 2])) < MIN_DETERMINANT:
        raise SequenceError(f'{where}: singular homography')
    return H


def read_camera_yaml(path: Path) -> CameraModel:
    """A camera_calibration YAML file (image_width, camera_matrix, distortion_model, ...)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
        size = (int(data['image_height']), int(data['image_width']))
        matrix = data['camera_matrix']['data']
        model = str(data.get('distortion_model', '') or '')
        d = (data.get('distortion_coefficients') or {}).get('data', []) or []
        r = (data.get('rectification_matrix') or {}).get('data')
        p = (data.get('projection_matrix') or {}).get('data')
        return CameraModel.create(matrix, d, model, r, p, size)
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise SequenceError(f'{path}: not a usable camera calibration: {exc}') from exc


def _read_euroc(folder: Path, max_difference_s: float) -> Sequence:
    cam = folder / 'mav0' / 'cam0'
    skipped: list[str] = []
    entries = [
        (_integer_ns(f[0], where), cam / 'data' / f[1])
        for where, f in _rows(cam / 'data.csv', 2, ',')
    ]
    stamps, paths = _frames(entries, skipped)
    camera, T_BS = _euroc_sensor(cam / 'sensor.yaml')
    poses: dict[int, np.ndarray] = {}
    truth = folder / 'mav0' / 'state_groundtruth_estimate0' / 'data.csv'
    if truth.is_file():
        for where, f in _rows(truth, 8, ','):
            v = _numbers(f[1:8], where)
            R = _rotation(np.array([v[4], v[5], v[6], v[3]]), where)  # stored w, x, y, z
            poses[_integer_ns(f[0], where)] = make_pose(R, v[:3]) @ T_BS
    matched = associate(stamps, poses, max_difference_s)
    notes = association_note(stamps, poses, matched, truth.name, max_difference_s)
    return Sequence(folder.name, stamps, paths, camera, matched, {}, skipped, notes)


def _integer_ns(text: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SequenceError(f'{where}: {text[:40]!r} is not a timestamp in ns') from None
    if not 0 <= value < MAX_STAMP_S * NANOSECONDS:
        raise SequenceError(f'{where}: timestamp {value} ns is not a time in [0, 1e10) s')
    return value


def _euroc_sensor(path: Path) -> tuple[CameraModel, np.ndarray]:
    """The camera model and T_BS (camera-to-body) of an EuRoC sensor.yaml."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
        T_BS = np.asarray(data['T_BS']['data'], np.float64).reshape(4, 4)
        if not is_pose(T_BS):
            raise ValueError('T_BS is not a rigid transform (finite rotation, last row 0 0 0 1)')
        fu, fv, cu, cv = (float(v) for v in data['intrinsics'])
        width, height = (int(v) for v in data['resolution'])
        coefficients = [float(v) for v in data.get('distortion_coefficients', [])]
        model = {'radial-tangential': 'plumb_bob', 'equidistant': 'equidistant'}.get(
            str(data.get('distortion_model', '')), str(data.get('distortion_model', ''))
        )
        if model == 'plumb_bob' and len(coefficients) == 4:
            coefficients.append(0.0)  # k1, k2, p1, p2 (+ k3 = 0)
        K = [fu, 0.0, cu, 0.0, fv, cv, 0.0, 0.0, 1.0]
        return CameraModel.create(K, coefficients, model, image_hw=(height, width)), T_BS
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise SequenceError(f'{path}: not a usable EuRoC sensor file: {exc}') from exc
