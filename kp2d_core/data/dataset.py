"""Image-folder dataset yielding (target, source, H_source_to_target) training pairs.

Any folder of JPEG/PNG images works, searched recursively (COCO train2017 is one such
folder). Each item is drawn from a generator seeded by (seed, epoch, index), so a sample is
the same whatever worker or process loads it, epochs differ, and a resumed run sees exactly
the data an uninterrupted run would have seen.

    python -m kp2d_core.data.dataset --data DIR --viz 8 --out pairs.png
"""

from __future__ import annotations

from dataclasses import dataclass, field
import logging
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from kp2d_core.data.augment import AugmentConfig, augment
from kp2d_core.data.homographies import HomographyConfig, sample_homography
from kp2d_core.geometry.coordinates import warp_image
from kp2d_core.images import ImageFileError, cover_crop, read_image

LOG = logging.getLogger(__name__)
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.webp')


@dataclass(frozen=True)
class DataConfig:
    """Where training images come from and how pairs are made."""

    root: str = ''  # folder searched recursively for images
    exclude_list: str = ''  # optional text file of file names (one per line) to leave out
    image_size: tuple[int, int] = (240, 320)  # (H, W) of both views
    homography: HomographyConfig = field(default_factory=HomographyConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def list_images(root: str | Path, exclude: set[str] | None = None) -> list[Path]:
    """Sorted image files under ``root`` (recursive), minus names listed in ``exclude``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f'image folder not found: {root}')
    exclude = exclude or set()
    files = sorted(
        p
        for p in root.rglob('*')
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and p.name not in exclude
    )
    if not files:
        raise ValueError(f'no images ({", ".join(IMAGE_SUFFIXES)}) under {root}')
    return files


def read_exclude_list(path: str | Path) -> set[str]:
    """File names from a text file, one per line; '#' starts a comment."""
    names = (line.split('#', 1)[0].strip() for line in Path(path).read_text().splitlines())
    return {name for name in names if name}


def split_files(
    root: str | Path, exclude_list: str, val_images: int, seed: int
) -> tuple[list[Path], list[Path]]:
    """(train, validation) image lists under ``root``: a seeded random hold-out of
    ``val_images`` files (at most half), after leaving out the names in ``exclude_list``."""
    exclude = read_exclude_list(exclude_list) if exclude_list else None
    files = list_images(root, exclude)
    order = np.random.default_rng(seed).permutation(len(files))
    n_val = min(val_images, len(files) // 2)
    val = [files[i] for i in sorted(order[:n_val])]
    train = [files[i] for i in sorted(order[n_val:])]
    return train, val


def load_rgb(path: Path, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1]: scaled to cover ``size`` then centre-cropped.

    Raises:
        FileNotFoundError, ImageFileError: see :func:`kp2d_core.images.read_image`.
    """
    image = cover_crop(read_image(path), size)[..., ::-1]
    return np.ascontiguousarray(image, dtype=np.float32) / 255.0


def make_pair(
    image: np.ndarray, cfg: DataConfig, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """Build one training pair from an (H, W, 3) float RGB image.

    Returns:
        'target' (3, H, W) and 'source' (3, H, W) float32 in [0, 1], and 'H' (3, 3) float32
        mapping source pixels to target pixels.
    """
    H = sample_homography(cfg.image_size, cfg.homography, rng)
    source = warp_image(image, np.linalg.inv(H), cfg.image_size)
    target_aug = augment(image, cfg.augment, rng)
    source_aug = augment(source, cfg.augment, rng)
    return {
        'target': torch.from_numpy(target_aug).permute(2, 0, 1).contiguous(),
        'source': torch.from_numpy(source_aug).permute(2, 0, 1).contiguous(),
        'H': torch.from_numpy(H.astype(np.float32)),
    }


class ImageFolderPairs(Dataset):
    """Self-supervised pairs from a folder of images (see the module docstring).

    Unreadable or truncated files are skipped and the next readable file takes their place, so
    an epoch never crashes on a corrupt image. With ``skip_log``, each skipped file is warned
    about once per run: its name is appended to that file, which :meth:`set_epoch` reads back
    (DataLoader workers are new processes every epoch and share nothing else).
    """

    def __init__(
        self,
        cfg: DataConfig,
        seed: int = 0,
        files: list[Path] | None = None,
        skip_log: Path | None = None,
    ) -> None:
        if files is None:
            exclude = read_exclude_list(cfg.exclude_list) if cfg.exclude_list else None
            files = list_images(cfg.root, exclude)
        if not files:
            raise ValueError('ImageFolderPairs needs at least one image')
        self.files = list(files)
        self.cfg = cfg
        self.seed = seed
        self.epoch = 0
        self.skip_log = skip_log
        self._bad: set[str] = set()

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch`` (call before iterating each epoch)."""
        self.epoch = epoch
        self._bad |= set(self.skipped_files())

    def skipped_files(self) -> list[str]:
        """Names of the files found unreadable so far in this run (needs ``skip_log``)."""
        if self.skip_log is None or not self.skip_log.is_file():
            return sorted(self._bad)
        return sorted(set(self.skip_log.read_text().split('\n')) - {''})

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        for offset in range(len(self.files)):
            path = self.files[(index + offset) % len(self.files)]
            if str(path) in self._bad:
                continue
            try:
                return make_pair(load_rgb(path, self.cfg.image_size), self.cfg, rng)
            except (OSError, ImageFileError) as exc:
                self._skip(path, exc)
        raise RuntimeError(f'no readable image in {self.cfg.root}')

    def _skip(self, path: Path, exc: Exception) -> None:
        self._bad.add(str(path))
        LOG.warning('skipping unreadable image (%s)', exc)
        if self.skip_log is not None:
            with open(self.skip_log, 'a') as handle:  # one short line: an atomic append
                handle.write(f'{path}\n')


def visualise(dataset: ImageFolderPairs, count: int, path: Path) -> None:
    """Write a PNG grid: each row a (target, source) pair with source grid points warped."""
    from kp2d_core.geometry.coordinates import warp_points
    from kp2d_core.viz import draw_keypoints

    height, width = dataset.cfg.image_size
    ys, xs = np.mgrid[16:height:32, 16:width:32]
    points = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    rows = []
    for index in range(min(count, len(dataset))):
        item = dataset[index]
        target = (item['target'].permute(1, 2, 0).numpy()[..., ::-1] * 255).astype(np.uint8)
        source = (item['source'].permute(1, 2, 0).numpy()[..., ::-1] * 255).astype(np.uint8)
        warped = warp_points(item['H'].double().numpy(), points)
        rows.append(np.hstack([draw_keypoints(target, warped), draw_keypoints(source, points)]))
    cv2.imwrite(str(path), np.vstack(rows))


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description='Look at training pairs.')
    parser.add_argument('--data', required=True, help='image folder')
    parser.add_argument('--viz', type=int, default=8, help='number of pairs to draw')
    parser.add_argument('--out', type=Path, default=Path('pairs.png'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    visualise(ImageFolderPairs(DataConfig(root=args.data), seed=args.seed), args.viz, args.out)
    LOG.info(
        'wrote %s (left: target with source grid points warped by H; right: source)', args.out
    )


if __name__ == '__main__':
    main()
