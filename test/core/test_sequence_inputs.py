"""The sequence benchmark against broken inputs and outputs: one clear line, nothing lost.

Every broken folder is refused (or named) by the reader, every output folder that cannot take
the results is refused before anything is computed, and results are written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from kp2d_core.evaluation.render import look_at
from kp2d_core.evaluation.scenes import camera_for, write_tum
from kp2d_core.evaluation.sequences import (
    SequenceError,
    associate,
    read_sequence,
    read_trajectory,
    write_trajectory,
)
from kp2d_core.evaluation.vo import alignment_problem, ate_rmse, rpe
from kp2d_core.geometry.poses import make_pose

ROOT = Path(__file__).resolve().parents[2]
SECOND = 1_000_000_000
STAMPS = [1_305_031_102_000_000_000 + i * 33_333_333 for i in range(6)]


def _tum(folder: Path, frames: int = 6, hw: tuple[int, int] = (48, 64)) -> Path:
    """A small valid TUM folder: textured frames, poses moving in a plane, identity H."""
    (folder / 'rgb').mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f'rgb/{i}.png' for i in range(frames)]
    for name in names:
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (*hw, 3), np.uint8))
    poses = [
        look_at(np.array([0.1 * i, 0.05 * i * i, -1.0]), np.zeros(3), np.array([0, -1.0, 0]))
        for i in range(frames)
    ]
    write_tum(folder, camera_for('plumb_bob', hw), STAMPS[:frames], names, poses, [np.eye(3)] * 6)
    return folder


def _replace_line(path: Path, index: int, text: str) -> None:
    lines = path.read_text().splitlines()
    data = [i for i, line in enumerate(lines) if not line.startswith('#')]
    lines[data[index]] = text
    path.write_text('\n'.join(lines) + '\n')


def _stamp(i: int) -> str:
    return f'{STAMPS[i] // SECOND}.{STAMPS[i] % SECOND:09d}'


BROKEN = {
    'non-UTF-8 rgb.txt': (
        lambda f: (f / 'rgb.txt').write_bytes(b'# t f\n1.0 rgb/0.png\n\xff\xfe 2\n'),
        'rgb.txt:3: not UTF-8',
    ),
    'NaN stamp': (lambda f: _replace_line(f / 'rgb.txt', 1, 'nan rgb/1.png'), 'not a time'),
    'infinite stamp': (lambda f: _replace_line(f / 'rgb.txt', 1, 'inf rgb/1.png'), 'not a time'),
    'absurd stamp': (lambda f: _replace_line(f / 'rgb.txt', 1, '1e30 rgb/1.png'), 'not a time'),
    'negative stamp': (lambda f: _replace_line(f / 'rgb.txt', 1, '-5 rgb/1.png'), 'not a time'),
    'zero quaternion': (
        lambda f: _replace_line(f / 'groundtruth.txt', 2, f'{_stamp(2)} 0 0 0 0 0 0 0'),
        'groundtruth.txt:4: quaternion of norm 0',
    ),
    'non-unit quaternion': (
        lambda f: _replace_line(f / 'groundtruth.txt', 2, f'{_stamp(2)} 0 0 0 0 0 0 1.08'),
        'norm 1.08 is not a unit',
    ),
    'singular homography': (
        lambda f: _replace_line(
            f / 'groundtruth_homography.txt', 1, f'{_stamp(1)} 1 2 3 2 4 6 0 0 1'
        ),
        'singular homography',
    ),
}


@pytest.mark.parametrize('case', sorted(BROKEN))
def test_broken_tum_folders_are_refused_with_the_file_and_line(tmp_path, case) -> None:
    folder = _tum(tmp_path / 'seq')
    read_sequence(folder)  # valid before the damage
    damage, message = BROKEN[case]
    damage(folder)
    with pytest.raises(SequenceError, match=message):
        read_sequence(folder)


def _euroc(folder: Path, T_BS: str, quaternion: str = '1,0,0,0') -> Path:
    cam = folder / 'mav0' / 'cam0'
    (cam / 'data').mkdir(parents=True)
    truth = folder / 'mav0' / 'state_groundtruth_estimate0'
    truth.mkdir(parents=True)
    cv2.imwrite(str(cam / 'data' / '100.png'), np.zeros((48, 64), np.uint8))
    (cam / 'data.csv').write_text('#t,f\n100,100.png\n')
    (cam / 'sensor.yaml').write_text(
        f'T_BS:\n  data: [{T_BS}]\nresolution: [64, 48]\nintrinsics: [40, 40, 31.5, 23.5]\n'
        'distortion_model: radial-tangential\ndistortion_coefficients: [0, 0, 0, 0]\n'
    )
    (truth / 'data.csv').write_text(f'#t\n100,0,0,0,{quaternion}' + ',0' * 9 + '\n')
    return folder


@pytest.mark.parametrize(
    ('T_BS', 'quaternion', 'message'),
    [
        ('nan' + ', 0' * 15, '1,0,0,0', 'not a usable EuRoC sensor file: T_BS'),
        ('0' + ', 0' * 15, '1,0,0,0', 'T_BS is not a rigid transform'),
        ('1,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0,1', '0,0,0,0', 'quaternion of norm 0'),
    ],
)
def test_broken_euroc_folders_are_refused(tmp_path, T_BS, quaternion, message) -> None:
    with pytest.raises(SequenceError, match=message):
        read_sequence(_euroc(tmp_path / 'seq', T_BS, quaternion))


def test_ground_truth_from_another_clock_is_explained(tmp_path) -> None:
    folder = _tum(tmp_path / 'seq')
    poses = read_trajectory(folder / 'groundtruth.txt')
    write_trajectory(folder / 'groundtruth.txt', {s + 5 * SECOND: T for s, T in poses.items()})
    sequence = read_sequence(folder)
    assert sequence.poses == {}
    assert any(
        'groundtruth.txt: no sample within 20 ms' in n and '4.833 s away' in n
        for n in sequence.notes
    )


def test_association_is_one_to_one_as_the_tum_tools_do() -> None:
    ms = 1_000_000
    frames = np.array([0, 10, 20, 30], np.int64) * ms  # 100 Hz frames
    truth = {4 * ms: np.full(1, 4.0), 25 * ms: np.full(1, 25.0)}  # two samples between them
    matched = associate(frames, truth, 0.02)
    # Closest pairs first (0-4: 4 ms, 20-25 and 30-25: 5 ms), each sample used once: nearest
    # in time would have given all four frames a pose from two samples.
    assert sorted(matched) == [0, 20 * ms]
    assert float(matched[0][0]) == 4.0 and float(matched[20 * ms][0]) == 25.0


def test_trajectories_round_trip_through_the_tum_format(tmp_path) -> None:
    rng = np.random.default_rng(1)
    poses = {}
    for i in range(5):
        R = cv2.Rodrigues(rng.normal(size=3))[0]
        poses[STAMPS[i] + 7] = make_pose(R, rng.normal(size=3))
    write_trajectory(tmp_path / 'est.tum', poses, 'test')
    back = read_trajectory(tmp_path / 'est.tum')
    assert sorted(back) == sorted(poses)  # exact integer nanoseconds
    for stamp, T in poses.items():
        assert np.allclose(back[stamp], T, atol=1e-8)


def test_pure_rotation_has_no_ate_instead_of_a_false_zero() -> None:
    truth = {
        i * SECOND // 10: make_pose(cv2.Rodrigues(np.array([0.0, 0.05 * i, 0.0]))[0], np.zeros(3))
        for i in range(30)
    }
    wrong = {k: make_pose(T[:3, :3], np.array([0.3 * k / SECOND, 0, 0])) for k, T in truth.items()}
    ate, scale, _, _ = ate_rmse(wrong, truth)
    assert np.isnan(ate) and np.isnan(scale)
    assert 'do not span a plane' in alignment_problem(np.array([T[:3, 3] for T in truth.values()]))
    assert np.isnan(rpe(wrong, truth, scale)[0])
    assert rpe(wrong, truth, 1.0)[1] == pytest.approx(0.0, abs=1e-6)  # rotation still counts


def _evaluate(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / 'evaluation' / 'evaluate_vo.py'), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_output_folders_are_checked_before_any_work(tmp_path) -> None:
    folder = _tum(tmp_path / 'seq')
    as_file = tmp_path / 'file'
    as_file.write_text('x')
    run = _evaluate(str(folder), '--out', str(as_file), '--front-ends', 'orb')
    assert run.returncode != 0 and 'is a file, not a folder' in run.stderr
    assert 'Traceback' not in run.stderr
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / 'locked'
        locked.mkdir(mode=0o500)
        run = _evaluate(str(folder), '--out', str(locked / 'out'), '--front-ends', 'orb')
        assert run.returncode != 0 and 'cannot write' in run.stderr


@pytest.mark.slow
def test_results_are_kept_unless_overwrite_and_then_nothing_stale_remains(tmp_path) -> None:
    folder = _tum(tmp_path / 'seq')
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'old_sequence.png').write_bytes(b'an earlier plot')
    run = _evaluate(str(folder), '--out', str(out), '--front-ends', 'orb')
    assert run.returncode != 0 and 'holds results of an earlier run' in run.stderr
    assert (out / 'old_sequence.png').read_bytes() == b'an earlier plot'
    run = _evaluate(str(folder), '--out', str(out), '--front-ends', 'orb', '--overwrite')
    assert run.returncode == 0, run.stderr[-2000:]
    assert not (out / 'old_sequence.png').exists()  # stale plot gone
    assert (out / 'seq.png').is_file() and (out / 'report.md').is_file()
    estimate = read_trajectory(out / 'seq' / 'orb.tum')
    results = json.loads((out / 'vo_results.json').read_text())
    assert len(estimate) == results[0]['pose_ratio'] * results[0]['frames']


def test_empty_sequences_and_wrong_calibration_sizes_are_refused(tmp_path) -> None:
    empty = _tum(tmp_path / 'empty')
    (empty / 'rgb.txt').write_text('# nothing\n')
    run = _evaluate(str(empty), '--out', str(tmp_path / 'o1'), '--front-ends', 'orb')
    assert run.returncode != 0 and 'no frame to process' in run.stderr
    sized = _tum(tmp_path / 'sized', hw=(48, 64))
    (sized / 'camera.yaml').write_text(
        (sized / 'camera.yaml')
        .read_text()
        .replace('image_width: 64', 'image_width: 32')
        .replace('image_height: 48', 'image_height: 24')
    )
    run = _evaluate(str(sized), '--out', str(tmp_path / 'o2'), '--front-ends', 'orb')
    assert 'Traceback' not in run.stderr
    assert run.returncode != 0 and 'calibration is for 32x24 images' in run.stderr


def test_a_frame_of_another_size_is_left_out_and_named(tmp_path) -> None:
    folder = _tum(tmp_path / 'seq')
    (folder / 'camera.yaml').unlink()
    cv2.imwrite(str(folder / 'rgb' / '3.png'), np.zeros((40, 40, 3), np.uint8))
    run = _evaluate(str(folder), '--out', str(tmp_path / 'out'), '--front-ends', 'klt')
    assert run.returncode == 0, run.stderr[-2000:]
    assert "3.png: 40x40, not the sequence's 64x48" in run.stdout


def test_a_full_disk_keeps_earlier_results_whole(tmp_path) -> None:
    if os.geteuid() != 0 or shutil.which('mount') is None:
        pytest.skip('mounting a tiny tmpfs needs root')
    disk = tmp_path / 'tiny'
    disk.mkdir()
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', str(disk)])
    if mounted.returncode:
        pytest.skip('this machine does not let tests mount a tmpfs')
    try:
        from kp2d_core.output_files import (
            OutputFolderError,
            atomic_write_text,
            prepare_output_folder,
        )

        target = disk / 'report.md'
        target.write_text('earlier results')
        with pytest.raises(OSError):
            atomic_write_text(target, 'x' * 200_000)
        assert target.read_text() == 'earlier results'
        assert [p.name for p in disk.iterdir()] == ['report.md']  # no temporary left
        with pytest.raises(OutputFolderError, match='MiB free'):
            prepare_output_folder(disk, ['report.md'], overwrite=True)
    finally:
        subprocess.run(['umount', str(disk)])


def test_building_sequences_without_the_pool_says_what_to_do(tmp_path) -> None:
    command = [
        sys.executable,
        str(ROOT / 'evaluation' / 'build_sequences.py'),
        '--pool',
        str(tmp_path),
        '--out',
        str(tmp_path / 'out'),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and 'Traceback' not in run.stderr
    assert 'held-out photos missing' in run.stderr and 'make data' in run.stderr
