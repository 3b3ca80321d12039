"""Shape checks at the public API boundaries, in the spirit of kornia's KORNIA_CHECK_SHAPE,
and the array type that functions taking NumPy arrays or torch tensors share.

``check_shape(x, 'B,N,2')`` accepts a tensor or array whose dimensions match the spec: numbers
must match exactly, letters match anything (and the same letter must match the same size
within one call), ``*`` stands for any number of leading dimensions. The error names the
argument and both shapes.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

# PyTorch is imported by the functions that need it, so inference on NumPy (the ONNX Runtime
# node) never loads it.
Array = TypeVar('Array', np.ndarray, 'torch.Tensor')


def check_shape(value: Any, spec: str, name: str = 'input') -> dict[str, int]:
    """Raise ValueError unless ``value.shape`` matches ``spec``; returns the letter sizes."""
    shape = tuple(getattr(value, 'shape', ()))
    if not hasattr(value, 'shape'):
        raise ValueError(
            f'{name} must be an array or tensor of shape ({spec}), got {type(value).__name__}'
        )
    parts = [p.strip() for p in spec.split(',')]
    leading = parts[0] == '*'
    if leading:
        parts = parts[1:]
    if len(shape) < len(parts) or (not leading and len(shape) != len(parts)):
        raise ValueError(f'{name} must have shape ({spec}), got {shape}')
    sizes: dict[str, int] = {}
    for part, size in zip(parts, shape[len(shape) - len(parts) :]):
        if part.isdigit():
            if int(part) != size:
                raise ValueError(f'{name} must have shape ({spec}), got {shape}')
        elif sizes.setdefault(part, size) != size:
            raise ValueError(
                f'{name} must have shape ({spec}) with one size for {part}, got {shape}'
            )
    return sizes


def is_tensor(value: object) -> bool:
    """Whether ``value`` is a torch tensor (without importing torch: none exist before it)."""
    torch = sys.modules.get('torch')
    return torch is not None and isinstance(value, torch.Tensor)
