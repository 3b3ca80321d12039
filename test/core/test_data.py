"""Training data: homography sampling, photometric augmentation, the image-folder dataset."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch

from kp2d_core.data.augment import (
    AugmentConfig,
    adjust_hue,
    adjust_saturation,
    augment,
    color_jitter,
)
from kp2d_core.data.dataset import DataConfig, ImageFolderPairs, list_images, make_pair
from kp2d_core.data.homographies import HomographyConfig, sample_homography
from kp2d_core.data.samples import read_image
from kp2d_core.geometry.coordinates import image_corners, warp_points
from kp2d_core.inference.probe import sample_photo_path

NO_AUG = AugmentConfig(enabled=False)


def _photo(hw=(120, 160)) -> np.ndarray:
    bgr = cv2.resize(read_image(sample_photo_path()), hw[::-1], interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(bgr[..., ::-1], dtype=np.float32) / 255.0


def test_sampled_homographies_keep_the_source_inside_the_target():
    rng = np.random.default_rng(0)
    cfg = HomographyConfig()
    angles = []
    for _ in range(200):
        H = sample_homography((240, 320), cfg, rng)
        quad = warp_points(H, image_corners(240, 320))
        assert (quad >= -0.5 - 1e-6).all() and (quad <= [319.5 + 1e-6, 239.5 + 1e-6]).all()
        edge = quad[1] - quad[0]
        angles.append(np.arctan2(edge[1], edge[0]))
    assert np.ptp(angles) > 0.5  # rotations really vary (up to +-pi/4)
    again = sample_homography((240, 320), cfg, np.random.default_rng(0))
    assert np.allclose(again, sample_homography((240, 320), cfg, np.random.default_rng(0)))


def test_identity_config_gives_a_centred_crop():
    cfg = HomographyConfig(patch_ratio=0.5, scale_range=(1, 1), max_angle=0, perspective=0)
    H = sample_homography((100, 200), cfg, np.random.default_rng(1))
    quad = warp_points(H, image_corners(100, 200))
    sides = quad.max(0) - quad.min(0)
    assert np.allclose(sides, [0.5 * 200, 0.5 * 100], atol=1.0)


def test_color_jitter_really_changes_colour():
    image = _photo()
    rng = np.random.default_rng(3)
    jittered = [color_jitter(image, AugmentConfig(), rng) for _ in range(8)]
    assert all(j.shape == image.shape and j.dtype == np.float32 for j in jittered)
    assert np.mean([np.abs(j - image).mean() for j in jittered]) > 0.03
    # Each component acts: hue rotation permutes channels for a third of a turn.
    rgb = np.zeros((2, 2, 3), np.float32)
    rgb[..., 0] = 1.0
    assert np.allclose(adjust_hue(rgb, 1 / 3), [0.0, 1.0, 0.0], atol=1e-3)
    gray = adjust_saturation(image, 0.0)
    assert np.allclose(gray[..., 0], gray[..., 1], atol=1e-5)


def test_augment_is_seeded_and_bounded():
    image = _photo()
    a = augment(image, AugmentConfig(), np.random.default_rng(5))
    b = augment(image, AugmentConfig(), np.random.default_rng(5))
    assert np.array_equal(a, b) and a.min() >= 0.0 and a.max() <= 1.0
    assert not np.array_equal(a, augment(image, AugmentConfig(), np.random.default_rng(6)))
    assert np.array_equal(augment(image, NO_AUG, np.random.default_rng(5)), image)
    with pytest.raises(ValueError):
        AugmentConfig(blur_kernels=(2,))


def _bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    maps = xy.astype(np.float32).reshape(-1, 1, 2)
    return cv2.remap(image, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR).reshape(len(xy), -1)


def test_pair_homography_maps_source_onto_target_content():
    cfg = DataConfig(image_size=(120, 160), augment=NO_AUG)
    pair = make_pair(_photo(), cfg, np.random.default_rng(11))
    target = pair['target'].permute(1, 2, 0).numpy()
    source = pair['source'].permute(1, 2, 0).numpy()
    H = pair['H'].double().numpy()
    ys, xs = np.mgrid[10:110:4, 10:150:4]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    good = np.abs(_bilinear(source, pts) - _bilinear(target, warp_points(H, pts))).mean()
    shifted = np.array([[1, 0, 3.0], [0, 1, 0], [0, 0, 1]]) @ H
    bad = np.abs(_bilinear(source, pts) - _bilinear(target, warp_points(shifted, pts))).mean()
    assert good < 0.02 and bad > 2 * good


def _write_folder(root, count: int = 4) -> None:
    photo = read_image(sample_photo_path())
    (root / 'nested').mkdir(parents=True)
    for i in range(count):
        folder = root if i % 2 else root / 'nested'
        cv2.imwrite(str(folder / f'img{i}.png'), np.roll(photo, 37 * i, axis=1))


def test_dataset_is_recursive_deterministic_and_epoch_dependent(tmp_path):
    _write_folder(tmp_path)
    (tmp_path / 'notes.txt').write_text('not an image')
    assert len(list_images(tmp_path)) == 4
    ds = ImageFolderPairs(DataConfig(root=str(tmp_path), image_size=(64, 96)), seed=1)
    first = ds[2]
    assert first['target'].shape == first['source'].shape == (3, 64, 96)
    assert first['H'].shape == (3, 3) and first['H'].dtype == torch.float32
    assert torch.equal(ds[2]['source'], first['source'])
    ds.set_epoch(1)
    assert not torch.equal(ds[2]['H'], first['H'])


def test_corrupt_files_are_skipped_with_one_warning(tmp_path, caplog):
    _write_folder(tmp_path, count=2)
    (tmp_path / 'broken.jpg').write_bytes(b'\xff\xd8\xff garbage')
    ds = ImageFolderPairs(DataConfig(root=str(tmp_path), image_size=(64, 96)))
    broken = [i for i, f in enumerate(ds.files) if f.name == 'broken.jpg'][0]
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert ds[broken]['source'].shape == (3, 64, 96)
    assert sum('broken.jpg' in r.getMessage() for r in caplog.records) == 1


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / 'nope')
    with pytest.raises(ValueError, match='no images'):
        list_images(tmp_path)


def test_shrink_fit_keeps_large_rotations_inside_the_image():
    from kp2d_core.data.homographies import HomographyConfig, sample_homography
    from kp2d_core.geometry.coordinates import image_corners, warp_points

    angles = {}
    for fit in ('reject', 'shrink'):
        cfg = HomographyConfig(scale_range=(0.7, 1.3), fit=fit)
        found = []
        for seed in range(300):
            H = sample_homography((144, 192), cfg, np.random.default_rng(seed))
            corners = warp_points(H, image_corners(144, 192))  # what the source view sees
            assert (corners >= -0.5 - 1e-6).all()
            assert (corners <= [191.5 + 1e-6, 143.5 + 1e-6]).all()
            found.append(abs(np.degrees(np.arctan2(H[1, 0] - H[0, 1], H[0, 0] + H[1, 1]))))
        angles[fit] = np.asarray(found)
    assert (angles['shrink'] > 30).mean() > 2 * (angles['reject'] > 30).mean()
