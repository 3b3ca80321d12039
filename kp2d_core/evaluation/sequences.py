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
float). Ground truth is associated with each frame by nearest timestamp within
``max_difference_s``, as the TUM tools do. Listed frames whose file is missing are skipped
and named in ``Sequence.skipped``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from kp2d_core.geometry.camera import CameraModel
from kp2d_core.geometry.poses import make_pose

NANOSECONDS = 1_000_000_000
MAX_DIFFERENCE_S = 0.02  # the TUM association tools' default


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
    """

    name: str
    stamps: np.ndarray
    paths: list[Path]
    camera: CameraModel | None
    poses: dict[int, np.ndarray] = field(default_factory=dict)
    homographies: dict[int, np.ndarray] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


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
    """Decimal seconds (or an integer count of ns when ``where`` says so) -> integer ns."""
    try:
        return int(Decimal(text) * NANOSECONDS)
    except InvalidOperation as exc:
        raise SequenceError(f'{where}: {text!r} is not a timestamp') from exc


def _rows(path: Path, columns: int, sep: str | None = None) -> list[tuple[str, list[str]]]:
    """('file:line', fields) of each data line (``#`` comments and blank lines skipped)."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
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
    """(3, 3) rotation of a (not necessarily unit) quaternion."""
    q = np.array([w, x, y, z], np.float64)
    norm = np.linalg.norm(q)
    if not norm > 0:
        raise ValueError('zero quaternion')
    w, x, y, z = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def associate(
    stamps: np.ndarray, truth: dict[int, np.ndarray], max_difference_s: float
) -> dict[int, np.ndarray]:
    """Frame stamp -> the ground truth nearest in time, within ``max_difference_s``."""
    if not truth:
        return {}
    keys = np.array(sorted(truth), np.int64)
    limit = int(max_difference_s * NANOSECONDS)
    out = {}
    for stamp in stamps.tolist():
        i = int(np.searchsorted(keys, stamp))
        near = [k for k in keys[max(i - 1, 0) : i + 1].tolist()]
        best = min(near, key=lambda k: abs(k - stamp))
        if abs(best - stamp) <= limit:
            out[stamp] = truth[best]
    return out


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
    poses: dict[int, np.ndarray] = {}
    if (folder / 'groundtruth.txt').is_file():
        for where, f in _rows(folder / 'groundtruth.txt', 8):
            t = _numbers(f[1:8], where)
            poses[to_ns(f[0], where)] = make_pose(quaternion_to_rotation(*t[3:7]), t[:3])
    homographies: dict[int, np.ndarray] = {}
    if (folder / 'groundtruth_homography.txt').is_file():
        for where, f in _rows(folder / 'groundtruth_homography.txt', 10):
            homographies[to_ns(f[0], where)] = _numbers(f[1:10], where).reshape(3, 3)
    return Sequence(
        folder.name,
        stamps,
        paths,
        camera,
        associate(stamps, poses, max_difference_s),
        associate(stamps, homographies, max_difference_s),
        skipped,
    )


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
            R = quaternion_to_rotation(v[4], v[5], v[6], v[3])  # stored w, x, y, z
            poses[_integer_ns(f[0], where)] = make_pose(R, v[:3]) @ T_BS
    return Sequence(
        folder.name, stamps, paths, camera, associate(stamps, poses, max_difference_s), {}, skipped
    )


def _integer_ns(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise SequenceError(f'{where}: {text!r} is not a timestamp in ns') from exc


def _euroc_sensor(path: Path) -> tuple[CameraModel, np.ndarray]:
    """The camera model and T_BS (camera-to-body) of an EuRoC sensor.yaml."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
        T_BS = np.asarray(data['T_BS']['data'], np.float64).reshape(4, 4)
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
