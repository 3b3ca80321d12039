"""HPatches-layout sequences: ``<scene>/1.ppm .. 6.ppm`` and ``H_1_2 .. H_1_6``.

Scene folders starting with ``i_`` are illumination changes, ``v_`` viewpoint changes. Both
images of a pair are resized to the evaluation size and the homography follows
(``H' = S1 H S0^-1`` with the pixel-centre-exact resize maps of
:func:`kp2d_core.geometry.coordinates.scale_homography`). Images may be .ppm, .png or .jpg.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
import logging
from pathlib import Path

import cv2
import numpy as np

from kp2d_core.geometry.coordinates import scale_homography
from kp2d_core.images import ImageFileError, read_image

LOG = logging.getLogger(__name__)
SPLITS = ('all', 'i', 'v')
IMAGE_SUFFIXES = ('.ppm', '.png', '.jpg')


class DatasetError(ValueError):
    """A file of the evaluation set is missing or unreadable."""


@dataclass(frozen=True)
class Pair:
    """One evaluation pair at the evaluation size (H, W)."""

    scene: str
    index: int  # k of H_1_k
    image0: np.ndarray  # (H, W, 3) uint8 BGR
    image1: np.ndarray
    H: np.ndarray  # (3, 3) image0 -> image1 pixels

    @property
    def split(self) -> str:
        return self.scene[0]


def list_scenes(root: str | Path, split: str = 'all') -> list[Path]:
    """Scene folders under ``root`` of the split ('all', 'i' or 'v'), sorted."""
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f'HPatches folder not found: {root}')
    scenes = sorted(p for p in root.iterdir() if p.is_dir() and p.name[:2] in ('i_', 'v_'))
    if split != 'all':
        scenes = [p for p in scenes if p.name.startswith(split + '_')]
    if not scenes:
        raise DatasetError(f'no i_*/v_* scene folders under {root}')
    return scenes


def _image_path(scene: Path, k: int) -> Path:
    for suffix in IMAGE_SUFFIXES:
        path = scene / f'{k}{suffix}'
        if path.is_file():
            return path
    raise DatasetError(f'{scene}: image {k} ({"/".join(IMAGE_SUFFIXES)}) is missing')


def read_homography(path: Path) -> np.ndarray:
    """A 3x3 homography from a whitespace-separated text file."""
    try:
        H = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise DatasetError(f'cannot read homography {path}: {exc}') from exc
    if H.shape != (3, 3) or not np.isfinite(H).all() or abs(np.linalg.det(H)) < 1e-12:
        raise DatasetError(f'{path} is not a finite, invertible 3x3 homography')
    return H


def read_bgr(path: Path) -> np.ndarray:
    try:
        return read_image(path)
    except (OSError, ImageFileError) as exc:
        raise DatasetError(str(exc)) from exc


def load_pair(scene: Path, k: int, size: tuple[int, int]) -> Pair:
    """Pair (1, k) of ``scene`` resized to ``size`` (H, W)."""
    image0, image1 = read_bgr(_image_path(scene, 1)), read_bgr(_image_path(scene, k))
    H = read_homography(scene / f'H_1_{k}')
    H = scale_homography(H, image0.shape[:2], size, image1.shape[:2], size)
    dsize = (size[1], size[0])
    return Pair(
        scene.name,
        k,
        cv2.resize(image0, dsize, interpolation=cv2.INTER_LINEAR),
        cv2.resize(image1, dsize, interpolation=cv2.INTER_LINEAR),
        H / H[2, 2],
    )


def iter_pairs(
    root: str | Path, size: tuple[int, int], split: str = 'all', skipped: list[str] | None = None
) -> Iterator[Pair]:
    """All (1, k) pairs, k = 2..6, of the split. Broken pairs are logged, listed in
    ``skipped`` and left out, so one bad file does not lose the whole evaluation."""
    for scene in list_scenes(root, split):
        for k in range(2, 7):
            try:
                yield load_pair(scene, k, size)
            except DatasetError as exc:
                LOG.warning('skipping %s pair 1-%d: %s', scene.name, k, exc)
                if skipped is not None:
                    skipped.append(f'{scene.name}/1-{k}: {exc}')


def count_pairs(root: str | Path, split: str = 'all') -> int:
    """Number of pairs :func:`iter_pairs` will try (5 per scene)."""
    return 5 * len(list_scenes(root, split))
