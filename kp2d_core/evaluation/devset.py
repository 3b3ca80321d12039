"""A small public dev set in HPatches layout, synthesised from held-out photos.

Each photo is treated as a planar scene. It gives two sequences of six views:

* ``v_<name>``: viewpoint changes. Every view is a quadrilateral of the photo, reached by a
  random rotation, zoom, perspective and shift whose strength grows with the view index;
  content outside image 1 comes from the rest of the photo, as with a real camera.
* ``i_<name>``: illumination changes. The same view under growing gamma, gain, colour cast,
  shading ramp and noise; the homography is the identity.

Everything is drawn from a generator seeded by the photo's name, so a build is reproducible.
"""

from __future__ import annotations

from pathlib import Path
import zlib

import cv2
import numpy as np

from kp2d_core.data.dataset import read_exclude_list
from kp2d_core.samples import quad_homography, read_image, render_quad

NUM_VIEWS = 6


def base_quad(photo_hw: tuple[int, int], out_hw: tuple[int, int], fill: float = 0.6) -> np.ndarray:
    """Centred quad of the view aspect covering ``fill`` of the photo's limiting side."""
    height, width = photo_hw
    aspect = out_hw[0] / out_hw[1]
    half_w = 0.5 * fill * min(width, height / aspect)
    half_h = half_w * aspect
    cx, cy = width / 2.0, height / 2.0
    return np.array(
        [
            [cx - half_w, cy - half_h],
            [cx + half_w, cy - half_h],
            [cx + half_w, cy + half_h],
            [cx - half_w, cy + half_h],
        ]
    )


def _perturb(quad: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    centre = quad.mean(axis=0)
    half = np.abs(quad - centre).max(axis=0)
    angle = np.deg2rad(rng.uniform(-30.0, 30.0)) * strength
    scale = np.exp(rng.uniform(-0.35, 0.35) * strength)
    a, b = rng.uniform(-0.3, 0.3, size=2) * strength  # keystones
    delta = np.array([[b, a], [-b, -a], [b, a], [-b, -a]]) * half
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shift = rng.uniform(-0.15, 0.15, size=2) * strength * half
    return ((quad - centre + delta) * scale) @ rot.T + centre + shift


def viewpoint_quads(
    photo_hw: tuple[int, int], out_hw: tuple[int, int], rng: np.random.Generator
) -> list[np.ndarray]:
    """Quads of views 1..6 with strength growing with the index, all inside the photo."""
    height, width = photo_hw
    first = base_quad(photo_hw, out_hw)
    quads = [first]
    for k in range(1, NUM_VIEWS):
        strength = k / (NUM_VIEWS - 1)
        for _ in range(100):
            quad = _perturb(first, strength, rng)
            if (
                (quad >= 0).all()
                and (quad[:, 0] <= width - 1).all()
                and (quad[:, 1] <= height - 1).all()
            ):
                break
            strength *= 0.95
        else:
            quad = first
        quads.append(quad)
    return quads


def relight(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Illumination change of growing ``strength`` in [0, 1] on a uint8 BGR image."""
    x = image.astype(np.float32) / 255.0
    gamma = np.exp(rng.uniform(-0.8, 0.8) * strength)
    gain = np.exp(rng.uniform(-0.6, 0.4) * strength)
    cast = np.exp(rng.uniform(-0.25, 0.25, size=3) * strength).astype(np.float32)
    h, w = x.shape[:2]
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((xs / w - 0.5) * direction[0] + (ys / h - 0.5) * direction[1])[..., None]
    shading = 1.0 + 0.8 * strength * ramp
    x = np.power(x, gamma) * gain * cast * shading
    x = x + rng.normal(0.0, 0.02 * strength, size=x.shape).astype(np.float32)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_scene(
    folder: Path, images: list[np.ndarray], homographies: list[np.ndarray], suffix: str
) -> None:
    """Write ``1.<suffix>..6.<suffix>`` and ``H_1_2..H_1_6`` (homographies from image 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images, start=1):
        if not cv2.imwrite(str(folder / f'{k}.{suffix}'), image):
            raise OSError(f'cannot write {folder / f"{k}.{suffix}"}')
    for k, H in enumerate(homographies[1:], start=2):
        np.savetxt(folder / f'H_1_{k}', H / H[2, 2], fmt='%.10g')


def build_scenes(
    photo: np.ndarray, name: str, out: Path, out_hw: tuple[int, int], suffix: str = 'png'
) -> None:
    """Write ``v_<name>`` and ``i_<name>`` for one photo (uint8 BGR) under ``out``."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    quads = viewpoint_quads(photo.shape[:2], out_hw, rng)
    to_view = [quad_homography(q, out_hw) for q in quads]
    first_inv = np.linalg.inv(to_view[0])
    write_scene(
        out / f'v_{name}',
        [render_quad(photo, q, out_hw) for q in quads],
        [H @ first_inv for H in to_view],
        suffix,
    )
    base = render_quad(photo, quads[0], out_hw)
    lit = [base] + [relight(base, k / (NUM_VIEWS - 1), rng) for k in range(1, NUM_VIEWS)]
    write_scene(out / f'i_{name}', lit, [np.eye(3)] * NUM_VIEWS, suffix)


def scene_name(path: Path) -> str:
    """Short scene name of a pool photo: 'pkg__erase_resource_alpaca.jpg' -> 'alpaca'."""
    stem = path.stem.split('__')[-1].split('resource_')[-1]
    return ''.join(c if c.isalnum() else '_' for c in stem)


def build_devset(
    photos: list[Path], out: Path, out_hw: tuple[int, int] = (480, 640), suffix: str = 'png'
) -> list[str]:
    """Build the dev set from ``photos``; returns the scene names written."""
    names = []
    for path in photos:
        name = scene_name(path)
        build_scenes(read_image(path), name, out, out_hw, suffix)
        names += [f'i_{name}', f'v_{name}']
    return names


def holdout_photos(pool: Path, holdout_list: Path) -> list[Path]:
    """The photos named in ``holdout_list`` (sorted); raises if any is missing from ``pool``."""
    names = sorted(read_exclude_list(holdout_list))
    missing = [n for n in names if not (pool / n).is_file()]
    if missing:
        raise FileNotFoundError(f'{len(missing)} held-out photos missing in {pool}: {missing[:3]}')
    return [pool / n for n in names]
