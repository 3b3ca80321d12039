"""The descriptor head's last convolution, applied by the front-end where it samples.

The paper's descriptor head ends in a 3x3 convolution (256 -> 256 channels at H/4, zero
padding 1, no activation after it): 11.3 GMAC at 640x480, about a fifth of the int8
network's time. The front-end reads descriptors only at its keypoints (at most ``top_k``
of the 19,200 cells), bilinearly, and a convolution is linear: the bilinear sample of its
output at a point is the convolution's nine kernel taps applied to the bilinear samples of
its input at the point and its eight neighbours one cell away (their interpolation weights
are the point's own). So the front-end computes each keypoint's descriptor from a 4x4-cell
window of the input, one (N, 9 C) x (9 C, D) product for N keypoints.

:func:`split_descriptor_conv` rewrites an int8 graph to output that input (uint8, channels
last, as ONNX Runtime computes it) and records the convolution's weights in the model's
metadata (:data:`~kp2d_core.model.files.DESCRIPTOR_CONV_KEY`); :class:`DescriptorConv`
applies them (docs/performance.md has the measurements).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
import io
import os
from typing import Any

import numpy as np

from kp2d_core.geometry.coordinates import map_coordinates
from kp2d_core.inference.descriptor_lift import DESCRIPTOR_OUTPUT
from kp2d_core.inference.onnx_graph import (
    attributes,
    consumers,
    drop_unused,
    initializers,
    producers,
)
from kp2d_core.model.files import DESCRIPTOR_CONV_KEY

FEATURES_OUTPUT = 'descriptor_features'
KERNEL = 3
POINT_CHUNK = 128  # keypoints whose windows are interpolated at once (2 MiB at 256 channels)
_FIELDS = ('weight', 'weight_scale', 'weight_zero_point', 'bias', 'scale', 'zero_point')


@dataclass(frozen=True)
class DescriptorConv:
    """A 3x3 convolution (stride 1, zero padding 1) on a uint8 feature map, applied at
    points or densely.

    Attributes:
        weight: (9 C, D) float32 kernel, rows ordered (ky, kx, c), the features' scale
            folded in.
        bias: (D,) float32, the features' zero point folded in.
        zero_point: the uint8 value that stands for 0 (the padding).
    """

    weight: np.ndarray
    bias: np.ndarray
    zero_point: int

    @classmethod
    def from_kernel(
        cls, kernel: np.ndarray, bias: np.ndarray, scale: float, zero_point: int
    ) -> DescriptorConv:
        """From a (D, C, 3, 3) float kernel and (D,) bias acting on features
        ``scale * (u - zero_point)`` of uint8 values ``u``.

        Raises:
            ValueError: shapes that do not fit, non-finite values or an implausible quantisation.
        """
        kernel = np.asarray(kernel, np.float64)
        bias = np.asarray(bias, np.float64)
        if kernel.ndim != 4 or kernel.shape[2:] != (KERNEL, KERNEL):
            raise ValueError(f'expected a (D, C, 3, 3) kernel, got {kernel.shape}')
        if bias.shape != (kernel.shape[0],):
            raise ValueError(f'bias {bias.shape} does not fit a kernel of {kernel.shape[0]}')
        if not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
            raise ValueError('the kernel or bias is not finite')
        if not (np.isfinite(scale) and scale > 0) or int(zero_point) not in range(256):
            raise ValueError(f'implausible feature quantisation ({scale}, {zero_point})')
        rows = kernel.transpose(2, 3, 1, 0).reshape(-1, kernel.shape[0]) * scale
        folded = bias - zero_point * rows.sum(axis=0)
        return cls(rows.astype(np.float32), folded.astype(np.float32), int(zero_point))

    @property
    def channels(self) -> int:
        """C, the input channels."""
        return self.weight.shape[0] // (KERNEL * KERNEL)

    def at_points(
        self, features: np.ndarray, xy: np.ndarray, height: int, width: int
    ) -> np.ndarray:
        """The convolution's output sampled bilinearly at pixels of the image the map covers
        (as :func:`~kp2d_core.geometry.coordinates.sample_map` samples a map).

        Args:
            features: (h, w, C) uint8 input of the convolution.
            xy: (N, 2) pixel coordinates in the (height, width) image.

        Returns:
            (N, D) float32 raw descriptors.
        """
        h, w = self._checked(features).shape[:2]
        padded = self._padded(features, after=2)  # 4x4 windows: cells floor(m) - 1 ... + 2
        mx, my = map_coordinates(np.asarray(xy, np.float64), (h, w), (height, width))
        windows = np.empty((len(mx), self.weight.shape[0]), np.float32)
        for start in range(0, len(mx), POINT_CHUNK):  # chunks stay in cache; one product
            part = slice(start, start + POINT_CHUNK)
            windows[part] = self._windows(padded, mx[part], my[part])
        return windows @ self.weight + self.bias

    def _windows(self, padded: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
        """(N, 9 C) the input sampled at each point and its eight neighbours (map cells)."""
        left, top = np.floor(mx), np.floor(my)
        span = np.arange(KERNEL + 1)
        rows = top.astype(np.intp)[:, None, None] + span[None, :, None]
        cols = left.astype(np.intp)[:, None, None] + span[None, None, :]
        window = padded[rows, cols].astype(np.float32)  # (N, 4, 4, C), cells floor(m) - 1 ...
        fy = (my - top).astype(np.float32)[:, None, None, None]
        fx = (mx - left).astype(np.float32)[:, None, None, None]
        window = window[:, :KERNEL] + fy * (window[:, 1:] - window[:, :KERNEL])
        window = window[:, :, :KERNEL] + fx * (window[:, :, 1:] - window[:, :, :KERNEL])
        return window.reshape(len(mx), -1)

    def at_cells(self, features: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(..., D) float32 output at integer cells (``rows``, ``cols`` of one shape, within
        the map) of an (h, w, C) uint8 input."""
        padded = self._padded(self._checked(features), after=1)
        span = np.arange(KERNEL)
        ys = np.reshape(rows, (-1, 1, 1)) + span[None, :, None]
        xs = np.reshape(cols, (-1, 1, 1)) + span[None, None, :]
        windows = padded[ys, xs].reshape(ys.shape[0], -1).astype(np.float32)
        return (windows @ self.weight + self.bias).reshape(*np.shape(rows), -1)

    def dense(self, features: np.ndarray) -> np.ndarray:
        """(D, h, w) float32 output everywhere of an (h, w, C) uint8 input: what the graph
        computed before the rewrite, without its output quantisation (slow: 0.2 s at
        640x480; :meth:`at_cells` where only some cells are read)."""
        h, w, channels = self._checked(features).shape
        padded = self._padded(features, after=1)
        out = np.tile(self.bias, (h * w, 1))
        for tap in range(KERNEL * KERNEL):  # one tap at a time: no (h w, 9 C) unrolled copy
            dy, dx = divmod(tap, KERNEL)
            shifted = padded[dy : dy + h, dx : dx + w].reshape(h * w, channels)
            out += shifted.astype(np.float32) @ self.weight[tap * channels : (tap + 1) * channels]
        return np.ascontiguousarray(out.T).reshape(-1, h, w)

    def _padded(self, features: np.ndarray, after: int) -> np.ndarray:
        """The (h, w, C) map with one cell of zeros (the zero point) before and ``after``
        cells after, in both directions."""
        h, w, channels = features.shape
        padded = np.full((h + 1 + after, w + 1 + after, channels), self.zero_point, np.uint8)
        padded[1 : h + 1, 1 : w + 1] = features
        return padded

    def _checked(self, features: np.ndarray) -> np.ndarray:
        if features.dtype != np.uint8 or features.ndim != 3 or features.shape[2] != self.channels:
            raise ValueError(
                f'expected (h, w, {self.channels}) uint8 features, got '
                f'{features.shape} {features.dtype}'
            )
        return features


def encode_conv(arrays: dict[str, np.ndarray]) -> str:
    """The convolution as an ONNX metadata string (base64 of a compressed .npz of
    :data:`_FIELDS`: the quantised kernel as stored in the graph, its per-filter scale and
    zero point, the float bias and the input's quantisation)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{key: np.asarray(arrays[key]) for key in _FIELDS})
    return base64.b64encode(buffer.getvalue()).decode('ascii')


def decode_conv(text: str | None, path: str | os.PathLike) -> DescriptorConv:
    """Inverse of :func:`encode_conv` for the model at ``path``.

    Raises:
        ValueError: nothing recorded, unreadable, or weights that do not fit.
    """
    if text is None:
        raise ValueError(f'{path} outputs {FEATURES_OUTPUT} but records no convolution')
    try:
        with np.load(io.BytesIO(base64.b64decode(text, validate=True))) as stored:
            arrays = {key: np.asarray(stored[key]) for key in _FIELDS}
    except Exception as exc:  # binascii, zipfile, KeyError, pickle refusal
        raise ValueError(
            f'{path}: unreadable descriptor convolution ({type(exc).__name__})'
        ) from exc
    try:
        per_filter = (-1, 1, 1, 1)
        kernel = arrays['weight'].astype(np.float64) - arrays['weight_zero_point'].reshape(
            per_filter
        )
        kernel *= arrays['weight_scale'].reshape(per_filter)
        return DescriptorConv.from_kernel(
            kernel, arrays['bias'], float(arrays['scale']), int(arrays['zero_point'])
        )
    except ValueError as exc:
        raise ValueError(f'{path}: descriptor convolution: {exc}') from exc


def split_descriptor_conv(proto: Any) -> bool:
    """Make an int8 graph whose ``descriptors`` are a 3x3 convolution (stride 1, padding 1)
    of a dequantised uint8 map output that map instead, channels last, as
    ``descriptor_features`` (B, H/4, W/4, C), with the convolution in the metadata
    (:func:`encode_conv`); quantisations between the convolution and the output are dropped
    with it. False (graph unchanged) where it has no such pattern."""
    from onnx import TensorProto, helper

    graph = proto.graph
    found = _descriptor_conv(graph)
    if found is None:
        return False
    conv, dropped, features, arrays = found
    for node in [conv, *dropped]:
        graph.node.remove(node)
    graph.node.append(
        helper.make_node('Transpose', [features], [FEATURES_OUTPUT], perm=[0, 2, 3, 1])
    )
    output = next(o for o in graph.output if o.name == DESCRIPTOR_OUTPUT)
    graph.output.remove(output)
    shape = ['batch', 'features_height', 'features_width', int(arrays['weight'].shape[1])]
    graph.output.append(helper.make_tensor_value_info(FEATURES_OUTPUT, TensorProto.UINT8, shape))
    entry = proto.metadata_props.add()
    entry.key, entry.value = DESCRIPTOR_CONV_KEY, encode_conv(arrays)
    drop_unused(graph)
    return True


def _descriptor_conv(graph) -> tuple | None:
    """(Conv, quantisations after it, uint8 features name, :data:`_FIELDS` arrays) or None."""
    outputs = {o.name for o in graph.output}
    if DESCRIPTOR_OUTPUT not in outputs or FEATURES_OUTPUT in outputs:
        return None
    makers, uses = producers(graph), consumers(graph)
    name, dropped = DESCRIPTOR_OUTPUT, []
    while (node := makers.get(name)) is not None and node.op_type in _QDQ:
        dropped.append(node)
        name = node.input[0]
    conv = makers.get(name)
    if conv is None or not _plain_3x3(conv) or len(conv.input) != 3:
        return None
    chain = [conv.output[0], *(node.output[0] for node in dropped)]  # each read by the next
    if any(len(uses.get(name, [])) != 1 for name in chain[:-1]) or uses.get(chain[-1]):
        return None  # something else reads the convolution's output
    features = makers.get(conv.input[0])
    quantisation = _stored(graph, features, 1) if features is not None else None
    if quantisation is None or quantisation[0] is not None or quantisation[3] != np.uint8:
        return None  # the input is not a computed, per-tensor uint8 map
    weight = _stored_or_float(graph, makers, conv.input[1])
    bias = _stored_or_float(graph, makers, conv.input[2])
    if weight is None or bias is None or weight[0].ndim != 4:
        return None
    filters = weight[0].shape[0]
    if bias[0].shape != (filters,) or min(weight[1].size, bias[1].size) not in (1, filters):
        return None
    arrays = {
        'weight': weight[0],
        'weight_scale': np.broadcast_to(weight[1], (filters,)).astype(np.float32),
        'weight_zero_point': np.broadcast_to(weight[2], (filters,)).astype(np.int32),
        'bias': ((bias[0].astype(np.float64) - bias[2]) * bias[1]).astype(np.float32),
        'scale': quantisation[1].reshape(()).astype(np.float32),
        'zero_point': quantisation[2].reshape(()).astype(np.int32),
    }
    return conv, dropped, features.input[0], arrays


_QDQ = ('QuantizeLinear', 'DequantizeLinear')


def _plain_3x3(node) -> bool:
    """A Conv with a 3x3 kernel, stride 1, dilation 1, one group and padding 1."""
    if node.op_type != 'Conv':
        return False
    attrs = attributes(node)
    expected = {'kernel_shape': [KERNEL, KERNEL], 'pads': [1, 1, 1, 1]}
    defaults = {'strides': [1, 1], 'dilations': [1, 1], 'group': 1, 'auto_pad': b'NOTSET'}
    return all(attrs.get(key) == value for key, value in expected.items()) and all(
        attrs.get(key, value) == value for key, value in defaults.items()
    )


def _stored(graph, dq, axis_size: int) -> tuple | None:
    """(stored values or None where computed, scale, zero point, stored dtype) of a
    DequantizeLinear whose scale and zero point are initializers (per tensor, or per slice of
    axis 0 with ``axis_size`` > 1); None for anything else."""
    from onnx import helper, numpy_helper

    inits = initializers(graph)
    if dq.op_type != 'DequantizeLinear' or len(dq.input) != 3:
        return None
    if any(name not in inits for name in dq.input[1:]):
        return None
    per_slice = numpy_helper.to_array(inits[dq.input[1]]).size > 1
    if per_slice and attributes(dq).get('axis', 1) != 0:
        return None
    scale, zero = (numpy_helper.to_array(inits[name]) for name in dq.input[1:])
    if scale.size not in (1, axis_size) or zero.shape != scale.shape:
        return None
    if dq.input[0] in inits:
        values = numpy_helper.to_array(inits[dq.input[0]])
        return values, scale, zero, values.dtype
    dtype = helper.tensor_dtype_to_np_dtype(inits[dq.input[2]].data_type)
    return None, scale, zero, dtype


def _stored_or_float(graph, makers, name: str) -> tuple | None:
    """(values, scale, zero point) of a float initializer (scale 1, zero 0) or of a
    DequantizeLinear of initializers; None otherwise."""
    from onnx import numpy_helper

    inits = initializers(graph)
    if name in inits:
        values = numpy_helper.to_array(inits[name])
        if not np.issubdtype(values.dtype, np.floating):
            return None
        return values.astype(np.float32), np.ones(1, np.float32), np.zeros(1, np.int32)
    node = makers.get(name)
    if node is None or node.op_type != 'DequantizeLinear' or node.input[0] not in inits:
        return None
    filters = int(inits[node.input[0]].dims[0]) if inits[node.input[0]].dims else 1
    stored = _stored(graph, node, filters)
    return None if stored is None else stored[:3]
