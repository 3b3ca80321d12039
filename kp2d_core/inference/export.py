"""ONNX export of KeypointNet: dense outputs only, dynamic height and width (multiples of 8).

The exported graph takes the *normalised* image (the output of
:func:`kp2d_core.images.normalize_image`) and returns the three dense maps of
:class:`~kp2d_core.model.keypoint_net.KeypointOutput`: ``score`` (B, 1, H/8, W/8), ``coords``
(B, 2, H/8, W/8) in pixels and raw ``descriptors`` (B, D, H/4, W/4). Keypoint selection stays
in the front-end, so every backend shares it. The model's provenance (the sha256 of the
weights file) is stored in the ONNX metadata, so a backend can refuse a model that does not
belong to the weights it is asked to run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import contextlib
import logging
import os
from pathlib import Path
import tempfile
import warnings

import numpy as np
import torch

from kp2d_core.inference.descriptor_conv import split_descriptor_conv
from kp2d_core.inference.descriptor_lift import split_descriptor_lift
from kp2d_core.inference.int8_graph import lean_int8_graph
from kp2d_core.inference.onnx_graph import producers
from kp2d_core.model.files import (
    PRECISION_KEY,
    PROBE_HW,
    REFERENCE_KEY,
    WEIGHTS_SHA_KEY,
    encode_reference,
    file_sha256,
    reference_from_outputs,
)
from kp2d_core.model.keypoint_net import KeypointNet

__all__ = [
    'export_onnx',
    'file_sha256',
    'probe_reference',
    'quantize_int8',
    'read_metadata',
    'store_reference',
]

LOG = logging.getLogger(__name__)
OPSET = 17
INPUT_NAME = 'image'
OUTPUT_NAMES = ('score', 'coords', 'descriptors')


def probe_reference(model: KeypointNet) -> dict[str, np.ndarray]:
    """The eager fp32 network's outputs on the probe image, as every exported model of it
    must reproduce them (:func:`kp2d_core.model.files.reference_from_outputs`)."""
    from kp2d_core.inference.probe import probe_image

    images = torch.from_numpy(probe_image(PROBE_HW, model.cfg.use_color))
    with torch.no_grad():
        out = _cpu_float_copy(model)(images)
    return reference_from_outputs(*(x.numpy() for x in out))


class _DenseOutputs(torch.nn.Module):
    """KeypointNet returning a plain tuple (what the exporter expects)."""

    def __init__(self, model: KeypointNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(image)
        return out.score, out.coords, out.descriptors


def export_onnx(
    model: KeypointNet,
    path: str | os.PathLike,
    weights_sha256: str = '',
    example_hw: tuple[int, int] = (240, 320),
    opset: int = OPSET,
) -> Path:
    """Write ``model`` (eval mode, float32, CPU) as an ONNX file with dynamic H and W (a
    light model's descriptors in two parts: :mod:`kp2d_core.inference.descriptor_lift`).

    Args:
        model: the network to export (it is not modified).
        path: output file; written atomically.
        weights_sha256: provenance recorded in the metadata (see :func:`file_sha256`).
        example_hw: (H, W) of the tracing input, multiples of 8.
        opset: ONNX opset (>= 17).

    Returns:
        The path written.
    """
    import onnx

    if example_hw[0] % 8 or example_hw[1] % 8:
        raise ValueError(f'example_hw must be multiples of 8, got {example_hw}')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _DenseOutputs(_cpu_float_copy(model)).eval()
    example = torch.zeros(1, 3 if model.cfg.use_color else 1, *example_hw)
    tmp = path.with_name(f'.{path.name}.tmp')
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # tracer notes on the input-size check; legacy exporter
        torch.onnx.export(
            wrapper,
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: {0: 'batch', 2: 'height', 3: 'width'}},
            opset_version=opset,
            dynamo=False,
        )
    proto = onnx.load(str(tmp))
    split_descriptor_lift(proto)  # the light model's: sampled by the front-end
    reference = encode_reference(probe_reference(model), weights_sha256)
    set_metadata(
        proto,
        {WEIGHTS_SHA_KEY: weights_sha256, PRECISION_KEY: 'fp32', REFERENCE_KEY: reference},
    )
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    LOG.info('exported %s (opset %d)', path, opset)
    return path


def quantize_int8(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: Iterable[np.ndarray],
    weights_sha256: str = '',
    reduce_range: bool = True,
    lean: bool = True,
    conv_at_keypoints: bool = False,
) -> Path:
    """Statically quantise an exported model to int8 (ONNX QDQ) for CPU inference.

    Recipe, chosen by measuring where precision is lost (docs/performance.md): only
    convolutions are quantised (quantising the coordinate arithmetic after the location head
    rounds keypoints to about 1 px); weights per output channel (int8), activations uint8 with
    ranges from the 99.999th percentile of the calibration images; the last convolution of the
    location head (256 -> 2 channels, 0.04 % of the compute) stays float32, and so do depthwise
    convolutions (the light model's separable heads; quantising them cost it 0.031 Cor-3 on the
    dev set, 0.007 with them in float32, at the same speed). The graph is
    then rewritten to need less memory at run time
    (:func:`~kp2d_core.inference.int8_graph.lean_int8_graph`).

    Args:
        fp32_path: the fp32 model from :func:`export_onnx`.
        out_path: the int8 model to write.
        calibration: normalised images (1, C, H, W) float32, e.g. training photos.
        weights_sha256: provenance recorded in the metadata.
        reduce_range: 7-bit weights. CPUs without VNNI (AVX2) multiply uint8 by int8 with a
            16-bit intermediate that saturates on 8-bit weights, moving keypoints; 7-bit
            weights avoid it on every CPU (docs/performance.md).
        lean: rewrite the graph to need less memory (False: as the quantiser wrote it).
        conv_at_keypoints: leave the descriptor head's last convolution to the front-end,
            which applies it at its keypoints only
            (:func:`~kp2d_core.inference.descriptor_conv.split_descriptor_conv`).

    Raises:
        ValueError: ``conv_at_keypoints`` for a graph whose descriptors are not such a
            convolution (the light model's).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    images = [np.asarray(image, np.float32) for image in calibration]  # read before the chdir

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.images = iter(images)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self.images, None)
            return None if image is None else {INPUT_NAME: image}

    out_path = Path(out_path).resolve()
    fp32_path = Path(fp32_path).resolve()
    tmp = out_path.with_name(f'.{out_path.name}.tmp')
    # ONNX Runtime's shape inference writes scratch files (sym_shape_infer_temp.onnx and its
    # external data) into the working directory: run it inside a temporary one.
    with tempfile.TemporaryDirectory(prefix='kp2d-quantize-') as scratch, _working_dir(scratch):
        quantize_static(
            str(fp32_path),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=['Conv'],
            nodes_to_exclude=float_convolutions(onnx.load(str(fp32_path))),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            reduce_range=reduce_range,
        )
    carried = {k: v for k, v in read_metadata(fp32_path).items() if k == REFERENCE_KEY}
    proto = onnx.load(str(tmp))
    if lean:
        lean_int8_graph(proto)
    if conv_at_keypoints and not split_descriptor_conv(proto):
        raise ValueError(f'{fp32_path}: its descriptors are not a 3x3 convolution to leave out')
    set_metadata(proto, {WEIGHTS_SHA_KEY: weights_sha256, PRECISION_KEY: 'int8', **carried})
    onnx.save(proto, str(tmp))
    os.replace(tmp, out_path)
    return out_path


def store_reference(model: KeypointNet, path: str | os.PathLike, weights_sha256: str) -> Path:
    """Record ``model``'s probe-image reference in an ONNX model exported from it before
    references were stored (the graph is kept as it is; written atomically).

    Raises:
        ValueError: ``path`` was not exported from the weights with this sha256.
    """
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    found = {p.key: p.value for p in proto.metadata_props}.get(WEIGHTS_SHA_KEY)
    if found != weights_sha256:
        raise ValueError(f'{path} was not exported from these weights (sha256 differs)')
    set_metadata(proto, {REFERENCE_KEY: encode_reference(probe_reference(model), weights_sha256)})
    tmp = path.with_name(f'.{path.name}.tmp')
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _working_dir(path: str) -> Iterator[None]:
    """Run a block in ``path`` (process-wide: for offline tools, not for threads)."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def float_convolutions(proto: object) -> list[str]:
    """Convolutions the int8 model keeps in float32: the location head's output and every
    depthwise convolution (one input channel per group)."""
    kept = [location_output_conv(proto)]
    shapes = {tensor.name: tuple(tensor.dims) for tensor in proto.graph.initializer}
    for node in proto.graph.node:
        group = next((a.i for a in node.attribute if a.name == 'group'), 1)
        weight = shapes.get(node.input[1]) if node.op_type == 'Conv' else None
        if group > 1 and weight is not None and weight[1] == 1:
            kept.append(node.name)
    return kept


def location_output_conv(proto: object) -> str:
    """Name of the convolution that produces the location head's offsets (it feeds the Tanh)."""
    makers = producers(proto.graph)
    for node in proto.graph.node:
        if node.op_type == 'Tanh':
            producer = makers.get(node.input[0])
            if producer is not None and producer.op_type == 'Conv':
                return producer.name
    raise ValueError('no Conv -> Tanh (location head) in the exported graph')


def _cpu_float_copy(model: KeypointNet) -> KeypointNet:
    copy = KeypointNet(model.cfg)
    copy.load_state_dict({k: v.detach().float().cpu() for k, v in model.state_dict().items()})
    return copy.eval()


def set_metadata(proto: object, values: dict[str, str]) -> None:
    """Set (replace) string metadata entries of an ONNX ModelProto."""
    entries = {p.key: p.value for p in proto.metadata_props}
    entries.update(values)
    del proto.metadata_props[:]
    for key, value in sorted(entries.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata entries of an ONNX file (without loading its weights).

    Raises:
        ValueError: the file is not a readable ONNX model (truncated, random bytes).
    """
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends: the file is not ONNX
        raise ValueError(f'{path} is not a readable ONNX model ({type(exc).__name__})') from exc
    return {p.key: p.value for p in proto.metadata_props}
