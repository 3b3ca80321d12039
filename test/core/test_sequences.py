"""The sequence benchmark: readers (TUM, EuRoC), trajectory metrics with known answers, and a
tiny rendered sequence end to end through every front-end."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import cv2
import numpy as np
import pytest

from kp2d_core.evaluation.render import look_at
from kp2d_core.evaluation.scenes import (
    SCENES,
    build_scene,
    camera_for,
    exposure_pose,
    render_sequence,
    write_tum,
)
from kp2d_core.evaluation.sequences import SequenceError, read_sequence
from kp2d_core.evaluation.vo import ate_rmse, relative_errors, rpe, umeyama
from kp2d_core.geometry.poses import make_pose, nearest_rotation
from kp2d_core.images import read_image
from kp2d_core.inference.probe import sample_photo_path
from kp2d_testing.blas_spy import blas_threads_seen

ROOT = Path(__file__).resolve().parents[2]
SECOND = 1_000_000_000


def _trajectory(count: int = 40, rate: float = 10.0) -> dict[int, np.ndarray]:
    """A camera circling and turning, one pose per 1/rate s."""
    poses = {}
    for i in range(count):
        t = i / rate
        position = np.array([np.cos(0.5 * t), 0.1 * t, np.sin(0.5 * t)])
        poses[int(round(t * SECOND))] = look_at(position, np.zeros(3), np.array([0, -1.0, 0]))
    return poses


def test_ate_and_rpe_known_answers():
    truth = _trajectory()
    ate, scale, _, _ = ate_rmse(truth, truth)
    assert ate == pytest.approx(0.0, abs=1e-9) and scale == pytest.approx(1.0)
    assert rpe(truth, truth, 1.0) == pytest.approx((0.0, 0.0), abs=1e-6)
    # A similarity transform of the truth (monocular: unknown scale) aligns back exactly.
    s, R = 0.25, cv2.Rodrigues(np.array([0.2, -0.4, 0.1]))[0]
    similar = {
        k: make_pose(R @ T[:3, :3], s * R @ T[:3, 3] + [1.0, 2.0, 3.0]) for k, T in truth.items()
    }
    ate, scale, _, _ = ate_rmse(similar, truth)
    assert ate == pytest.approx(0.0, abs=1e-9) and scale == pytest.approx(1 / s)
    t_err, r_err = rpe(similar, truth, scale)
    assert t_err == pytest.approx(0.0, abs=1e-9) and r_err == pytest.approx(0.0, abs=1e-6)
    # A drift of 0.1 m per second along the camera's x axis: RPE over 1 s is 0.1 m.
    drifted = {}
    for k, T in truth.items():
        moved = T.copy()
        moved[:3, 3] += 0.1 * (k / SECOND) * np.array([1.0, 0, 0])
        drifted[k] = moved
    t_err, r_err = rpe(drifted, truth, 1.0)
    assert t_err == pytest.approx(0.1, rel=1e-6) and r_err == pytest.approx(0.0, abs=1e-6)
    # One pose turned 30 degrees: the windows it ends or starts err by 30, the others by 0;
    # the RMSE counts them, the median does not.
    turned = dict(truth)
    middle = sorted(truth)[len(truth) // 2]
    turned[middle] = make_pose(cv2.Rodrigues(np.array([0.0, np.pi / 6, 0.0]))[0], [0, 0, 0])
    turned[middle] = truth[middle] @ turned[middle]
    translations, rotations = relative_errors(turned, truth, 1.0)
    assert len(rotations) == len(translations) > 4
    assert np.sort(rotations)[-2:] == pytest.approx([30.0, 30.0]) and np.median(rotations) < 1e-6
    assert rpe(turned, truth, 1.0)[1] == pytest.approx(30.0 * np.sqrt(2 / len(rotations)))
    points = np.random.default_rng(0).normal(size=(20, 3))
    s, R, t = umeyama(points, 3.0 * points + 1.0)
    assert s == pytest.approx(3.0) and np.allclose(R, np.eye(3)) and np.allclose(t, 1.0)


def test_tum_reader_exact_stamps_association_and_skips(tmp_path):
    camera = camera_for('plumb_bob', (120, 160))
    folder = tmp_path / 'tum'
    (folder / 'rgb').mkdir(parents=True)
    names = [f'rgb/{i}.png' for i in range(4)]
    for name in names[:3]:  # the fourth is missing
        cv2.imwrite(str(folder / name), np.zeros((120, 160, 3), np.uint8))
    stamps = [1305031102_175304000 + i * 33_333_333 for i in range(4)]
    poses = [
        look_at(np.array([0.0, 0, -1 - 0.1 * i]), np.zeros(3), np.array([0, -1.0, 0]))
        for i in range(4)
    ]
    write_tum(folder, camera, stamps, names, poses, [np.eye(3)] * 4)
    sequence = read_sequence(folder)
    assert sequence.stamps.tolist() == stamps[:3]  # exact integer nanoseconds
    assert sequence.skipped == ['3.png: missing']
    assert np.allclose(sequence.poses[stamps[1]], poses[1], atol=1e-8)
    assert np.allclose(sequence.camera.D, camera.D) and sequence.camera.model == 'plumb_bob'
    assert set(sequence.homographies) == set(stamps[:3])
    (folder / 'groundtruth.txt').write_text('1305031102.175304 0 0 0 0 0 0\n')
    with pytest.raises(SequenceError, match='groundtruth.txt:1: expected 8 fields'):
        read_sequence(folder)
    with pytest.raises(SequenceError, match='neither'):
        read_sequence(tmp_path)


def test_euroc_reader_applies_the_camera_extrinsics(tmp_path):
    cam = tmp_path / 'seq' / 'mav0' / 'cam0'
    (cam / 'data').mkdir(parents=True)
    truth_dir = tmp_path / 'seq' / 'mav0' / 'state_groundtruth_estimate0'
    truth_dir.mkdir(parents=True)
    stamps = [1403636579763555584 + i * 50_000_000 for i in range(3)]
    lines = ['#timestamp [ns],filename']
    for stamp in stamps:
        cv2.imwrite(str(cam / 'data' / f'{stamp}.png'), np.zeros((48, 64), np.uint8))
        lines.append(f'{stamp},{stamp}.png')
    (cam / 'data.csv').write_text('\n'.join(lines) + '\n')
    T_BS = make_pose(cv2.Rodrigues(np.array([0.0, 0.0, np.pi / 2]))[0], [0.1, 0.0, 0.0])
    (cam / 'sensor.yaml').write_text(
        'T_BS:\n  cols: 4\n  rows: 4\n  data: ['
        + ', '.join(f'{v:.12g}' for v in T_BS.ravel())
        + ']\nresolution: [64, 48]\ncamera_model: pinhole\nintrinsics: [40.0, 40.0, 31.5, 23.5]\n'
        'distortion_model: radial-tangential\ndistortion_coefficients: [-0.2, 0.05, 0.0, 0.0]\n'
    )
    rows = [
        '#timestamp, p_RS_R_x [m], p_RS_R_y [m], p_RS_R_z [m], q_RS_w [], q_RS_x [], '
        'q_RS_y [], q_RS_z [], v_x, v_y, v_z, bw_x, bw_y, bw_z, ba_x, ba_y, ba_z'
    ]
    for i, stamp in enumerate(stamps):
        rows.append(f'{stamp + 1000},{i * 1.0},0,0,1,0,0,0' + ',0' * 9)
    (truth_dir / 'data.csv').write_text('\n'.join(rows) + '\n')
    sequence = read_sequence(tmp_path / 'seq')
    assert sequence.stamps.tolist() == stamps and len(sequence.paths) == 3
    assert sequence.camera.model == 'plumb_bob' and len(sequence.camera.D) == 5
    expected = make_pose(np.eye(3), [2.0, 0, 0]) @ T_BS  # the body pose, then T_BS
    assert np.allclose(sequence.poses[stamps[2]], expected)


def _load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / 'evaluation' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_tiny_rendered_sequence_through_every_front_end(tmp_path):
    photo = read_image(sample_photo_path())
    spec = next(s for s in SCENES if s.name == 'poster_handheld')
    folder = render_sequence(
        spec, [photo] * 12, tmp_path / 'seqs', seed=3, frames=5, hw=(120, 160)
    )
    sequence = read_sequence(folder)
    assert len(sequence.stamps) == 5 and len(sequence.poses) == 5
    assert len(sequence.homographies) == 5 and sequence.camera.distorted
    out = tmp_path / 'vo'
    command = [
        sys.executable,
        str(ROOT / 'evaluation' / 'evaluate_vo.py'),
        str(folder),
        '--out',
        str(out),
        '--front-ends',
        'kp2d,orb,akaze,sift,klt,kp2d_detected,kp2d_subpixel,sift_detected',
        '--top-k',
        '300',
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = json.loads((out / 'vo_results.json').read_text())
    names = ['kp2d', 'orb', 'akaze', 'sift', 'klt', 'kp2d_detected', 'kp2d_subpixel']
    names.append('sift_detected')
    assert [r['front_end'] for r in results] == names
    keys = {
        'sequence',
        'front_end',
        'frames',
        'tracked_ratio',
        'pose_ratio',
        'ate_rmse',
        'rpe_trans',
        'rpe_rot_deg',
        'rpe_rot_deg_median',
        'h_corner_err_px_median',
        'track_length_median',
        'latency_ms_median',
    }
    for row in results:
        assert keys <= set(row) and row['frames'] == 5
        assert 0.0 <= row['tracked_ratio'] <= 1.0 and 0.0 <= row['pose_ratio'] <= 1.0
    for kp2d in (results[0], results[5], results[6]):
        assert kp2d['tracked_ratio'] == 1.0 and kp2d['h_corner_err_px_median'] < 2.0
        assert kp2d['track_length_median'] >= 2
    assert (out / 'report.md').is_file() and (out / f'{sequence.name}.png').is_file()


def test_the_benchmark_s_ransac_threshold_reaches_every_front_end():
    import argparse

    module = _load_script('evaluate_vo')
    args = argparse.Namespace(top_k=50, checkpoint=None, device='cpu', ransac_threshold=None)
    default = module.make_pipeline('orb', args).tracker.cfg.ransac_threshold_px
    for name in ('orb', 'klt', 'sift_detected'):
        args.ransac_threshold = 2.5
        assert module.make_pipeline(name, args).tracker.cfg.ransac_threshold_px == 2.5
    assert default == 3.0
    args.ransac_threshold = 0.0
    with pytest.raises(ValueError, match='ransac_threshold_px'):
        module.make_pipeline('orb', args)


def test_the_benchmark_s_recovery_scale_reaches_the_hybrid_front_ends():
    import argparse

    module = _load_script('evaluate_vo')
    args = argparse.Namespace(top_k=50, checkpoint=None, device='cpu', ransac_threshold=None)
    assert module.make_pipeline('orb_hybrid', args).hybrid.cfg.recovery_scale == 1.0
    args.recovery_scale = 0.5
    assert module.make_pipeline('klt_hybrid', args).hybrid.cfg.recovery_scale == 0.5
    args.recovery_scale = 0.0
    with pytest.raises(ValueError, match='recovery_scale'):
        module.make_pipeline('orb_hybrid', args)


def test_a_reset_pipeline_runs_a_sequence_as_a_fresh_one():
    """The benchmark runs every sequence through one pipeline per front-end: a reset must
    leave nothing of the previous sequence, also in a front-end that tracks between frames
    (KLT once carried corners tracked from the last frame of the previous sequence)."""
    from kp2d_core.data.samples import synthetic_sequence
    from kp2d_core.evaluation.frontends import KltExtractor
    from kp2d_core.vo.frame_pipeline import FramePipeline

    first, _ = synthetic_sequence(4, (120, 160))
    second = [np.ascontiguousarray(frame[::-1, ::-1]) for frame in first]  # another scene

    def run(pipeline: FramePipeline, frames) -> list:
        pipeline.reset()
        out = [pipeline.process(frame, (k + 1) * SECOND) for k, frame in enumerate(frames)]
        return [(r.features.keypoints, r.tracks.ages, r.track.H_key_to_cur) for r in out]

    reused = FramePipeline(KltExtractor(200))
    run(reused, first)
    again, fresh = run(reused, second), run(FramePipeline(KltExtractor(200)), second)
    for (xy_a, ages_a, H_a), (xy_b, ages_b, H_b) in zip(again, fresh):
        assert np.array_equal(xy_a, xy_b) and np.array_equal(ages_a, ages_b)
        assert (H_a is None and H_b is None) or np.allclose(H_a, H_b)


HARD = ('poster_night', 'poster_fast', 'poster_drops', 'poster_shadows', 'poster_repetitive')


@pytest.mark.parametrize('name', HARD)
def test_hard_condition_generators_are_deterministic_from_their_seed(tmp_path, name):
    photo = read_image(sample_photo_path())
    spec = next(s for s in SCENES if s.name == name)
    frames = {}
    for run, seed in (('a', 5), ('b', 5), ('c', 6)):
        folder = render_sequence(
            spec, [photo] * 12, tmp_path / run, seed=seed, frames=3, hw=(48, 64)
        )
        frames[run] = [p.read_bytes() for p in sorted((folder / 'rgb').glob('*.jpg'))]
    assert frames['a'] == frames['b'] and frames['a'] != frames['c']


def test_the_blackout_covers_one_second_of_frames(tmp_path):
    photo = read_image(sample_photo_path())
    spec = next(s for s in SCENES if s.name == 'poster_blackout')
    folder = render_sequence(spec, [photo] * 12, tmp_path, seed=0, frames=142, hw=(24, 32))
    means = [read_image(p).mean() for p in sorted((folder / 'rgb').glob('*.jpg'))]
    black = [i for i, m in enumerate(means) if m < 8]
    assert black == list(range(120, 140))  # 6 s to 7 s at 20 Hz


def _truth(spec_name: str, folder: Path, frames: int) -> dict[int, np.ndarray]:
    spec = next(s for s in SCENES if s.name == spec_name)
    photo = read_image(sample_photo_path())
    rendered = render_sequence(spec, [photo] * 12, folder, seed=0, frames=frames, hw=(24, 32))
    return read_sequence(rendered).poses


def test_dropped_frames_keep_the_camera_s_shutter_and_truth(tmp_path):
    """poster_drops is the 20 Hz hand-held camera keeping one frame in four: each kept frame
    shows (and its truth is) the hand-held frame of its stamp, 25 ms of shutter, not 100."""
    drops = _truth('poster_drops', tmp_path / 'drops', 5)
    handheld = _truth('poster_handheld', tmp_path / 'handheld', 17)
    stamps = sorted(drops)
    assert np.diff(stamps).tolist() == [200_000_000] * 4
    for stamp in stamps:
        assert np.allclose(drops[stamp], handheld[stamp], rtol=0.0, atol=1e-9)


def _roll_of(R: np.ndarray) -> float:
    return float(np.arctan2(R[1, 0], R[0, 0]))


def test_exposure_pose_is_the_mean_of_its_sub_frame_poses():
    angles = np.radians([10.0, 10.5, 12.0])  # an accelerating roll: the mean is not the middle
    samples = [make_pose(cv2.Rodrigues(np.array([0.0, 0.0, a]))[0], [0.0, 0.0, a]) for a in angles]
    pose = exposure_pose(samples)
    assert _roll_of(pose[:3, :3]) == pytest.approx(angles.mean(), abs=1e-5)
    assert np.allclose(pose[:3, 3], [0.0, 0.0, angles.mean()])
    assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3))


def test_a_blurred_frame_s_truth_is_the_pose_its_shutter_integrates(tmp_path):
    """Fast motion at its largest roll (1 Hz, 35 deg, the shutter open the whole 50 ms): the
    blurred frame shows the pose averaged over the shutter, 0.14 deg from the stamp's."""
    photo = read_image(sample_photo_path())
    spec = next(s for s in SCENES if s.name == 'poster_fast')
    folder = render_sequence(spec, [photo] * 12, tmp_path, seed=0, frames=6, hw=(24, 32))
    seq = read_sequence(folder)
    stamp = seq.stamps[5]
    truth = seq.poses[stamp]
    _, trajectory = build_scene(spec, [photo] * 12)
    t, shutter = 5 / spec.rate_hz, spec.condition.exposure / spec.rate_hz
    dense = [trajectory(t + o) for o in np.linspace(-shutter / 2, shutter / 2, 201)]
    integrated = nearest_rotation(np.mean([T[:3, :3] for T in dense], axis=0))
    at_stamp = trajectory(t)

    def angle(R_a: np.ndarray, R_b: np.ndarray) -> float:
        return float(np.linalg.norm(cv2.Rodrigues(R_a.T @ R_b)[0]))

    assert angle(at_stamp[:3, :3], integrated) > np.radians(0.1)
    assert angle(truth[:3, :3], integrated) < 0.1 * angle(at_stamp[:3, :3], integrated)


def test_renders_of_a_scene_are_compared_by_their_medians(tmp_path):
    def row(sequence, front_end, rpe, ms, reid=None):
        return {
            'sequence': sequence,
            'front_end': front_end,
            'rpe_rot_deg': rpe,
            'h_corner_err_px_median': rpe / 10,
            'track_length_per_observation': 10 * ms,
            'detection_ratio': 1.0,
            'wrong_id_per_1000': 0.0,
            'reid_after_blackout': reid,
            'latency_ms_median': ms,
        }

    renders = [
        [row('fast', 'klt', 0.75, 90), row('fast', 'kp2d_hybrid', 1.2, 230, 0.5)],
        [row('fast', 'kp2d_hybrid', 1.8, 240, None), row('fast', 'klt', 2.3, 95)],
        [row('fast', 'klt', 3.1, 100)],  # a render without the hybrid mode
    ]
    paths = []
    for index, rows in enumerate(renders):
        paths.append(tmp_path / f'r{index}.json')
        paths[-1].write_text(json.dumps(rows))
    script = _load_script('compare_renders')
    lines = script.renders_table([script.read_results(p) for p in paths]).splitlines()
    assert lines[2] == (
        '| fast | klt | 0.750 / 2.300 / 3.100 | 2.300 | 0.230 | 950 | 1.00 | 0.0 | — | 95 |'
    )
    assert lines[3] == (
        '| fast | kp2d_hybrid | 1.200 / 1.800 / — | 1.500 | 0.150 | 2350 | 1.00 | 0.0 | 0.50 '
        '| 235 |'
    )
    (tmp_path / 'bad.json').write_text('{"sequence": 1}')
    with pytest.raises(SystemExit, match='a list of results'):
        script.read_results(tmp_path / 'bad.json')
    (tmp_path / 'bad.json').write_text('[{"front_end": "klt"}]')
    with pytest.raises(SystemExit, match='result 0 has no sequence'):
        script.read_results(tmp_path / 'bad.json')
    with pytest.raises(SystemExit, match='missing.json'):
        script.read_results(tmp_path / 'missing.json')


@pytest.mark.parametrize(
    ('given', 'run_name', 'expected'),
    [(None, '__main__', '1'), ('3', '__main__', '3'), (None, 'evaluate_vo', 'unset')],
)
def test_the_benchmark_runs_blas_as_the_node_does(given, run_name, expected) -> None:
    """Run as a program it asks for one BLAS thread before NumPy loads (a value the user set
    wins); imported (as the tests do), it leaves the environment alone."""
    script = ROOT / 'evaluation' / 'evaluate_vo.py'
    program = f'import runpy; runpy.run_path({str(script)!r}, run_name={run_name!r})'
    assert blas_threads_seen(program, given) == expected  # no arguments: it stops at the usage
