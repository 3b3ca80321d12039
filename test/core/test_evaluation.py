"""Evaluation: metrics on hand-checkable cases, the HPatches loader, harness and CLI."""

from __future__ import annotations

import json
from pathlib import Path
import shutil
import subprocess
import sys

import numpy as np
import pytest

from kp2d_core.data.samples import read_image
from kp2d_core.evaluation.devset import build_scenes
from kp2d_core.evaluation.extractors import MethodFeatures, opencv_extractor
from kp2d_core.evaluation.harness import evaluate
from kp2d_core.evaluation.hpatches import DatasetError, iter_pairs, list_scenes, load_pair
from kp2d_core.evaluation.metrics import (
    homography_accuracy,
    matching_score,
    repeatability,
    shared_top_k,
)
from kp2d_core.geometry.coordinates import warp_points
from kp2d_core.inference.probe import sample_photo_path

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / 'test' / 'fixtures' / 'hpatches_tiny'
SHAPE = (240, 320)
EYE = np.eye(3)


def _grid(n: int = 100, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform([10, 10], [310, 230], size=(n, 2))


def _desc(n: int, seed: int = 1) -> np.ndarray:
    d = np.random.default_rng(seed).normal(size=(n, 32)).astype(np.float32)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _all(kpts0, desc0, kpts1, desc1, H, k=300):
    s0, s1 = np.linspace(1, 0.5, len(kpts0)), np.linspace(1, 0.5, len(kpts1))
    rep = repeatability(kpts0, s0, kpts1, s1, H, SHAPE, k)
    cor = homography_accuracy(kpts0, desc0, s0, kpts1, desc1, s1, H, SHAPE, k)
    ms = matching_score(kpts0, desc0, s0, kpts1, desc1, s1, H, SHAPE, k)
    return rep, cor, ms


def test_identity_gives_perfect_scores():
    kpts, desc = _grid(), _desc(100)
    rep, cor, ms = _all(kpts, desc, kpts, desc, EYE)
    assert rep == {'repeatability': 1.0, 'localization_error': 0.0}
    assert cor['cor1'] == cor['cor3'] == cor['cor5'] == 1.0 and cor['corner_error'] < 1e-6
    assert ms == 1.0


def test_known_shift_gives_known_localisation_error():
    kpts, desc = _grid(), _desc(100)
    rep, cor, ms = _all(kpts, desc, kpts + [1.0, 0.0], desc, EYE)
    assert rep['repeatability'] == 1.0
    assert rep['localization_error'] == pytest.approx(1.0, abs=1e-9)
    assert cor['corner_error'] == pytest.approx(1.0, abs=1e-6)
    assert cor['cor1'] == 1.0  # error <= 1 counts
    _, cor2, _ = _all(kpts, desc, kpts + [2.0, 0.0], desc, EYE)
    assert cor2['cor1'] == 0.0 and cor2['cor3'] == 1.0
    rep4, _, ms4 = _all(kpts, desc, kpts + [4.0, 0.0], desc, EYE)
    assert rep4['repeatability'] < 0.1 and ms4 == 0.0


def test_true_homography_is_used():
    H = np.array([[1.05, 0.02, -5.0], [-0.01, 0.97, 4.0], [1e-4, 0.0, 1.0]])
    kpts = _grid()
    kpts1 = warp_points(H, kpts)
    rep, cor, ms = _all(kpts, _desc(100), kpts1, _desc(100), H)
    assert rep['repeatability'] == 1.0 and cor['cor1'] == 1.0 and ms == 1.0
    rep_wrong, _, _ = _all(kpts, _desc(100), kpts1, _desc(100), EYE)
    assert rep_wrong['repeatability'] < 1.0


def test_planted_outlier_changes_matching_score_by_its_share():
    kpts, desc = _grid(50), _desc(50)
    desc1 = desc.copy()
    desc1[[3, 7]] = desc[[7, 3]]  # two points swap descriptors: 2 wrong matches of 50
    _, cor, ms = _all(kpts, desc, kpts, desc1, EYE)
    assert ms == pytest.approx(48 / 50)
    assert cor['cor1'] == 1.0  # RANSAC rejects the outliers


def test_points_outside_the_other_view_are_not_counted():
    kpts = np.array([[50.0, 50.0], [100.0, 100.0], [315.0, 50.0]])
    shift = np.array([[1, 0, 10.0], [0, 1, 0], [0, 0, 1]])  # point 2 of view 0 leaves view 1
    kpts1 = np.array([[60.0, 50.0], [110.0, 100.0], [5.0, 50.0]])  # point 2 not in view 0
    s = np.ones(3)
    idx0, idx1 = shared_top_k(kpts, s, kpts1, s, shift, SHAPE, 300)
    assert idx0.tolist() == [0, 1] and idx1.tolist() == [0, 1]
    rep = repeatability(kpts, s, kpts1, s, shift, SHAPE, 300)
    assert rep['repeatability'] == 1.0


def test_top_k_keeps_the_best_scores():
    kpts = np.array([[20.0 + 30 * i, 100.0] for i in range(10)])
    scores = np.arange(10, dtype=float)
    far = kpts.copy()
    far[5:, 1] += 20.0  # the 5 best-scored (last) points do not repeat
    rep = repeatability(kpts, scores, far, scores, EYE, SHAPE, k=5)
    assert rep['repeatability'] < 0.5
    rep_all = repeatability(kpts, scores, far, scores, EYE, SHAPE, k=10)
    assert rep_all['repeatability'] >= 0.5


def test_too_few_matches_scores_zero():
    kpts, desc = _grid(3), _desc(3)
    _, cor, _ = _all(kpts, desc, kpts, desc, EYE)
    assert cor['cor5'] == 0.0 and cor['corner_error'] == float('inf')


def test_loader_reads_fixture_and_rescales_h():
    assert [p.name for p in list_scenes(FIXTURE)] == ['i_coffee', 'v_coffee']
    assert [p.name for p in list_scenes(FIXTURE, 'v')] == ['v_coffee']
    small = load_pair(FIXTURE / 'v_coffee', 3, (72, 96))
    big = load_pair(FIXTURE / 'v_coffee', 3, (144, 192))
    assert big.image0.shape == (144, 192, 3) and big.split == 'v'
    pts = np.array([[10.0, 10.0], [50.0, 30.0]])
    expected = (warp_points(small.H, (pts + 0.5) / 2 - 0.5) + 0.5) * 2 - 0.5
    assert np.allclose(warp_points(big.H, pts), expected, atol=1e-6)


def test_broken_files_are_reported_not_fatal(tmp_path):
    root = tmp_path / 'hp'
    shutil.copytree(FIXTURE, root)
    (root / 'v_coffee' / '4.ppm').write_bytes(b'P6 garbage')
    (root / 'v_coffee' / 'H_1_5').write_text('1 2 3')
    skipped: list[str] = []
    pairs = list(iter_pairs(root, (72, 96), 'v', skipped))
    assert [p.index for p in pairs] == [2, 3, 6]
    assert len(skipped) == 2 and any('4.ppm' in s for s in skipped)
    with pytest.raises(DatasetError):
        load_pair(root / 'v_coffee', 5, (72, 96))
    with pytest.raises(FileNotFoundError):
        list_scenes(tmp_path / 'missing')


def test_devset_build_is_deterministic(tmp_path):
    photo = read_image(sample_photo_path())
    build_scenes(photo, 'coffee', tmp_path, (72, 96), suffix='ppm')
    for scene in ('i_coffee', 'v_coffee'):
        for k in range(2, 7):
            built = np.loadtxt(tmp_path / scene / f'H_1_{k}')
            assert np.allclose(built, np.loadtxt(FIXTURE / scene / f'H_1_{k}'), atol=1e-8)
    a = read_image(tmp_path / 'v_coffee' / '4.ppm').astype(float)
    assert np.abs(a - read_image(FIXTURE / 'v_coffee' / '4.ppm')).mean() < 1.0


def test_harness_on_fixture_with_a_baseline():
    ev = evaluate('sift', opencv_extractor('sift'), FIXTURE, (72, 96), 100, progress=False)
    assert len(ev.pairs) == 10
    summary = ev.summary()
    assert summary['pairs'] == 10
    assert 0.0 <= summary['repeatability'] <= 1.0 and 0.0 <= summary['matching_score'] <= 1.0
    assert ev.summary('i')['pairs'] == 5
    assert json.loads(json.dumps(ev.to_json(), default=float))['summary']['v']['pairs'] == 5


def test_perfect_extractor_scores_one_on_illumination_pairs():
    def oracle(image: np.ndarray) -> MethodFeatures:
        kpts = _grid(80)
        kpts = kpts * [95 / 320, 71 / 240]
        return MethodFeatures(kpts, np.ones(80), _desc(80), 'l2')

    ev = evaluate('oracle', oracle, FIXTURE, (72, 96), 300, split='i', progress=False)
    s = ev.summary('i')
    assert s['repeatability'] == 1.0 and s['cor1'] == 1.0 and s['matching_score'] == 1.0
    assert s['pipe_cor1'] == 1.0  # the node's matcher and MAGSAC agree on a perfect extractor


def _reference_cor(kpts0, desc0, scores0, kpts1, desc1, scores1, H, shape, k):
    """Cor-1/3/5 written from the KP2D protocol's description, independently of metrics.py:
    shared-view filter (0 <= x < W), top-k by ascending argsort (last k), OpenCV brute force
    with cross-check, findHomography RANSAC 3 px / 5000 iterations, mean corner distance."""
    import cv2

    height, width = shape

    def shared(points, scores, homography):
        moved = cv2.perspectiveTransform(points[None].astype(np.float64), homography)[0]
        keep = (moved[:, 0] >= 0) & (moved[:, 0] < width) & (moved[:, 1] >= 0)
        keep &= moved[:, 1] < height
        idx = np.flatnonzero(keep)
        return idx[np.argsort(scores[idx], kind='stable')[-k:]]

    i0, i1 = shared(kpts0, scores0, H), shared(kpts1, scores1, np.linalg.inv(H))
    bf = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True)
    found = bf.match(desc0[i0].astype(np.float32), desc1[i1].astype(np.float32))
    if len(found) < 4:
        return [0.0, 0.0, 0.0]
    p0 = np.array([kpts0[i0][m.queryIdx] for m in found], np.float64)
    p1 = np.array([kpts1[i1][m.trainIdx] for m in found], np.float64)
    H_est, _ = cv2.findHomography(p0, p1, cv2.RANSAC, 3, maxIters=5000)
    if H_est is None:
        return [0.0, 0.0, 0.0]
    corners = np.array([[0, 0], [0, height - 1], [width - 1, 0], [width - 1, height - 1]], float)
    a = cv2.perspectiveTransform(corners[None], H)[0]
    b = cv2.perspectiveTransform(corners[None], H_est)[0]
    error = np.linalg.norm(a - b, axis=1).mean()
    return [float(error <= t) for t in (1, 3, 5)]


def test_cor_n_equals_the_reference_protocol_on_identical_keypoints():
    rng = np.random.default_rng(7)
    agree = 0
    for _ in range(40):  # noisy matches with many outliers: RANSAC's input order matters
        n = 300
        kpts0 = rng.uniform(0, [95, 71], (n, 2))
        angle = rng.uniform(-0.3, 0.3)
        H = np.array(
            [
                [np.cos(angle), -np.sin(angle), 5.0],
                [np.sin(angle), np.cos(angle), -3.0],
                [1e-4, -2e-4, 1.0],
            ]
        )
        kpts1 = warp_points(H, kpts0) + rng.normal(0, 1.5, (n, 2))
        desc0 = _desc(n)
        desc1 = desc0 + rng.normal(0, 0.09, desc0.shape)
        scores0, scores1 = rng.random(n), rng.random(n)
        ours = homography_accuracy(kpts0, desc0, scores0, kpts1, desc1, scores1, H, SHAPE, 100)
        reference = _reference_cor(kpts0, desc0, scores0, kpts1, desc1, scores1, H, SHAPE, 100)
        assert [ours['cor1'], ours['cor3'], ours['cor5']] == reference
        agree += 1
    assert agree == 40


@pytest.mark.slow
def test_evaluate_cli_end_to_end(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / 'evaluation' / 'evaluate.py'),
        '--random-init',
        '--baselines',
        'orb,akaze',
        '--hpatches',
        str(FIXTURE),
        '--settings',
        '72x96:100',
        '--out',
        str(tmp_path),
        '--no-progress',
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '| KP2D (random init) | 10 |' in out.stdout and '| ORB | 10 |' in out.stdout
    results = json.loads((tmp_path / 'results_72x96.json').read_text())
    assert [r['method'] for r in results] == ['KP2D (random init)', 'ORB', 'AKAZE']
    assert len(results[0]['pairs']) == 10
    for name in ('report.md', 'metrics_72x96.png', 'cor_curve_72x96.png'):
        assert (tmp_path / name).stat().st_size > 1000
