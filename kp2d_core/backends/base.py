"""What every inference backend provides: dense KeypointNet outputs for a normalised batch."""

from __future__ import annotations

from typing import Protocol

import torch

from kp2d_core.networks import KeypointOutput

BACKENDS = ('torch', 'onnxruntime')
PRECISIONS = ('fp32', 'bf16', 'fp16', 'int8')
REFERENCE = ('torch', 'fp32')  # the eager network every other choice is gated against


class Backend(Protocol):
    """A way to run KeypointNet.

    Attributes:
        name: 'torch' or 'onnxruntime'.
        precision: 'fp32', 'bf16', 'fp16' or 'int8'.
        device: where inputs must be and outputs are.
        use_color: whether the network takes 3 channels (else 1).
    """

    name: str
    precision: str
    device: torch.device
    use_color: bool

    def __call__(self, images: torch.Tensor) -> KeypointOutput:
        """Dense outputs for normalised images (B, C, H, W), H and W multiples of 8.

        Returns float32 score (B, 1, H/8, W/8), coords (B, 2, H/8, W/8) in pixels and raw
        descriptors (B, D, H/4, W/4) on ``device``.
        """
        ...


def label(backend: Backend) -> str:
    return f'{backend.name}:{backend.precision}'
