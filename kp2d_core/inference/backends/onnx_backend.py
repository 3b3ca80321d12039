"""ONNX Runtime inference of an exported KeypointNet (see :mod:`kp2d_core.inference.export`).

CPU: fp32, or int8 (a statically quantised model produced by ``training/export_onnx.py``).
CUDA: the CUDA execution provider (fp32) or TensorRT (fp16), where installed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
import threading

import numpy as np

from kp2d_core.inference.backends.base import DenseMaps
from kp2d_core.inference.descriptor_conv import FEATURES_OUTPUT, decode_conv
from kp2d_core.inference.descriptor_lift import DESCRIPTOR_OUTPUT, FINE_OUTPUT
from kp2d_core.model.files import (
    DESCRIPTOR_CONV_KEY,
    PRECISION_KEY,
    PROBE_HW,
    QUANTISATION_KEYS,
    REFERENCE_KEY,
    WEIGHTS_SHA_KEY,
    compare_to_reference,
    decode_reference,
    descriptor_quantisation,
)

LOG = logging.getLogger(__name__)
RELEASE_HW = (32, 32)  # the input of the run that releases a larger input's memory
SAME_AS_REQUESTED = 1  # OrtArenaCfg arena_extend_strategy: grow by what is asked, not 2^n
_ARENA_LOCK = threading.Lock()
_ARENA: list[bool] = []  # [registered?] once per process


def _shared_cpu_arena() -> bool:
    """Register (once per process) a CPU arena that grows by the size requested, for every
    session to share; False where this ONNX Runtime cannot (sessions keep their own arena)."""
    import onnxruntime as ort

    with _ARENA_LOCK:
        if not _ARENA:
            try:
                info = ort.OrtMemoryInfo(
                    'Cpu', ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
                )
                ort.create_and_register_allocator(
                    info, ort.OrtArenaCfg(0, SAME_AS_REQUESTED, -1, -1)
                )
                _ARENA.append(True)
            except (AttributeError, RuntimeError, TypeError) as exc:
                LOG.info('shared CPU arena not available: %s', exc)
                _ARENA.append(False)
        return _ARENA[0]


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def providers_for(device: str, precision: str) -> list:
    """Execution providers for a device ('cpu', 'cuda', 'cuda:1') and precision, best first;
    [] if none can run it."""
    import onnxruntime as ort

    installed = set(ort.get_available_providers())
    kind, _, index = str(device).partition(':')
    if kind == 'cuda':
        options = {'device_id': int(index or 0)}
        if precision == 'fp16' and 'TensorrtExecutionProvider' in installed:
            trt = {**options, 'trt_fp16_enable': True, 'trt_engine_cache_enable': True}
            return [('TensorrtExecutionProvider', trt), ('CUDAExecutionProvider', options)]
        if precision == 'fp32' and 'CUDAExecutionProvider' in installed:
            return [('CUDAExecutionProvider', options)]
        return []
    return ['CPUExecutionProvider'] if precision in ('fp32', 'int8') else []


def check_provenance(metadata: dict[str, str], path: Path, sha256: str, precision: str) -> None:
    """Raise ValueError unless the model's ``metadata`` says it was exported from these weights
    at this precision (a label; :func:`check_behaviour` checks what it computes)."""
    if metadata.get(WEIGHTS_SHA_KEY) != sha256:
        raise ValueError(f'{path} was not exported from these weights (sha256 differs)')
    if metadata.get(PRECISION_KEY) != precision:
        raise ValueError(f'{path} holds a {metadata.get(PRECISION_KEY)} model, not {precision}')


def stored_reference(backend: OnnxRuntimeBackend, weights_sha256: str) -> dict[str, np.ndarray]:
    """The reference outputs of these weights recorded in the model at export.

    Raises:
        ValueError: none recorded (an older export), unreadable, or of other weights.
    """
    text = backend.metadata.get(REFERENCE_KEY)
    if text is None:
        raise ValueError(f'{backend.path} records no reference outputs to be checked against')
    try:
        return decode_reference(text, weights_sha256)
    except ValueError as exc:
        raise ValueError(f'{backend.path}: {exc}') from exc


# What an ONNX model must reproduce of the PyTorch fp32 model on the probe image: keypoint
# shift (px, mean over the 100 best cells) and descriptor cosine (mean). fp32 differs only by
# float reassociation; int8 by quantisation (0.2-0.3 px, cosine > 0.99 on the shipped model).
BEHAVIOUR_TOLERANCE = {'fp32': (0.01, 0.9999), 'fp16': (0.5, 0.98), 'int8': (0.5, 0.98)}


def check_behaviour(backend: OnnxRuntimeBackend, reference: dict[str, np.ndarray]) -> None:
    """Raise ValueError unless ``backend`` computes the reference outputs of its weights on the
    probe image (:func:`kp2d_core.inference.export.probe_reference`: of the loaded weights, or as
    recorded in the model at export when the weights are not loaded).

    This is the provenance promise: an ONNX file is used only when, on this CPU, it gives
    the keypoints and descriptors of the weights it is loaded for (forged metadata, another
    model, a broken quantisation or an instruction set that saturates int8 all fail here).
    """
    from kp2d_core.inference.probe import probe_image

    got = backend(probe_image(PROBE_HW, backend.use_color))
    shift, cosine = compare_to_reference(reference, got.coords, got.float_descriptors())
    shift_limit, cosine_limit = BEHAVIOUR_TOLERANCE[backend.precision]
    if not (shift <= shift_limit and cosine >= cosine_limit):
        raise ValueError(
            f'{backend.path} does not compute what these weights compute (keypoints '
            f'{shift:.3f} px apart, descriptor cosine {cosine:.4f}): it belongs '
            'to other weights, or this CPU runs it differently'
        )


class OnnxRuntimeBackend:
    """An ONNX Runtime session; inputs and outputs go through host memory."""

    name = 'onnxruntime'

    def __init__(
        self,
        path: str | os.PathLike,
        precision: str,
        device: str = 'cpu',
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
        # A CPU memory arena (without one every activation is allocated per run: 15-30 %
        # slower here), shared and grown by what is asked; it keeps the peak of every input
        # size it has seen, so a run whose input size differs from the previous run's gives
        # the unused part back afterwards: a large frame's memory does not outlive it
        # (docs/memory.md).
        if _shared_cpu_arena():
            options.add_session_config_entry('session.use_env_allocators', '1')
        if not str(device).startswith('cuda'):
            # The memory pattern keeps one planned block for all activations beside what the
            # kernels take for scratch; without it the arena reuses one for the other. Same
            # speed here; 32 MiB less for the node at 640x480 (docs/memory.md).
            options.enable_mem_pattern = False
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry('memory.enable_memory_arena_shrinkage', 'cpu:0')
        self._last_shape: tuple[int, ...] | None = None
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.precision = precision
        self.device = str(device)
        self.use_color = self.session.get_inputs()[0].shape[1] != 1
        self.path = Path(path)
        # uint8 descriptor maps (the int8 model's, kp2d_core.inference.int8_heads) come with
        # their quantisation; they are dequantised where they are sampled. The light model's
        # lift may come in two parts (kp2d_core.inference.descriptor_lift), and the bundled
        # model's last descriptor convolution may be left to the front-end
        # (kp2d_core.inference.descriptor_conv).
        self.outputs = [output.name for output in self.session.get_outputs()]
        self.quantisation = {
            output.name: descriptor_quantisation(self.metadata, self.path, output.name)
            for output in self.session.get_outputs()
            if output.name in QUANTISATION_KEYS and output.type == 'tensor(uint8)'
        }
        self.conv = None
        if FEATURES_OUTPUT in self.outputs:
            self.conv = decode_conv(self.metadata.get(DESCRIPTOR_CONV_KEY), self.path)

    def _release(self) -> None:
        """Give back what another input size took (a larger input's activations, or the
        blocks a smaller input's outputs would keep): the arena frees a run's memory when the
        next run ends, so a tiny shrinking run follows at once (a few ms), not the next
        frame, which may never come."""
        tiny = np.zeros((1, 3 if self.use_color else 1, *RELEASE_HW), np.float32)
        self.session.run(None, {'image': tiny}, self._shrink)

    def __call__(self, images: np.ndarray) -> DenseMaps:
        feed = {'image': np.ascontiguousarray(images, np.float32)}
        shape, last = tuple(feed['image'].shape), self._last_shape
        self._last_shape = shape
        outputs = self.session.run(None, feed, self._shrink if shape != last else None)
        if last is not None and shape != last:
            # The outputs may live in the arena, in a block a larger input needed: copies
            # let all of its memory go.
            outputs = [np.array(output, copy=True) for output in outputs]
            self._release()
        return self._dense_maps(dict(zip(self.outputs, outputs)))

    def _dense_maps(self, outputs: dict[str, np.ndarray]) -> DenseMaps:
        if self.conv is not None:
            features = outputs[FEATURES_OUTPUT]
            return DenseMaps(outputs['score'], outputs['coords'], features, conv=self.conv)
        coarse = self.quantisation.get(DESCRIPTOR_OUTPUT, (1.0, 0))
        fine = self.quantisation.get(FINE_OUTPUT, (1.0, 0))
        return DenseMaps(
            outputs['score'],
            outputs['coords'],
            outputs[DESCRIPTOR_OUTPUT],
            *coarse,
            outputs.get(FINE_OUTPUT),
            *fine,
        )
