"""Inference backends behind one front-end, and the automatic choice among them.

``select_backend`` returns the backend asked for, or with ``'auto'`` the fastest choice that
is available on this machine and passed the accuracy gate for these weights (fp32 always
passes); when several remain, each is timed on a 240x320 input and the fastest wins. The
choice and the timings are logged.

``onnx_without_torch`` makes the ONNX Runtime choice from the model files alone, so a process
that runs it never loads PyTorch (docs/memory.md): for a run on the CPU (the caller
decides the device, with :func:`cuda_present` for 'auto'), when ONNX Runtime is asked for
explicitly, or when 'auto' would try ONNX Runtime int8 first (the
fastest choice on every CPU measured) and it passed the gate.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path
import time
from typing import TYPE_CHECKING

import numpy as np

from kp2d_core.inference.backends import onnx_backend
from kp2d_core.inference.backends.base import (
    BACKENDS,
    PRECISIONS,
    REFERENCE,
    Backend,
    DenseMaps,
    label,
)
from kp2d_core.inference.backends.gate import passing_choices
from kp2d_core.model.files import file_sha256

if TYPE_CHECKING:
    from kp2d_core.model.keypoint_net import KeypointNet

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
# Of the cached exports: a new layout of the exported graph gets a new name (2: the light
# model's descriptor lift in two parts, kp2d_core.inference.descriptor_lift).
EXPORT_FORMAT = 'v2'

__all__ = [
    'BACKENDS',
    'PRECISIONS',
    'Backend',
    'DenseMaps',
    'create_backend',
    'cuda_present',
    'label',
    'onnx_without_torch',
    'select_backend',
    'time_backend',
]


def cache_dir() -> Path:
    """Where kp2d caches what it builds (exported ONNX files, the benchmarks' CPUID preload):
    $KP2D_CACHE_DIR, else ~/.cache/kp2d."""
    root = os.environ.get('KP2D_CACHE_DIR') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'kp2d'
    )
    return Path(root)


def cuda_present() -> bool:
    """Whether the CUDA driver (libcuda) sees a device, asked without loading PyTorch."""
    try:
        cuda = ctypes.CDLL('libcuda.so.1')
    except OSError:
        return False
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return False
    return count.value > 0


def onnx_file(
    weights: Path, precision: str, sha256: str, model: KeypointNet | None = None
) -> Path:
    """The ONNX model of ``weights`` at ``precision``: beside the weights, or exported (fp32,
    needs ``model``) into the cache. TensorRT fp16 builds its engine from the fp32 model."""
    stored = _stored_precision(precision)
    beside = weights.with_suffix(f'.{stored}.onnx')
    if beside.is_file():
        return beside
    if stored != 'fp32':
        raise ValueError(f'no {stored} model beside {weights} (training/export_onnx.py makes it)')
    cached = cache_dir() / f'{sha256[:20]}.{EXPORT_FORMAT}.fp32.onnx'
    if cached.is_file():
        return cached
    if model is None:
        raise ValueError(f'no fp32 ONNX model of {weights} exported yet')
    return _export(model, cached, sha256)


def _stored_precision(precision: str) -> str:
    """The precision of the ONNX file a precision runs from (TensorRT fp16: the fp32 file)."""
    return 'fp32' if precision == 'fp16' else precision


def _export(model: KeypointNet, path: Path, sha256: str) -> Path:
    from kp2d_core.inference.export import export_onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    return export_onnx(model, path, sha256)


def create_backend(
    backend: str,
    precision: str,
    model: KeypointNet | None,
    weights: Path | None = None,
    sha256: str = '',
    device: str = 'cpu',
) -> Backend:
    """Exactly the requested backend (raises ValueError when it cannot run here). The torch
    backend needs ``model``; ONNX Runtime needs ``weights`` (and ``model`` only to export)."""
    if model is not None:
        device = str(next(model.parameters()).device)
    if backend == 'torch':
        from kp2d_core.inference.backends import torch_backend

        if model is None:
            raise ValueError("backend 'torch' needs the loaded model")
        if not torch_backend.supported(precision, next(model.parameters()).device):
            raise ValueError(f'torch {precision} is not supported on {device} here')
        return torch_backend.TorchBackend(model, precision)
    if backend != 'onnxruntime':
        raise ValueError(f'unknown backend {backend!r}; choose from {BACKENDS}')
    if not onnx_backend.available():
        raise ValueError("backend 'onnxruntime' needs the onnxruntime package")
    if weights is None:
        raise ValueError("backend 'onnxruntime' needs the model's weights file")
    path = onnx_file(weights, precision, sha256, model)
    try:
        return _checked_session(path, precision, sha256, model, device)
    except ValueError as exc:
        if path.parent != cache_dir() or model is None:
            raise
        LOG.warning('rebuilding a broken cache entry: %s', exc)  # ours to replace
        _export(model, path, sha256)
        return _checked_session(path, precision, sha256, model, device)


def _checked_session(
    path: Path, precision: str, sha256: str, model: KeypointNet | None, device: str
) -> Backend:
    """An ONNX Runtime session of ``path`` that belongs to these weights and computes what
    they compute: what ``model`` computes, or without it the reference outputs of these
    weights recorded in the file at export."""
    try:
        session = onnx_backend.OnnxRuntimeBackend(path, precision, device)
    except Exception as exc:  # onnxruntime's own exception types: an unloadable file
        raise ValueError(f'{path} is not a readable ONNX model ({str(exc)[:200]})') from exc
    onnx_backend.check_provenance(session.metadata, path, sha256, _stored_precision(precision))
    if model is None:
        reference = onnx_backend.stored_reference(session, sha256)
    else:
        from kp2d_core.inference.export import probe_reference

        reference = probe_reference(model)
    onnx_backend.check_behaviour(session, reference)
    return session


def onnx_without_torch(weights: Path, backend: str, precision: str) -> Backend | None:
    """The ONNX Runtime choice for a CPU run made from the model files alone (see the module
    doc), or None when the choice needs PyTorch (then :func:`select_backend` makes it)."""
    if backend not in ('auto', 'onnxruntime') or not onnx_backend.available():
        return None
    sha = file_sha256(weights)
    passed = passing_choices(weights, sha)
    candidates = [
        (name, prec)
        for name, prec in PREFERENCE['cpu']
        if backend in ('auto', name)
        and precision in ('auto', prec)
        and (precision != 'auto' or prec == 'fp32' or f'{name}:{prec}' in passed)
    ]
    if not candidates or candidates[0][0] != 'onnxruntime':
        return None
    if len(candidates) > 1 and candidates[0] != PREFERENCE['cpu'][0]:
        return None  # 'auto' among several: they are timed, PyTorch's included
    try:
        chosen = create_backend(*candidates[0], None, weights, sha)
    except (ValueError, OSError, RuntimeError) as exc:
        LOG.info('%s:%s not available without PyTorch: %s', *candidates[0], exc)
        return None
    if precision != 'auto' and candidates[0][1] != 'fp32' and label(chosen) not in passed:
        LOG.warning('%s has not passed the accuracy gate for %s', label(chosen), weights)
    how = 'automatic choice' if precision == 'auto' else 'as asked'
    LOG.info('inference backend %s on cpu (%s, without PyTorch)', label(chosen), how)
    return chosen


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


def _timing_input(backend: Backend, hw: tuple[int, int]) -> np.ndarray:
    return np.zeros((1, 3 if backend.use_color else 1, *hw), np.float32)


def _timed_pass(backend: Backend, images: np.ndarray) -> float:
    """Seconds of one pass (outputs arrive in host memory, so the device has finished)."""
    start = time.perf_counter()
    backend(images)
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
