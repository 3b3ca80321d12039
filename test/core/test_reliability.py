"""What a crash, a full disk, a changed config or a corrupt file can do to checkpoints and runs."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
import shutil

import cv2
import numpy as np
import pytest
import torch

from kp2d_core import KeypointNet, save_checkpoint
from kp2d_core.config import load_yaml_config
from kp2d_core.data.dataset import DataConfig, ImageFolderPairs
from kp2d_core.images import read_image
from kp2d_core.inference.probe import sample_photo_path
from kp2d_core.model.checkpoint import load_model
from kp2d_core.model.files import CheckpointError, CheckpointNotFoundError
from kp2d_core.training import TrainConfig, Trainer, setup_distributed, state, train
from kp2d_core.training.state import RunDirError, read_metrics


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('images')
    photo = read_image(sample_photo_path())
    for i in range(4):
        cv2.imwrite(str(root / f'img{i}.jpg'), np.roll(photo, 53 * i, axis=1))
    return root


def _cfg(image_dir: Path, out: Path, steps: int, *extra: str) -> TrainConfig:
    overrides = [
        f'data.root={image_dir}',
        f'out_dir={out}',
        'data.image_size=[64,96]',
        'batch_size=2',
        'workers=0',
        'val_images=0',
        'epochs=100',
        f'max_steps={steps}',
        'checkpoint_every=1',
        'tensorboard=false',
        'progress=false',
        'loss.io_top_k=30',
        'loss.io_min_inliers=0',
        *extra,
    ]
    return load_yaml_config(TrainConfig, None, overrides)


# ---------------------------------------------------------------- checkpoints
@pytest.mark.parametrize(
    ('edit', 'message'),
    [
        (
            lambda c: c['state_dict']['score_head.body.2.weight'].view(-1)[0].fill_(3e38),
            'implausible',
        ),
        (lambda c: c['model_config'].update(cross_ratio=float('nan')), 'cross_ratio'),
        (lambda c: c['model_config'].update(descriptor_dim=2_000_000), 'descriptor_dim'),
        (lambda c: c['model_config'].update(bn_momentum=-1.0), 'bn_momentum'),
        (lambda c: c['state_dict'].update({'score_head.body.2.weight': [1.0, 2.0]}), 'list'),
        (
            lambda c: c['state_dict'].update(
                {'score_head.body.2.bias': torch.full((1,), 10**15, dtype=torch.int64)}
            ),
            'wrong type',
        ),
        (
            lambda c: c['state_dict'].update(
                {'score_head.body.2.bias': torch.zeros(1, dtype=torch.complex64)}
            ),
            'wrong type',
        ),
        (
            lambda c: next(
                v.fill_(10**15) for k, v in c['state_dict'].items() if 'num_batches' in k
            ),
            'implausible',
        ),
        (
            lambda c: c['state_dict']['encoder.block1.0.1.running_var'].view(-1)[3].fill_(-0.5),
            'negative BatchNorm variances',
        ),
    ],
)
def test_tampered_values_are_refused_before_use(tmp_path, edit, message):
    path = tmp_path / 'm.pt'
    save_checkpoint(path, KeypointNet())
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_missing_and_directory_paths_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match='not found'):
        load_model(tmp_path / 'missing.pt')
    with pytest.raises(FileNotFoundError):  # also what callers of old catch
        load_model(tmp_path / 'missing.pt')
    with pytest.raises(CheckpointError, match='is a directory'):
        load_model(tmp_path)


def test_checkpoints_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / 'm.pt', KeypointNet())
    finally:
        os.umask(previous)
    assert (tmp_path / 'm.pt').stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


# ---------------------------------------------------------------- metrics and resume
def test_a_torn_metrics_line_is_dropped_with_a_warning(tmp_path, caplog):
    path = tmp_path / 'metrics.jsonl'
    path.write_text('{"step": 1, "total": 2.0}\n{"step": 2, "total": 1.5}\n{"step": 3, "to')
    with caplog.at_level(logging.WARNING):
        assert [r['step'] for r in read_metrics(path)] == [1, 2]
    assert 'incomplete' in caplog.text
    state.truncate_metrics(path, 1)
    assert [r['step'] for r in read_metrics(path)] == [1]


@pytest.mark.slow
def test_resume_survives_a_torn_metrics_line_and_refuses_a_changed_config(image_dir, tmp_path):
    out = tmp_path / 'run'
    train(_cfg(image_dir, out, 2))
    with open(out / 'metrics.jsonl', 'a') as handle:
        handle.write('{"step": 3, "tot')  # killed in the middle of a write
    train(_cfg(image_dir, out, 3), resume=True)
    assert [r['step'] for r in read_metrics(out / 'metrics.jsonl')] == [1, 2, 3]
    for change in ('data.image_size=[72,96]', 'batch_size=1', 'optim.lr=0.01'):
        with pytest.raises(ValueError, match='--allow-config-change'):
            train(_cfg(image_dir, out, 4, change), resume=True)
    train(_cfg(image_dir, out, 4, 'optim.lr=0.01'), resume=True, allow_config_change=True)
    last = read_metrics(out / 'metrics.jsonl')[-1]
    assert last['step'] == 4 and last['lr'] == pytest.approx(0.01)  # the new lr is used


def test_stale_temporary_checkpoints_are_removed(image_dir, tmp_path):
    out = tmp_path / 'run'
    (out / 'checkpoints').mkdir(parents=True)
    stale = out / 'checkpoints' / '.last.pt.abc123.tmp'
    stale.write_bytes(b'half a checkpoint')
    train(_cfg(image_dir, out, 1))
    assert not stale.exists()
    assert not list((out / 'checkpoints').glob('.*.tmp'))


def test_a_full_disk_is_reported_before_work_is_lost(image_dir, tmp_path, monkeypatch):
    out = tmp_path / 'run'
    cfg = _cfg(image_dir, out, 1)
    usage = shutil.disk_usage(tmp_path)
    full = type(usage)(usage.total, usage.total - 1024, 1024)
    monkeypatch.setattr(state.shutil, 'disk_usage', lambda _: full)
    with pytest.raises(RunDirError, match='MiB free'):
        train(cfg)
    monkeypatch.undo()
    trainer = Trainer(cfg, setup_distributed('cpu'))
    trainer.save()
    before = (out / state.LAST_CHECKPOINT).read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr('kp2d_core.model.checkpoint.torch.save', no_space)
    with pytest.raises(RunDirError, match='no space left'):
        trainer.save()
    assert (out / state.LAST_CHECKPOINT).read_bytes() == before  # the previous one is intact


# ---------------------------------------------------------------- images
def test_truncated_images_are_skipped_once_per_run(tmp_path, caplog):
    photo = read_image(sample_photo_path())
    for i in range(3):
        cv2.imwrite(str(tmp_path / f'ok{i}.jpg'), photo)
    data = (tmp_path / 'ok0.jpg').read_bytes()
    (tmp_path / 'truncated.jpg').write_bytes(data[: len(data) // 2])
    log = tmp_path / 'skipped.txt'
    files = sorted(tmp_path.glob('*.jpg'))
    cfg = DataConfig(root=str(tmp_path), image_size=(48, 64))
    with caplog.at_level(logging.WARNING):
        for epoch in range(3):  # DataLoader workers are new processes every epoch
            dataset = ImageFolderPairs(cfg, seed=0, files=files, skip_log=log)
            dataset.set_epoch(epoch)
            for i in range(len(dataset)):
                assert dataset[i]['target'].shape == (3, 48, 64)
    assert caplog.text.count('truncated JPEG') == 1
    assert dataset.skipped_files() == [str(tmp_path / 'truncated.jpg')]
    json.dumps(dataset.skipped_files())  # listed once per run, by the trainer


def test_a_read_only_run_directory_fails_before_anything_is_created(
    image_dir, tmp_path, monkeypatch
):
    out = tmp_path / 'run'
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(out)):
            raise OSError(errno.EROFS, 'Read-only file system', str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, 'mkdir', read_only)
    with pytest.raises(RunDirError, match='read-only'):
        train(_cfg(image_dir, out, 1, 'tensorboard=true'))
    assert not out.exists()


def test_a_disk_filling_mid_run_ends_with_the_promised_message(image_dir, tmp_path, monkeypatch):
    out = tmp_path / 'run'
    usage, calls = shutil.disk_usage(tmp_path), []

    def filling(path):
        calls.append(path)
        free = 10 * 2**30 if len(calls) < 4 else 2**20
        return type(usage)(usage.total, usage.total - free, free)

    monkeypatch.setattr(state.shutil, 'disk_usage', filling)
    with pytest.raises(RunDirError, match='no space left.*continue with --resume'):
        train(_cfg(image_dir, out, 10, 'tensorboard=true'))
    monkeypatch.undo()
    kept = torch.load(out / state.LAST_CHECKPOINT, weights_only=True)
    assert kept['training']['step'] >= 1  # the last checkpoint is whole and loads


def test_resuming_a_finished_run_changes_nothing(image_dir, tmp_path, caplog):
    out = tmp_path / 'run'
    cfg = _cfg(image_dir, out, 2)
    model = train(cfg)
    before = {p.name: p.read_bytes() for p in (model, out / state.METRICS)}
    with caplog.at_level(logging.WARNING):
        assert train(cfg, resume=True) == model
    assert 'already finished at step 2' in caplog.text
    assert {p.name: p.read_bytes() for p in (model, out / state.METRICS)} == before


def test_a_new_run_never_replaces_a_finished_one_unasked(image_dir, tmp_path):
    out = tmp_path / 'run'
    train(_cfg(image_dir, out, 2))
    before = {p: p.read_bytes() for p in (out / state.METRICS, out / 'config.json')}
    with pytest.raises(RunDirError, match='holds a run.*--resume continues it, --overwrite'):
        train(_cfg(image_dir, out, 1, 'optim.lr=0.01'))
    assert {p: p.read_bytes() for p in before} == before  # metrics and config untouched
    train(_cfg(image_dir, out, 1, 'optim.lr=0.01'), overwrite=True)
    assert len(read_metrics(out / state.METRICS)) == 1
    assert json.loads((out / 'config.json').read_text())['optim']['lr'] == 0.01


def test_dataloader_workers_die_with_the_trainer(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = (
        'import multiprocessing as mp, sys, time\n'
        'from kp2d_core.training.state import die_with_parent\n'
        'def worker():\n'
        '    die_with_parent(0)\n'
        '    time.sleep(120)\n'
        'if __name__ == "__main__":\n'
        '    p = mp.get_context("fork").Process(target=worker); p.start()\n'
        '    print(p.pid, flush=True); time.sleep(120)\n'
    )
    parent = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(0.5)
    parent.send_signal(signal.SIGKILL)  # kill -9 of the trainer
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_bombs_and_corrupt_photos_are_skipped_in_training(tmp_path, caplog):
    photo = read_image(sample_photo_path())
    cv2.imwrite(str(tmp_path / 'ok.jpg'), photo)
    data = (tmp_path / 'ok.jpg').read_bytes()
    (tmp_path / 'grey.jpg').write_bytes(data[: len(data) // 3] + b'\xff\xd9')
    png = bytearray(cv2.imencode('.png', photo[:40, :40])[1].tobytes())
    png[16:24] = (20000).to_bytes(4, 'big') * 2
    (tmp_path / 'bomb.png').write_bytes(bytes(png))
    files = sorted(tmp_path.glob('*.*'))
    dataset = ImageFolderPairs(DataConfig(root=str(tmp_path), image_size=(48, 64)), 0, files)
    with caplog.at_level(logging.WARNING):
        for i in range(len(dataset)):
            assert dataset[i]['target'].shape == (3, 48, 64)
    assert sorted(Path(p).name for p in dataset.skipped_files()) == ['bomb.png', 'grey.jpg']
    assert 'corrupt JPEG' in caplog.text and 'header claims 20000x20000' in caplog.text
