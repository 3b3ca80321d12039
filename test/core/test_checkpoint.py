"""Checkpoint format: round trip, safe loading, and clear errors for bad files."""

from __future__ import annotations

import pytest
import torch

from kp2d_core import CheckpointError, KeypointNet, ModelConfig, load_model, save_checkpoint
from kp2d_core.model.checkpoint import FORMAT_VERSION, make_checkpoint, resolve_device


def _net() -> KeypointNet:
    torch.manual_seed(0)
    return KeypointNet(ModelConfig(do_upsample=False, do_cross=False)).eval()


def test_round_trip_restores_config_and_weights(tmp_path):
    net = _net()
    path = tmp_path / 'model.pt'
    save_checkpoint(path, net, metadata={'step': 3})
    loaded = load_model(path)
    assert loaded.cfg == net.cfg and not loaded.training
    for key, value in net.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert torch.load(path, weights_only=True)['metadata'] == {'step': 3}


def test_half_precision_checkpoint_loads_as_float32(tmp_path):
    net = _net()
    save_checkpoint(tmp_path / 'half.pt', net, half=True)
    loaded = load_model(tmp_path / 'half.pt')
    weight = loaded.score_head.body[-1].weight
    assert weight.dtype == torch.float32
    assert torch.allclose(weight, net.score_head.body[-1].weight, atol=1e-3)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'):
        load_model(tmp_path / 'nope.pt')


def test_corrupt_and_truncated_files(tmp_path):
    garbage = tmp_path / 'garbage.pt'
    garbage.write_bytes(b'this is not a checkpoint')
    with pytest.raises(CheckpointError, match='not a readable'):
        load_model(garbage)
    good = tmp_path / 'good.pt'
    save_checkpoint(good, _net())
    truncated = tmp_path / 'truncated.pt'
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match='not a readable'):
        load_model(truncated)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / 'evil.pt'
    torch.save({'format': 'kp2d', 'payload': object()}, path)  # needs unpickling code
    with pytest.raises(CheckpointError, match='not a readable') as info:
        load_model(path)
    assert 'weights_only=False' not in str(info.value)  # never advise the unsafe load
    assert 'never loaded' in str(info.value)


def _tampered(tmp_path, edit) -> str:
    ckpt = make_checkpoint(_net())
    edit(ckpt)
    path = tmp_path / 'tampered.pt'
    torch.save(ckpt, path)
    return str(path)


def test_wrong_shape_tensor_is_named(tmp_path):
    def edit(ckpt):
        ckpt['state_dict']['score_head.body.2.weight'] = torch.zeros(1, 256, 1, 1)

    with pytest.raises(CheckpointError, match=r'wrong type or shape.*score_head\.body\.2\.weight'):
        load_model(_tampered(tmp_path, edit))


def test_config_mismatch_is_reported(tmp_path):
    def edit(ckpt):
        ckpt['model_config']['do_upsample'] = True  # weights were saved without upsampling

    with pytest.raises(CheckpointError, match='missing'):
        load_model(_tampered(tmp_path, edit))


@pytest.mark.parametrize(
    ('edit', 'message'),
    [
        (lambda c: c.update(format='other'), 'not a kp2d checkpoint'),
        (lambda c: c.update(format_version=FORMAT_VERSION + 1), 'format_version'),
        (lambda c: c.pop('state_dict'), 'state_dict'),
        (lambda c: c['model_config'].update(colour=True), 'unknown ModelConfig keys'),
        (lambda c: c['model_config'].update(do_cross='yes'), 'must be bool'),
        (lambda c: c['state_dict'].pop('encoder.block1.0.0.weight'), 'missing'),
        (lambda c: c['state_dict'].update(extra=torch.zeros(1)), 'unexpected'),
        (lambda c: c['state_dict']['location_head.body.2.bias'].fill_(float('nan')), 'non-finite'),
    ],
)
def test_tampered_checkpoints_are_rejected(tmp_path, edit, message):
    with pytest.raises(CheckpointError, match=message):
        load_model(_tampered(tmp_path, edit))


def test_atomic_save_keeps_previous_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / 'model.pt'
    save_checkpoint(path, _net())
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', explode)
    with pytest.raises(OSError, match='disk full'):
        save_checkpoint(path, _net())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['model.pt']


def test_resolve_device():
    assert resolve_device('cpu').type == 'cpu'
    assert resolve_device('auto').type == ('cuda' if torch.cuda.is_available() else 'cpu')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='CUDA is not available'):
            resolve_device('cuda')
