"""ONNX Runtime inference of an exported KeypointNet (see :mod:`kp2d_core.export`).

CPU: fp32, or int8 (a statically quantised model produced by ``training/export_onnx.py``).
CUDA: the CUDA execution provider (fp32) or TensorRT (fp16), where installed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from kp2d_core.export import PRECISION_KEY, WEIGHTS_SHA_KEY, read_metadata
from kp2d_core.networks import KeypointOutput

LOG = logging.getLogger(__name__)


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def providers_for(device: torch.device, precision: str) -> list:
    """Execution providers for a device and precision, best first; [] if none can run it."""
    import onnxruntime as ort

    installed = set(ort.get_available_providers())
    if device.type == 'cuda':
        options = {'device_id': device.index or 0}
        if precision == 'fp16' and 'TensorrtExecutionProvider' in installed:
            trt = {**options, 'trt_fp16_enable': True, 'trt_engine_cache_enable': True}
            return [('TensorrtExecutionProvider', trt), ('CUDAExecutionProvider', options)]
        if precision == 'fp32' and 'CUDAExecutionProvider' in installed:
            return [('CUDAExecutionProvider', options)]
        return []
    return ['CPUExecutionProvider'] if precision in ('fp32', 'int8') else []


def check_provenance(path: Path, weights_sha256: str, precision: str) -> None:
    """Raise ValueError unless ``path`` was exported from these weights at this precision."""
    meta = read_metadata(path)
    if meta.get(WEIGHTS_SHA_KEY) != weights_sha256:
        raise ValueError(f'{path} was not exported from these weights (sha256 differs)')
    if meta.get(PRECISION_KEY) != precision:
        raise ValueError(f'{path} holds a {meta.get(PRECISION_KEY)} model, not {precision}')


class OnnxRuntimeBackend:
    """An ONNX Runtime session; inputs and outputs go through host memory."""

    name = 'onnxruntime'

    def __init__(
        self,
        path: str | os.PathLike,
        precision: str,
        device: torch.device,
        use_color: bool = True,
        threads: int = 0,
    ) -> None:
        import onnxruntime as ort

        providers = providers_for(device, precision)
        if not providers:
            raise ValueError(f'onnxruntime cannot run {precision} on {device} here')
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # No busy-waiting between runs: the node's other threads need the cores meanwhile.
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.precision = precision
        self.device = torch.device('cpu')  # tensors are exchanged through NumPy
        self.use_color = use_color
        self.path = Path(path)

    def __call__(self, images: torch.Tensor) -> KeypointOutput:
        feed = {'image': images.detach().to('cpu', torch.float32).contiguous().numpy()}
        score, coords, descriptors = self.session.run(None, feed)
        return KeypointOutput(
            torch.from_numpy(score), torch.from_numpy(coords), torch.from_numpy(descriptors)
        )
