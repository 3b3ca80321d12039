"""PyTorch inference: eager fp32, or autocast to bfloat16 (CPUs with native bf16, CUDA) or
float16 (CUDA). Keypoint coordinates are always computed in float32 (see KeypointNet)."""

from __future__ import annotations

import numpy as np
import torch

from kp2d_core.inference.backends.base import DenseMaps
from kp2d_core.model.keypoint_net import KeypointNet

AUTOCAST = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def supported(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` is worth offering on ``device`` (fp16 needs CUDA, bf16 native)."""
    if precision == 'fp32':
        return True
    if precision == 'fp16':
        return device.type == 'cuda'
    if precision == 'bf16':
        return device.type == 'cuda' or cpu_has_native_bf16()
    return False


class TorchBackend:
    """KeypointNet in eval mode on its device, optionally under autocast."""

    name = 'torch'

    def __init__(self, model: KeypointNet, precision: str = 'fp32') -> None:
        if precision not in ('fp32', *AUTOCAST):
            raise ValueError(
                f'torch backend precision must be fp32, bf16 or fp16, not {precision!r}'
            )
        self.model = model.eval()
        self.precision = precision
        self.torch_device = next(model.parameters()).device
        self.device = str(self.torch_device)
        self.use_color = model.cfg.use_color
        if precision == 'fp16' and self.torch_device.type != 'cuda':
            raise ValueError('fp16 inference needs CUDA (use bf16 or fp32 on a CPU)')

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> DenseMaps:
        dtype = AUTOCAST.get(self.precision)
        batch = torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(self.torch_device)
        with torch.autocast(self.torch_device.type, dtype=dtype, enabled=dtype is not None):
            out = self.model(batch)
        return DenseMaps(*(x.float().cpu().numpy() for x in out))
