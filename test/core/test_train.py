"""Trainer: config loading, exact resume after a kill, NaN guard, and 2-process DDP (gloo)."""

from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

from kp2d_core.config import apply_overrides, load_yaml_config
from kp2d_core.data.samples import read_image
from kp2d_core.inference.probe import sample_photo_path
from kp2d_core.model.checkpoint import load_model
from kp2d_core.training import (
    OptimConfig,
    TrainConfig,
    Trainer,
    learning_rate,
    setup_distributed,
    train,
)

ROOT = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = ROOT / 'training' / 'train.py'


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('images')
    photo = read_image(sample_photo_path())
    for i in range(6):
        cv2.imwrite(str(root / f'img{i}.jpg'), np.roll(photo, 53 * i, axis=1))
    return root


def _overrides(image_dir: Path, out: Path, steps: int) -> list[str]:
    return [
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
    ]


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]


def test_yaml_presets_and_overrides():
    cfg = load_yaml_config(TrainConfig, str(ROOT / 'training/configs/v0.yaml'), ['batch_size=3'])
    assert not cfg.model.do_cross and not cfg.model.do_upsample and not cfg.loss.use_io_loss
    assert cfg.batch_size == 3 and cfg.data.image_size == (240, 320)
    v3 = load_yaml_config(TrainConfig, str(ROOT / 'training/configs/v3.yaml'))
    assert v3.loss.use_io_loss and not v3.loss.use_descriptor_loss
    with pytest.raises(ValueError, match='unknown'):
        load_yaml_config(TrainConfig, None, ['loss.margin=0.3'])
    with pytest.raises(ValueError, match='key.sub=value'):
        apply_overrides({}, ['batch_size'])
    assert apply_overrides({'a': {'b': 1}}, ['a.c=[1, 2]']) == {'a': {'b': 1, 'c': [1, 2]}}


def test_learning_rate_schedule():
    cfg = OptimConfig()
    assert learning_rate(cfg, 0) == learning_rate(cfg, 39) == 1e-3
    assert learning_rate(cfg, 40) == learning_rate(cfg, 49) == 5e-4
    warm = OptimConfig(warmup_steps=4)
    assert [learning_rate(warm, 0, s) for s in range(5)] == [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3]
    assert learning_rate(warm, 40, 2) == pytest.approx(3.75e-4)  # decay and warm-up multiply


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(image_dir, tmp_path):
    steps = 8  # 3 steps per epoch: the run crosses two epoch boundaries
    reference = tmp_path / 'reference'
    train(load_yaml_config(TrainConfig, None, _overrides(image_dir, reference, steps)))
    killed = tmp_path / 'killed'
    args = _overrides(image_dir, killed, steps)
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN_SCRIPT), *args],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        metrics = killed / 'metrics.jsonl'
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 4:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, 'the run ended before it could be killed'
    assert not (killed / 'model.pt').exists()
    train(load_yaml_config(TrainConfig, None, args), resume=True)
    ref, res = _metrics(reference), _metrics(killed)
    assert [m['step'] for m in res] == [m['step'] for m in ref] == list(range(1, steps + 1))
    for a, b in zip(ref, res):
        assert b['total'] == pytest.approx(a['total'], rel=1e-4, abs=1e-5), (a, b)
        assert b['epoch'] == a['epoch']
    for key, value in load_model(reference / 'model.pt').state_dict().items():
        assert torch.allclose(
            value.float(), load_model(killed / 'model.pt').state_dict()[key].float(), atol=1e-5
        ), key


def test_resume_without_checkpoint_fails(image_dir, tmp_path):
    cfg = load_yaml_config(TrainConfig, None, _overrides(image_dir, tmp_path / 'x', 1))
    with pytest.raises(FileNotFoundError, match='no checkpoint'):
        train(cfg, resume=True)


def test_non_finite_steps_are_skipped(image_dir, tmp_path, monkeypatch):
    cfg = load_yaml_config(TrainConfig, None, _overrides(image_dir, tmp_path / 'nan', 3))
    trainer = Trainer(cfg, setup_distributed('cpu'))
    before = {k: v.clone() for k, v in trainer.module.state_dict().items()}
    real_forward = trainer.module.forward

    def poisoned(*args):
        losses = real_forward(*args)
        losses['total'] = losses['total'] * float('nan')
        return losses

    monkeypatch.setattr(trainer.module, 'forward', poisoned)
    batch = next(iter(trainer.loader(0)))
    assert trainer.train_step(batch) is None
    for key, value in trainer.module.state_dict().items():
        if value.is_floating_point():
            assert torch.equal(value, before[key]), key  # weights untouched
    monkeypatch.setattr(trainer.module, 'forward', real_forward)
    terms = trainer.train_step(batch)
    assert terms is not None and np.isfinite(terms['total'])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_on_cpu(image_dir, tmp_path):
    out = tmp_path / 'ddp'
    cmd = [
        sys.executable,
        '-m',
        'torch.distributed.run',
        '--nnodes=1',
        '--nproc_per_node=2',
        '--master_addr=127.0.0.1',
        f'--master_port={_free_port()}',
        str(TRAIN_SCRIPT),
        *_overrides(image_dir, out, 3),
        'device=cpu',
    ]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [m['step'] for m in _metrics(out)] == [1, 2, 3]
    assert load_model(out / 'model.pt') is not None
