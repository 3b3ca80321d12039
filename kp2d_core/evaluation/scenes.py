"""Synthetic camera sequences with exact ground truth, written in the TUM layout.

Scenes are textured rectangles (photos held out of training) seen through a lens; each has a
camera trajectory (``T_world_cam(t)``), a frame rate and a lens:

* ``poster_handheld``: a hand-held camera facing a poster, rolling up to ~90 deg/s;
* ``poster_fisheye``: the same scene and kind of motion through an equidistant lens;
* ``ground_robot``: a downward camera over a textured floor, driving an S-curve;
* ``rotation``: a camera turning in place (pan and tilt) in a room (a pure rotation: the
  homography is exact whatever the depth);
* ``approach``: walking towards a wall from 3 m to 0.9 m (zoom);
* ``corridor`` and ``corridor_fisheye``: walking down a box-shaped corridor of textured walls,
  floor and ceiling (parallax: no single homography).

Frames get motion blur (sub-frame renders averaged over half the camera's frame period), exposure
changes, sensor noise and JPEG compression; a frame's ground truth is the mean of its
sub-frames' poses (:func:`exposure_pose`). Planar scenes also get
``groundtruth_homography.txt``. Everything is drawn from generators seeded by the build seed
and the scene's name.

Hard conditions, the hand-held poster under what makes front-ends fail (:class:`Condition`):

* ``poster_night``: dim (a sixth of the light), noisy (6 grey levels), a shutter open for the
  whole frame period (long-exposure blur);
* ``poster_fast``: the same path 2.5 times as fast, the shutter open the whole period;
* ``poster_drops``: the 20 Hz camera of ``poster_handheld`` keeping one frame in four (5 Hz:
  dropped frames), each with its own 25 ms shutter;
* ``poster_shadows``: a soft shadow sweeping across the poster and abrupt gain swings;
* ``poster_blackout``: one second of black frames (the lens covered) in the middle;
* ``poster_repetitive``: the poster a tiling of one small patch of a photo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
import zlib

import cv2
import numpy as np

from kp2d_core.evaluation.render import (
    TexturedPlane,
    camera_rays,
    jpeg,
    look_at,
    photometric,
    plane_homography,
    render,
)
from kp2d_core.evaluation.sequences import format_stamp, trajectory_text
from kp2d_core.geometry.camera import CameraModel
from kp2d_core.geometry.poses import nearest_rotation

HW = (480, 640)
PINHOLE = [380.0, 0.0, 319.5, 0.0, 380.0, 239.5, 0.0, 0.0, 1.0]  # ~80 deg horizontal FOV
LENSES = {
    'plumb_bob': (PINHOLE, [-0.28, 0.07, 0.0008, -0.0005, 0.0]),
    'equidistant': (
        [300.0, 0.0, 319.5, 0.0, 300.0, 239.5, 0.0, 0.0, 1.0],
        [0.03, -0.01, 0.002, 0.0],
    ),
}
UP_Y = np.array([0.0, -1.0, 0.0])  # walls: world y points down
BLUR_SAMPLES = 3
TEXEL_M = 0.0025  # texture resolution on the planes


@dataclass(frozen=True)
class Condition:
    """How a scene's frames are degraded beyond the default blur, exposure drift and noise."""

    exposure: float = 0.5  # share of the frame period the shutter is open (motion blur)
    gain: float = 1.0  # exposure gain (night: dim)
    noise: float = 2.0  # sensor noise sigma (grey levels)
    speed: float = 1.0  # the trajectory runs this many times as fast
    shadows: bool = False  # a soft shadow band sweeps across, with abrupt gain swings
    blackout_s: tuple[float, float] | None = None  # the lens is covered between these times
    repetitive: bool = False  # the poster is a tiling of one small patch
    # One frame in this many of the camera's reaches the sequence (frame drops): the shutter
    # stays the camera's (``exposure`` of its own period), only the stamps thin out.
    keep_every: int = 1


@dataclass(frozen=True)
class SceneSpec:
    name: str
    lens: str
    rate_hz: float  # the camera's frame rate
    frames: int
    planar: bool
    condition: Condition = Condition()


SCENES = (
    SceneSpec('poster_handheld', 'plumb_bob', 20.0, 320, True),
    SceneSpec('poster_fisheye', 'equidistant', 20.0, 320, True),
    SceneSpec('ground_robot', 'plumb_bob', 15.0, 300, True),
    SceneSpec('rotation', 'plumb_bob', 30.0, 300, True),
    SceneSpec('approach', 'plumb_bob', 20.0, 300, True),
    SceneSpec('corridor', 'plumb_bob', 20.0, 300, False),
    SceneSpec('corridor_fisheye', 'equidistant', 20.0, 300, False),
    SceneSpec('poster_night', 'plumb_bob', 20.0, 240, True, Condition(1.0, 1 / 6, 6.0)),
    SceneSpec('poster_fast', 'plumb_bob', 20.0, 240, True, Condition(1.0, speed=2.5)),
    SceneSpec('poster_drops', 'plumb_bob', 20.0, 60, True, Condition(keep_every=4)),
    SceneSpec('poster_shadows', 'plumb_bob', 20.0, 240, True, Condition(shadows=True)),
    SceneSpec('poster_blackout', 'plumb_bob', 20.0, 240, True, Condition(blackout_s=(6.0, 7.0))),
    SceneSpec('poster_repetitive', 'plumb_bob', 20.0, 240, True, Condition(repetitive=True)),
)


def camera_for(lens: str, hw: tuple[int, int] = HW) -> CameraModel:
    """The lens of a scene, scaled to an image of ``hw`` (P = K: rectified pixels keep K)."""
    k, d = LENSES[lens]
    scale = hw[1] / HW[1]
    K = np.asarray(k, np.float64).reshape(3, 3)
    K[:2] *= scale
    K[0, 2], K[1, 2] = (hw[1] - 1) / 2.0, (hw[0] - 1) / 2.0
    return CameraModel.create(K.ravel(), d, lens, image_hw=hw)


def _texture(photo: np.ndarray, width_m: float, height_m: float) -> np.ndarray:
    """The photo resized to the plane at TEXEL_M per texel, lightly pre-filtered."""
    size = (max(int(width_m / TEXEL_M), 8), max(int(height_m / TEXEL_M), 8))
    texture = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(texture, (0, 0), 0.6)


def _rect(origin, u, v, photo) -> TexturedPlane:
    origin, u, v = (np.asarray(x, np.float64) for x in (origin, u, v))
    return TexturedPlane(origin, u, v, _texture(photo, np.linalg.norm(u), np.linalg.norm(v)))


def _mosaic(photos, corner, width, height, columns, rows, floor=False):
    """A plane of ``columns`` x ``rows`` photos; a wall (z = corner z, facing -z) or a floor."""
    tile_w, tile_h = width / columns, height / rows
    planes = []
    for r in range(rows):
        for c in range(columns):
            origin = np.asarray(corner, np.float64) + [c * tile_w, r * tile_h, 0.0]
            u, v = [tile_w, 0, 0], [0, tile_h, 0]
            planes.append(_rect(origin, u, v, photos[(r * columns + c) % len(photos)]))
    return planes


def build_scene(spec: SceneSpec, photos: list[np.ndarray]) -> tuple[list, Callable]:
    """(planes, trajectory) of a scene; ``trajectory(t)`` is the camera-to-world pose."""
    if spec.name.startswith('poster'):
        photo = _tiled(photos[0]) if spec.condition.repetitive else photos[0]
        planes = [_rect([-2.0, -1.5, 0.0], [4.0, 0, 0], [0, 3.0, 0], photo)]
        phase, distance = (1.3, 0.9) if spec.name == 'poster_fisheye' else (0.0, 1.4)
        speed = spec.condition.speed
        return planes, lambda t: _handheld(speed * t, phase, distance)
    if spec.name == 'ground_robot':
        return _mosaic(photos, [-1.5, -1.5, 0.0], 7.0, 3.0, 3, 2, floor=True), _ground_robot
    if spec.name == 'rotation':
        return _box(photos, 3.0, 1.5, -3.0, 3.0), _rotation
    if spec.name == 'approach':
        return _mosaic(photos, [-4.0, -2.4, 0.0], 8.0, 4.8, 3, 2), _approach
    return _box(photos, 1.0, 1.2, -1.0, 7.0), _corridor_walk


def _tiled(photo: np.ndarray, tile: int = 96) -> np.ndarray:
    """The photo's central ``tile`` x ``tile`` patch repeated over the photo's size."""
    height, width = photo.shape[:2]
    top, left = (height - tile) // 2, (width - tile) // 2
    patch = photo[top : top + tile, left : left + tile]
    return np.tile(patch, (height // tile + 1, width // tile + 1, 1))[:height, :width]


def _rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    R, _ = cv2.Rodrigues(np.asarray(axis, np.float64) * angle)
    return R


def _handheld(t: float, phase: float, distance: float) -> np.ndarray:
    position = np.array(
        [
            0.25 * np.sin(0.9 * t + phase),
            0.15 * np.sin(1.3 * t + 2 * phase),
            -distance + 0.15 * np.sin(0.5 * t),
        ]
    )
    target = np.array([0.3 * np.sin(0.7 * t + phase), 0.2 * np.sin(0.8 * t), 0.0])
    T = look_at(position, target, UP_Y)
    roll = np.radians(35.0) * np.sin(2 * np.pi * 0.4 * t + phase)  # peak 88 deg/s
    T[:3, :3] = T[:3, :3] @ _rotation_about([0, 0, 1], roll)
    return T


def _ground_robot(t: float) -> np.ndarray:
    x = -0.25 + 0.22 * t
    y = 0.5 * np.sin(0.35 * t)
    heading = np.arctan2(0.5 * 0.35 * np.cos(0.35 * t), 0.25)
    position = np.array([x, y, -0.8])  # the floor is z = 0; the camera looks along +z
    forward = np.array([np.cos(heading), np.sin(heading), 0.0])
    return look_at(position, position + np.array([0, 0, 1.0]) + 0.05 * forward, forward)


def _rotation(t: float) -> np.ndarray:
    pan = np.radians(40.0) * np.sin(2 * np.pi * 0.25 * t)  # peak 63 deg/s
    tilt = np.radians(10.0) * np.sin(2 * np.pi * 0.17 * t)
    T = np.eye(4)
    T[:3, :3] = _rotation_about([0, 1, 0], pan) @ _rotation_about([1, 0, 0], tilt)
    return T


def _approach(t: float) -> np.ndarray:
    distance = 3.0 - 2.1 * min(t / 14.0, 1.0)
    position = np.array([0.15 * np.sin(0.6 * t), 0.08 * np.sin(0.9 * t), -distance])
    return look_at(position, np.array([0.1 * np.sin(0.4 * t), 0.0, 0.0]), UP_Y)


def _box(photos, half_w: float, half_h: float, z0: float, z1: float) -> list[TexturedPlane]:
    """The inside of a box: side walls, floor and ceiling in 2 m tiles along z, and both ends."""
    planes, height, width = [], 2 * half_h, 2 * half_w
    tiles = max(int(round((z1 - z0) / 2.0)), 1)
    step = (z1 - z0) / tiles
    for i in range(tiles):
        a = z0 + i * step
        k = 4 * i
        planes += [
            _rect([-half_w, -half_h, a], [0, 0, step], [0, height, 0], photos[k % len(photos)]),
            _rect(
                [half_w, -half_h, a + step],
                [0, 0, -step],
                [0, height, 0],
                photos[(k + 1) % len(photos)],
            ),
            _rect(
                [-half_w, half_h, a], [width, 0, 0], [0, 0, step], photos[(k + 2) % len(photos)]
            ),
            _rect(
                [-half_w, -half_h, a + step],
                [width, 0, 0],
                [0, 0, -step],
                photos[(k + 3) % len(photos)],
            ),
        ]
    planes.append(_rect([-half_w, -half_h, z1], [width, 0, 0], [0, height, 0], photos[-1]))
    planes.append(_rect([half_w, -half_h, z0], [-width, 0, 0], [0, height, 0], photos[-2]))
    return planes


def _corridor_walk(t: float) -> np.ndarray:
    position = np.array([0.3 * np.sin(0.5 * t), 0.05 * np.sin(2.0 * t), 0.3 * t])
    yaw = np.radians(20.0) * np.sin(0.4 * t)
    target = position + np.array([np.sin(yaw), 0.0, np.cos(yaw)])
    return look_at(position, target, UP_Y)


def render_sequence(
    spec: SceneSpec,
    photos: list[np.ndarray],
    out: Path,
    seed: int = 0,
    frames: int | None = None,
    hw: tuple[int, int] = HW,
) -> Path:
    """Write one scene as a TUM-layout sequence folder ``out/<name>``; returns it."""
    count = frames or spec.frames
    folder = out / spec.name
    (folder / 'rgb').mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, zlib.crc32(spec.name.encode())])
    camera = camera_for(spec.lens, hw)
    planes, trajectory = build_scene(spec, photos)
    rays = camera_rays(camera)
    condition = spec.condition
    period = 1.0 / spec.rate_hz  # the camera's; its shutter is open a share of it
    step = condition.keep_every * period  # between the frames the sequence keeps
    gains = _gains(count, rng, condition.shadows) * condition.gain
    blur = BLUR_SAMPLES if condition.exposure <= 0.5 else 2 * BLUR_SAMPLES + 1
    poses, homographies, names = [], [], []
    for index in range(count):
        t = index * step
        offsets = (np.arange(blur) - (blur - 1) / 2) * condition.exposure * period / blur
        samples = [trajectory(t + offset) for offset in offsets]
        image = np.mean([render(planes, T, rays) for T in samples], axis=0)
        image = image * _shadow(image.shape[:2], t) if condition.shadows else image
        covered = condition.blackout_s is not None
        if covered and condition.blackout_s[0] <= t < condition.blackout_s[1]:
            image = np.zeros_like(image)
        image = photometric(image, gains[index], condition.noise, rng)
        name = f'rgb/{index:06d}.jpg'
        (folder / name).write_bytes(jpeg(image, int(rng.integers(80, 93))))
        names.append(name)
        poses.append(exposure_pose(samples))
        if spec.planar:
            homographies.append(plane_homography(planes[0], poses[0], poses[-1], camera.P))
    stamps = [int(round((1000.0 + i * step) * 1e9)) for i in range(count)]
    write_tum(folder, camera, stamps, names, poses, homographies)
    return folder


def exposure_pose(samples: list[np.ndarray]) -> np.ndarray:
    """(4, 4) the pose a blurred frame shows: the mean of its exposure's (4, 4) sub-frame
    poses (rotations averaged and projected back onto SO(3)).

    It is the pose at the stamp only while the camera moves at a constant rate. Under an
    oscillating roll of angular frequency w the sub-frames show w^2 var(offsets) / 2 less of
    the roll angle than the stamp's pose: the hand-held roll (35 deg at 0.4 Hz, three
    sub-frames within 25 ms) 1.5e-4 of it, up to 0.01 deg over a 1-s window, the scale of
    the front-ends' rotation errors there; fast motion (1 Hz, seven within 50 ms) up to
    0.14 deg per frame.
    """
    stacked = np.stack(samples)
    pose = np.eye(4)
    pose[:3, :3] = nearest_rotation(stacked[:, :3, :3].mean(axis=0))
    pose[:3, 3] = stacked[:, :3, 3].mean(axis=0)
    return pose


def _gains(count: int, rng: np.random.Generator, swings: bool = False) -> np.ndarray:
    """Exposure: slow drift plus a few abrupt changes (auto-exposure steps); with ``swings``
    six more steps of 0.6x to 1.6x."""
    t = np.arange(count)
    gains = 1.0 + 0.2 * np.sin(2 * np.pi * t / max(count / 1.5, 1))
    for start in rng.integers(0, count, size=3):
        gains[start:] *= rng.uniform(0.8, 1.2)
    if swings:
        for start in rng.integers(0, count, size=6):
            gains[start:] *= rng.uniform(0.6, 1.6)
        gains = np.clip(gains, 0.3, 2.5)
    return gains


def _shadow(hw: tuple[int, int], t: float) -> np.ndarray:
    """(H, W, 1) light factor of a soft shadow band (35 % of the light) sweeping across the
    image every 4 seconds."""
    height, width = hw
    x = np.arange(width)[None, :] + 0.4 * np.arange(height)[:, None]
    centre = (t / 4.0 % 1.0) * 1.6 * width - 0.3 * width
    band = np.exp(-(((x - centre) / (0.12 * width)) ** 2))
    return (1.0 - 0.65 * band)[..., None]


def write_tum(folder: Path, camera: CameraModel, stamps, names, poses, homographies) -> None:
    """rgb.txt, groundtruth.txt, camera.yaml and, for planar scenes, groundtruth_homography.txt."""
    seconds = [format_stamp(s) for s in stamps]
    (folder / 'rgb.txt').write_text(
        '# timestamp filename\n' + ''.join(f'{s} {n}\n' for s, n in zip(seconds, names))
    )
    (folder / 'groundtruth.txt').write_text(trajectory_text(dict(zip(stamps, poses))))
    if homographies:
        rows = [
            ' '.join([s, *(f'{v:.12g}' for v in H.ravel())]) for s, H in zip(seconds, homographies)
        ]
        (folder / 'groundtruth_homography.txt').write_text(
            '# timestamp h00 h01 h02 h10 h11 h12 h20 h21 h22 '
            '(first frame -> this frame, rectified pixels)\n' + '\n'.join(rows) + '\n'
        )
    (folder / 'camera.yaml').write_text(camera_yaml(camera, folder.name))


def camera_yaml(camera: CameraModel, name: str) -> str:
    """The calibration in the format ROS' camera_calibration writes."""
    height, width = camera.image_hw
    P = np.concatenate([camera.P, np.zeros((3, 1))], axis=1)
    D = camera.D if camera.model else np.zeros(5)

    def matrix(values: np.ndarray, rows: int, cols: int) -> str:
        data = ', '.join(f'{v:.9g}' for v in np.asarray(values).ravel())
        return f'\n  rows: {rows}\n  cols: {cols}\n  data: [{data}]'

    return (
        f'image_width: {width}\nimage_height: {height}\ncamera_name: {name}\n'
        f'camera_matrix:{matrix(camera.K, 3, 3)}\n'
        f'distortion_model: {camera.model or "plumb_bob"}\n'
        f'distortion_coefficients:{matrix(D, 1, len(D))}\n'
        f'rectification_matrix:{matrix(camera.R, 3, 3)}\n'
        f'projection_matrix:{matrix(P, 3, 4)}\n'
    )
