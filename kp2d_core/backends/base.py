"""What every inference backend provides: dense KeypointNet outputs for a normalised batch."""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

BACKENDS = ('torch', 'onnxruntime')
PRECISIONS = ('fp32', 'bf16', 'fp16', 'int8')
REFERENCE = ('torch', 'fp32')  # the eager network every other choice is gated against


class DenseMaps(NamedTuple):
    """A backend's dense outputs for a (B, C, H, W) batch, float32 NumPy arrays in host memory
    (the fields of :class:`~kp2d_core.networks.KeypointOutput`).

    Attributes:
        score: (B, 1, H/8, W/8) keypoint scores in [0, 1].
        coords: (B, 2, H/8, W/8) keypoint pixel coordinates (x, y).
        descriptors: (B, D, H/4, W/4) raw (unnormalised) descriptors.
    """

    score: np.ndarray
    coords: np.ndarray
    descriptors: np.ndarray


class Backend(Protocol):
    """A way to run KeypointNet.

    Attributes:
        name: 'torch' or 'onnxruntime'.
        precision: 'fp32', 'bf16', 'fp16' or 'int8'.
        device: where the network runs ('cpu', 'cuda:0', ...).
        use_color: whether the network takes 3 channels (else 1).
    """

    name: str
    precision: str
    device: str
    use_color: bool

    def __call__(self, images: np.ndarray) -> DenseMaps:
        """Dense outputs for normalised float32 images (B, C, H, W), H and W multiples of 8."""
        ...


def label(backend: Backend) -> str:
    return f'{backend.name}:{backend.precision}'
