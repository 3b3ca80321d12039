"""A small public dev set in HPatches layout, synthesised from held-out photos.

Each photo is treated as a planar scene. It gives two sequences of six views:

* ``v_<name>``: viewpoint changes as a moving robot camera sees them. View k (2..6) differs
  from view 1 by a rotation, a zoom in or out, a keystone (perspective) and a shift whose
  magnitudes are drawn in [s/2, s] of their maxima, s = (k - 1) / 5: view 6 is rotated by
  22.5-45 deg, zoomed by a factor 1.14-1.3 and its corners moved by up to 20 % of the image
  by perspective. Views 2..6 also get a photometric change and JPEG compression of growing
  strength. Content outside view 1 comes from the rest of the photo, as with a real camera.
* ``i_<name>``: illumination changes. The same view under growing gamma, gain, colour cast,
  shading ramp and noise; the homography is the identity.

Everything is drawn from a generator seeded by the photo's name and a build seed, so a build
is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import zlib

import cv2
import numpy as np

from kp2d_core.data import views
from kp2d_core.data.dataset import read_exclude_list
from kp2d_core.images import read_image

NUM_VIEWS = 6


@dataclass(frozen=True)
class ViewpointRange:
    """The strongest viewpoint change of a sequence (view 6); view k gets (k-1)/5 of it."""

    max_angle_deg: float = 45.0
    max_zoom: float = 1.3  # zoom in or out by up to this factor
    max_keystone: float = 0.4  # corner shift by perspective, in half-extents (0.4 = 20 % of W)
    max_shift: float = 0.15  # translation, in half-extents
    base_fill: float = 0.5  # view 1 covers this share of the photo's limiting side
    min_jpeg_quality: int = 60  # view 6's JPEG quality (view 2: 95)
    photometric: float = 0.5  # strength of view 6's illumination change (relight)


def base_quad(photo_hw: tuple[int, int], out_hw: tuple[int, int], fill: float) -> np.ndarray:
    """Centred quad of the view aspect covering ``fill`` of the photo's limiting side."""
    height, width = photo_hw
    aspect = out_hw[0] / out_hw[1]
    half_w = 0.5 * fill * min(width, height / aspect)
    return views.rectangle((width / 2.0, height / 2.0), (half_w, half_w * aspect))


def _magnitude(rng: np.random.Generator, strength: float, size: int | None = None) -> np.ndarray:
    """Signed magnitudes in [strength/2, strength], random sign."""
    sign = rng.choice([-1.0, 1.0], size=size)
    return sign * rng.uniform(0.5 * strength, strength, size=size)


def perturb(
    quad: np.ndarray, strength: float, cfg: ViewpointRange, rng: np.random.Generator
) -> np.ndarray:
    """View 1's quad moved by a random viewpoint change of the given strength in [0, 1]."""
    a, b = _magnitude(rng, strength, 2) * cfg.max_keystone
    zoom = np.exp(_magnitude(rng, strength) * np.log(cfg.max_zoom))
    angle = np.deg2rad(_magnitude(rng, strength) * cfg.max_angle_deg)
    half = np.abs(quad - views.centre_of(quad)).max(axis=0)
    shift = rng.uniform(-1.0, 1.0, size=2) * strength * cfg.max_shift * half
    moved = views.rotate(views.scale(views.keystone(quad, a, b), zoom), angle)
    return views.translate(moved, shift)


def viewpoint_quads(
    photo_hw: tuple[int, int],
    out_hw: tuple[int, int],
    rng: np.random.Generator,
    cfg: ViewpointRange,
) -> list[np.ndarray]:
    """Quads of views 1..6 with strength growing with the index, all inside the photo.

    A draw that leaves the photo is redrawn; after 20 failures its strength shrinks by 5 %.
    """
    height, width = photo_hw
    low, high = np.zeros(2), np.array([width - 1.0, height - 1.0])
    first = base_quad(photo_hw, out_hw, cfg.base_fill)
    quads = [first]
    for k in range(1, NUM_VIEWS):
        strength = k / (NUM_VIEWS - 1)
        for attempt in range(400):
            quad = perturb(first, strength, cfg, rng)
            if views.contains(low, high, quad):
                break
            if attempt % 20 == 19:
                strength *= 0.95
        else:
            quad = first
        quads.append(quad)
    return quads


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` after a JPEG encode/decode round trip at ``quality``."""
    ok, data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError('JPEG encoding failed')
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


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
        np.savetxt(folder / f'H_1_{k}', H / H[2, 2], fmt='%.17g')


def build_scenes(
    photo: np.ndarray,
    name: str,
    out: Path,
    out_hw: tuple[int, int],
    suffix: str = 'png',
    seed: int = 0,
    cfg: ViewpointRange | None = None,
) -> None:
    """Write ``v_<name>`` and ``i_<name>`` for one photo (uint8 BGR) under ``out``."""
    cfg = cfg or ViewpointRange()
    rng = np.random.default_rng([zlib.crc32(name.encode()), seed])
    quads = viewpoint_quads(photo.shape[:2], out_hw, rng, cfg)
    to_view = [views.quad_homography(q, out_hw) for q in quads]
    moved = [views.render_quad(photo, quads[0], out_hw)]
    for k, quad in enumerate(quads[1:], start=1):
        strength = k / (NUM_VIEWS - 1)
        image = relight(views.render_quad(photo, quad, out_hw), cfg.photometric * strength, rng)
        quality = round(95 - (95 - cfg.min_jpeg_quality) * strength)
        moved.append(jpeg(image, quality))
    homographies = [views.relative_homography(to_view[0], H) for H in to_view]
    write_scene(out / f'v_{name}', moved, homographies, suffix)
    base = moved[0]
    lit = [base] + [relight(base, k / (NUM_VIEWS - 1), rng) for k in range(1, NUM_VIEWS)]
    write_scene(out / f'i_{name}', lit, [np.eye(3)] * NUM_VIEWS, suffix)


def scene_name(path: Path) -> str:
    """Short scene name of a pool photo: 'pkg__erase_resource_alpaca.jpg' -> 'alpaca'."""
    stem = path.stem.split('__')[-1].split('resource_')[-1]
    return ''.join(c if c.isalnum() else '_' for c in stem)


def build_devset(
    photos: list[Path],
    out: Path,
    out_hw: tuple[int, int] = (480, 640),
    suffix: str = 'png',
    seed: int = 0,
) -> list[str]:
    """Build the dev set from ``photos``; returns the scene names written."""
    names = []
    for path in photos:
        name = scene_name(path)
        build_scenes(read_image(path), name, out, out_hw, suffix, seed)
        names += [f'i_{name}', f'v_{name}']
    return names


def holdout_photos(pool: Path, holdout_list: Path) -> list[Path]:
    """The photos named in ``holdout_list`` (sorted); raises if any is missing from ``pool``."""
    names = sorted(read_exclude_list(holdout_list))
    missing = [n for n in names if not (pool / n).is_file()]
    if missing:
        raise FileNotFoundError(f'{len(missing)} held-out photos missing in {pool}: {missing[:3]}')
    return [pool / n for n in names]
