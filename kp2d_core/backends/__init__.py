"""Inference backends behind one front-end, and the automatic choice among them.

``select_backend`` returns the backend asked for, or with ``'auto'`` the fastest choice that
is available on this machine and passed the accuracy gate for these weights (fp32 always
passes); when several remain, each is timed on a 240x320 input and the fastest wins. The
choice and the timings are logged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
import time

import torch

from kp2d_core.backends import onnx_backend, torch_backend
from kp2d_core.backends.base import BACKENDS, PRECISIONS, REFERENCE, Backend, label
from kp2d_core.backends.gate import passing_choices
from kp2d_core.export import export_onnx, file_sha256
from kp2d_core.networks import KeypointNet

LOG = logging.getLogger(__name__)
PREFERENCE = {
    'cpu': [
        ('onnxruntime', 'int8'),
        ('torch', 'bf16'),
        ('onnxruntime', 'fp32'),
        ('torch', 'fp32'),
    ],
    'cuda': [
        ('onnxruntime', 'fp16'),
        ('torch', 'fp16'),
        ('torch', 'bf16'),
        ('onnxruntime', 'fp32'),
        ('torch', 'fp32'),
    ],
}
TIMING_HW = (240, 320)

__all__ = [
    'BACKENDS',
    'PRECISIONS',
    'Backend',
    'create_backend',
    'label',
    'select_backend',
    'time_backend',
]


def cache_dir() -> Path:
    """Where exported ONNX files are cached: $KP2D_CACHE_DIR, else ~/.cache/kp2d."""
    root = os.environ.get('KP2D_CACHE_DIR') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'kp2d'
    )
    return Path(root)


def onnx_file(weights: Path, model: KeypointNet, precision: str, sha256: str) -> Path:
    """The ONNX model of ``weights`` at ``precision``: beside the weights, or exported (fp32)
    into the cache. TensorRT fp16 builds its engine from the fp32 model."""
    stored = 'fp32' if precision == 'fp16' else precision
    beside = weights.with_suffix(f'.{stored}.onnx')
    if beside.is_file():
        onnx_backend.check_provenance(beside, sha256, stored)
        return beside
    if stored != 'fp32':
        raise ValueError(f'no {stored} model beside {weights} (training/export_onnx.py makes it)')
    cached = cache_dir() / f'{sha256[:20]}.fp32.onnx'
    if cached.is_file():
        try:
            onnx_backend.check_provenance(cached, sha256, 'fp32')
            return cached
        except ValueError as exc:
            LOG.warning('rebuilding a broken cache entry: %s', exc)
    cached.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, cached, sha256)
    return cached


def create_backend(
    backend: str,
    precision: str,
    model: KeypointNet,
    weights: Path | None = None,
    sha256: str = '',
) -> Backend:
    """Exactly the requested backend (raises ValueError when it cannot run here)."""
    device = next(model.parameters()).device
    if backend == 'torch':
        if not torch_backend.supported(precision, device):
            raise ValueError(f'torch {precision} is not supported on {device} here')
        return torch_backend.TorchBackend(model, precision)
    if backend != 'onnxruntime':
        raise ValueError(f'unknown backend {backend!r}; choose from {BACKENDS}')
    if not onnx_backend.available():
        raise ValueError("backend 'onnxruntime' needs the onnxruntime package")
    if weights is None:
        raise ValueError("backend 'onnxruntime' needs the model's weights file")
    path = onnx_file(weights, model, precision, sha256)
    try:
        return _checked_session(path, precision, model)
    except ValueError as exc:
        if path.parent != cache_dir():
            raise
        LOG.warning('rebuilding a broken cache entry: %s', exc)  # ours to replace
        export_onnx(model, path, sha256)
        return _checked_session(path, precision, model)


def _checked_session(path: Path, precision: str, model: KeypointNet) -> Backend:
    """An ONNX Runtime session of ``path`` that computes what ``model`` computes."""
    device = next(model.parameters()).device
    try:
        session = onnx_backend.OnnxRuntimeBackend(path, precision, device, model.cfg.use_color)
    except Exception as exc:  # onnxruntime's own exception types: an unloadable file
        raise ValueError(f'onnxruntime cannot load {path}: {str(exc)[:200]}') from exc
    onnx_backend.check_behaviour(session, model)
    return session


def select_backend(
    model: KeypointNet, weights: Path | None, backend: str = 'auto', precision: str = 'auto'
) -> Backend:
    """The backend asked for; 'auto' in either field picks among the gated choices."""
    device = next(model.parameters()).device
    if backend != 'auto' and precision != 'auto':
        sha = file_sha256(weights) if weights is not None else ''
        chosen = create_backend(backend, precision, model, weights, sha)
        gated = weights is None or (backend, precision) == REFERENCE
        if not gated and label(chosen) not in passing_choices(weights, sha):
            LOG.warning('%s has not passed the accuracy gate for %s', label(chosen), weights)
        LOG.info('inference backend %s on %s', label(chosen), device)
        return chosen
    candidates = _gated_candidates(model, weights, backend, precision, device)
    if not candidates:
        raise ValueError(f'no available backend for backend={backend} precision={precision}')
    chosen = _fastest(candidates)
    LOG.info('inference backend %s on %s (automatic choice)', label(chosen), device)
    return chosen


def _gated_candidates(model, weights, backend, precision, device) -> list[Backend]:
    sha = file_sha256(weights) if weights is not None else ''
    passed = passing_choices(weights, sha) if weights is not None else set()
    found = []
    for name, prec in PREFERENCE['cuda' if device.type == 'cuda' else 'cpu']:
        if backend not in ('auto', name) or precision not in ('auto', prec):
            continue
        if prec != 'fp32' and f'{name}:{prec}' not in passed:
            continue
        try:
            found.append(create_backend(name, prec, model, weights, sha))
        except (ValueError, OSError, RuntimeError) as exc:
            LOG.info('%s:%s not available: %s', name, prec, exc)
    return found


def time_backend(backend: Backend, hw: tuple[int, int] = TIMING_HW, runs: int = 3) -> float:
    """Median seconds per forward pass on a (1, C, H, W) input, after one warm-up pass."""
    images = _timing_input(backend, hw)
    backend(images)  # warm-up (allocations, kernel selection)
    times = sorted(_timed_pass(backend, images) for _ in range(runs))
    return times[len(times) // 2]


def _timing_input(backend: Backend, hw: tuple[int, int]) -> torch.Tensor:
    return torch.zeros(1, 3 if backend.use_color else 1, *hw, device=backend.device)


def _timed_pass(backend: Backend, images: torch.Tensor) -> float:
    start = time.perf_counter()
    backend(images)
    if backend.device.type == 'cuda':
        torch.cuda.synchronize(backend.device)
    return time.perf_counter() - start


def _fastest(candidates: list[Backend], runs: int = 3) -> Backend:
    """The candidate with the lowest best-of-``runs`` time. Runs take turns across the
    candidates, so a burst of other work on the machine slows all of them, not one."""
    if len(candidates) == 1:
        return candidates[0]
    inputs = [_timing_input(c, TIMING_HW) for c in candidates]
    for backend, images in zip(candidates, inputs):
        backend(images)  # warm-up (allocations, kernel selection)
    best_times = [float('inf')] * len(candidates)
    for _ in range(runs):
        for i, (backend, images) in enumerate(zip(candidates, inputs)):
            best_times[i] = min(best_times[i], _timed_pass(backend, images))
    timings = {label(c): t for c, t in zip(candidates, best_times)}
    LOG.info(
        'backend timings at %dx%d (best of %d): %s',
        *TIMING_HW,
        runs,
        ', '.join(f'{k} {1e3 * v:.0f} ms' for k, v in timings.items()),
    )
    best = min(timings, key=timings.get)
    return next(c for c in candidates if label(c) == best)
