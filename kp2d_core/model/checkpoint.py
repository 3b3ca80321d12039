"""Checkpoint format: KeypointNet state dict + model config + format version.

A checkpoint is a plain dict, loadable with ``torch.load(..., weights_only=True)``::

    {'format': 'kp2d', 'format_version': 1, 'model_config': {...},
     'state_dict': {...}, 'metadata': {...}, ['training': {...}]}

Training checkpoints add a ``training`` entry (optimiser, scheduler, RNG states, step) and
stay loadable as plain model checkpoints. Writes are atomic (temp file + rename) so an
interrupted save never destroys the previous checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
import tempfile
from typing import Any

import torch

from kp2d_core.config import ModelConfig, from_dict, to_dict
from kp2d_core.model.files import CheckpointError, CheckpointNotFoundError, default_weights_path
from kp2d_core.model.keypoint_net import KeypointNet

FORMAT_NAME = 'kp2d'
FORMAT_VERSION = 1
MAX_ABS_VALUE = 1e6  # trained weights and BatchNorm statistics stay far below this
MAX_COUNT = 1e12  # BatchNorm's num_batches_tracked (an integer step count)


__all__ = [
    'CheckpointError',
    'CheckpointNotFoundError',
    'atomic_save',
    'check_state_dict',
    'default_weights_path',
    'load_model',
    'make_checkpoint',
    'model_from_checkpoint',
    'read_checkpoint',
    'resolve_device',
    'save_checkpoint',
]


def make_checkpoint(
    model: KeypointNet, metadata: dict[str, Any] | None = None, half: bool = False
) -> dict[str, Any]:
    """Build the checkpoint dict of ``model`` (tensors moved to CPU; fp16 when ``half``)."""
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        state[key] = value.half() if half and value.is_floating_point() else value
    return {
        'format': FORMAT_NAME,
        'format_version': FORMAT_VERSION,
        'model_config': to_dict(model.cfg),
        'state_dict': state,
        'metadata': dict(metadata or {}),
    }


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would not
        with os.fdopen(fd, 'wb') as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_checkpoint(
    path: str | os.PathLike,
    model: KeypointNet,
    metadata: dict[str, Any] | None = None,
    half: bool = False,
) -> None:
    """Write a model checkpoint atomically."""
    atomic_save(make_checkpoint(model, metadata, half), path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a checkpoint dict on the CPU with ``weights_only=True``.

    Raises:
        CheckpointNotFoundError: the file does not exist.
        CheckpointError: the path is not a readable kp2d checkpoint of a supported version.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f'{path} is a directory, not a checkpoint file')
    if not path.is_file():
        raise CheckpointNotFoundError(f'checkpoint not found: {path}')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / foreign files
        raise CheckpointError(
            f'{path} is not a readable kp2d checkpoint: {_reason(exc)}'
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get('format') != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a kp2d checkpoint (missing format='kp2d')")
    version = ckpt.get('format_version')
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f'{path} has format_version {version!r}; this kp2d reads version {FORMAT_VERSION}'
        )
    for key in ('model_config', 'state_dict'):
        if not isinstance(ckpt.get(key), dict):
            raise CheckpointError(f'{path} lacks a {key!r} dict')
    return ckpt


def _reason(exc: Exception) -> str:
    """Why torch could not load a file, without torch's advice to turn the safe load off."""
    if 'weights_only' in str(exc) or 'Unsupported global' in str(exc):
        return (
            'it holds Python objects besides tensors and plain data, which are never loaded '
            '(kp2d checkpoints load with weights_only=True; export the weights with '
            'training/export_model.py from a trusted source)'
        )
    return f'{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ""}'


def model_from_checkpoint(ckpt: dict[str, Any], source: str = 'checkpoint') -> KeypointNet:
    """Build a KeypointNet from a validated checkpoint dict (CPU, eval mode)."""
    try:  # range-checked before any tensor is allocated
        cfg = from_dict(ModelConfig, ckpt['model_config'])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f'{source}: invalid model_config: {exc}') from exc
    model = KeypointNet(cfg)
    check_state_dict(model, ckpt['state_dict'], source)
    model.load_state_dict(ckpt['state_dict'])
    return model.eval()


def check_state_dict(model: torch.nn.Module, state: dict[str, Any], source: str) -> None:
    """Raise :class:`CheckpointError` for anything but the model's own tensors with sane values.

    Every entry must be a tensor of the model's shape and of its kind of dtype (floating
    point for weights and statistics, integer for BatchNorm's step counter), finite, and
    bounded (``MAX_ABS_VALUE``), and BatchNorm's running variances non-negative: a list, a
    complex or an integer tensor where a weight belongs, NaN, absurd magnitudes or a negative
    variance (which yields no keypoint at all) are refused, whatever the file says.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f'{k}: {_describe(v)} vs model {expected[k].dtype} {tuple(expected[k].shape)}'
        for k, v in state.items()
        if k in expected and not _same_kind(v, expected[k])
    )
    problems = {'missing': missing, 'unexpected': unexpected, 'wrong type or shape': wrong}
    details = '; '.join(f'{name}: {items[:5]}' for name, items in problems.items() if items)
    if details:
        raise CheckpointError(f'{source} does not match the model ({details})')
    nonfinite = sorted(
        k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()
    )
    if nonfinite:
        raise CheckpointError(f'{source} holds non-finite values in {nonfinite[:5]}')
    huge = sorted(k for k, v in state.items() if v.numel() and not _plausible(v))
    if huge:
        raise CheckpointError(
            f'{source} holds implausible values (|x| > {MAX_ABS_VALUE:g}, or a count outside '
            f'[0, {MAX_COUNT:g}]) in {huge[:5]}: the file was altered or training diverged'
        )
    negative = sorted(
        k for k, v in state.items() if k.endswith('running_var') and bool((v < 0).any())
    )
    if negative:
        raise CheckpointError(
            f'{source} holds negative BatchNorm variances in {negative[:5]}: a variance is '
            'never negative, the file was altered'
        )


def _plausible(value: torch.Tensor) -> bool:
    if value.is_floating_point():
        return bool(value.abs().max() <= MAX_ABS_VALUE)
    return bool(value.min() >= 0 and value.double().max() <= MAX_COUNT)


def _same_kind(value: Any, reference: torch.Tensor) -> bool:
    if not isinstance(value, torch.Tensor) or value.shape != reference.shape:
        return False
    if reference.is_floating_point():
        return value.is_floating_point()
    return not value.is_floating_point() and not value.is_complex() and value.dtype != torch.bool


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f'{value.dtype} {tuple(value.shape)}'
    return type(value).__name__


def load_model(
    path: str | os.PathLike | None = None, device: str | torch.device = 'cpu'
) -> KeypointNet:
    """Load a KeypointNet from ``path`` (default: the bundled weights) in eval mode."""
    path = default_weights_path() if path is None else Path(path)
    model = model_from_checkpoint(read_checkpoint(path), source=str(path))
    return model.to(resolve_device(device))


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available else CPU; other values are checked for availability."""
    if str(device) == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = torch.device(device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError('device cuda requested but CUDA is not available')
    return device
