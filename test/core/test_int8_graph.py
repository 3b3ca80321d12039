"""The int8 graph's memory rewrites: exact where they claim to be, smaller where they run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from kp2d_core import KeypointNet
from kp2d_core.geometry.coordinates import sample_map
from kp2d_core.inference.backends.base import DenseMaps
from kp2d_core.inference.backends.onnx_backend import OnnxRuntimeBackend
from kp2d_core.inference.export import export_onnx, quantize_int8
from kp2d_core.inference.int8_graph import lean_int8_graph
from kp2d_core.inference.int8_heads import (
    int8_descriptors,
    int8_upsampling,
    pad_output_channels,
    quantise_before_fanout,
)
from kp2d_core.inference.int8_stage import band_input_stage, pad_input_channels, shapes_from_input
from kp2d_core.model.descriptors import unit_rows
from kp2d_core.model.files import DESCRIPTOR_QUANTISATION_KEY

ort = pytest.importorskip('onnxruntime', reason='pip install .[onnx]')
onnx = pytest.importorskip('onnx')

SIZES = [(64, 96), (8, 8), (72, 40), (120, 200), (16, 24)]  # heights not divisible by bands


@pytest.fixture(scope='module')
def models(bundled_int8, tmp_path_factory):
    """(plain, lean) int8 models of the bundled network, quantised alike."""
    fp32, images, plain = bundled_int8
    lean = quantize_int8(fp32, tmp_path_factory.mktemp('int8') / 'lean.int8.onnx', images, 'sha')
    return plain, lean


def _session(model):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = model.SerializeToString() if hasattr(model, 'SerializeToString') else str(model)
    return ort.InferenceSession(source, options, providers=['CPUExecutionProvider'])


def _run(model, image: np.ndarray) -> list[np.ndarray]:
    """Outputs, uint8 descriptors dequantised as the model's metadata says."""
    session = _session(model)
    score, coords, desc = session.run(None, {'image': image})
    if desc.dtype == np.uint8:
        metadata = session.get_modelmeta().custom_metadata_map
        entry = json.loads(metadata[DESCRIPTOR_QUANTISATION_KEY])
        desc = DenseMaps(score, coords, desc, entry['scale'], entry['zero_point'])
        desc = desc.float_descriptors()
    return [score, coords, desc]


def _images():
    rng = np.random.default_rng(0)
    for hw in SIZES:
        yield rng.uniform(-1.0, 1.0, (1, 3, *hw)).astype(np.float32)


def _assert_identical(a, b) -> None:
    for image in _images():
        for got, expected in zip(_run(a, image), _run(b, image)):
            assert got.dtype == expected.dtype and np.array_equal(got, expected)


def test_first_stage_in_bands_is_bit_identical(models):
    plain, _ = models
    banded = onnx.load(str(plain))
    assert shapes_from_input(banded)
    assert band_input_stage(banded, 4) and pad_input_channels(banded)
    graph = banded.graph
    convs = [n for n in graph.node if n.op_type == 'Conv' and '_band' in n.name]
    assert len(convs) == 8  # both full-resolution convolutions, in 4 bands
    assert sum(n.op_type == 'MaxPool' for n in graph.node) == 4 + 2  # and the first pooling
    assert any(n.op_type == 'Pad' for n in graph.node)
    assert not any(n.op_type == 'DequantizeLinear' and 'image' in n.output[0] for n in graph.node)
    _assert_identical(banded, plain)


def test_head_rewrites_are_bit_identical(models):
    plain, _ = models
    upsampled = onnx.load(str(plain))
    assert int8_upsampling(upsampled)
    rewritten = onnx.load(str(plain))
    assert int8_upsampling(rewritten)
    assert quantise_before_fanout(rewritten)
    assert pad_output_channels(rewritten)
    assert int8_descriptors(rewritten)
    output = next(o for o in rewritten.graph.output if o.name == 'descriptors')
    assert output.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    _assert_identical(rewritten, upsampled)


def test_uint8_upsampling_keeps_keypoints_and_descriptors(models):
    plain, _ = models
    proto = onnx.load(str(plain))
    assert int8_upsampling(proto)
    shuffle = next(n for n in proto.graph.node if n.op_type == 'DepthToSpace')
    maker = next(n for n in proto.graph.node if shuffle.input[0] in n.output)
    assert maker.op_type == 'QuantizeLinear'  # it moves uint8 now
    for image in _images():
        score, coords, desc = _run(proto, image)
        ref_score, ref_coords, ref_desc = _run(plain, image)
        assert np.array_equal(score, ref_score) and np.array_equal(coords, ref_coords)
        cosine = (unit_rows(desc, axis=1) * unit_rows(ref_desc, axis=1)).sum(axis=1)
        assert cosine.min() > 0.98 and cosine.mean() > 0.995, (cosine.min(), cosine.mean())


def test_quantised_descriptors_are_sampled_as_their_float_map(models):
    _, lean = models
    backend = OnnxRuntimeBackend(lean, 'int8')
    image = np.random.default_rng(3).uniform(-1, 1, (1, 3, 64, 96)).astype(np.float32)
    out = backend(image)
    assert out.descriptors.dtype == np.uint8 and out.descriptor_scale > 0
    xy = np.random.default_rng(4).uniform(0, [96, 64], (50, 2)).astype(np.float32)
    dense = sample_map(out.float_descriptors(), xy[None], 64, 96)[0]
    sampled = out.sample_descriptors(0, xy, 64, 96)
    assert sampled.dtype == np.float32 and np.allclose(sampled, dense, rtol=1e-5, atol=1e-5)


def test_uint8_descriptors_without_their_quantisation_are_refused(models, tmp_path):
    _, lean = models
    proto = onnx.load(str(lean))
    kept = [p for p in proto.metadata_props if p.key != DESCRIPTOR_QUANTISATION_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(tmp_path / 'bare.onnx'))
    with pytest.raises(ValueError, match='without a readable scale and zero point'):
        OnnxRuntimeBackend(tmp_path / 'bare.onnx', 'int8')


def test_rewrites_apply_once_and_leave_other_graphs_alone(models, tmp_path):
    _, lean = models
    proto = onnx.load(str(lean))
    assert lean_int8_graph(proto) == []  # already lean: nothing matches again
    torch.manual_seed(0)
    fp32 = onnx.load(str(export_onnx(KeypointNet().eval(), tmp_path / 'f.onnx', 'x', (64, 96))))
    nodes = len(fp32.graph.node)
    assert lean_int8_graph(fp32) == [] and len(fp32.graph.node) == nodes
    with pytest.raises(ValueError, match='bands'):
        band_input_stage(onnx.load(str(lean)), 1)


MEMORY_SCRIPT = """
import sys, numpy as np
from kp2d_ros.process_memory import configure_allocator, rss_mib, trim
from kp2d_core.inference.backends.onnx_backend import OnnxRuntimeBackend
configure_allocator()
backend = OnnxRuntimeBackend(sys.argv[1], 'int8')
frame = np.random.default_rng(0).uniform(-1, 1, (1, 3, 480, 640)).astype(np.float32)
before = rss_mib()
for _ in range(3):
    backend(frame)
trim()
print(rss_mib() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='/proc (Linux)')
def test_lean_graph_keeps_less_memory_between_frames(models):
    """What 480x640 frames leave in ONNX Runtime's arena (RSS growth, MiB; the bundled
    network measured 79 -> 49 MiB with the first rewrites, 49 -> 24 with all)."""
    kept = {}
    for name, path in zip(('plain', 'lean'), models):
        out = subprocess.run(
            [sys.executable, '-c', MEMORY_SCRIPT, str(path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        kept[name] = float(out.stdout.strip())
    assert kept['lean'] < 0.5 * kept['plain'], kept
