"""The int8 graph's memory rewrites: exact where they claim to be, smaller where they run."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from kp2d_core import KeypointNet
from kp2d_core.checkpoint import default_weights_path, load_model
from kp2d_core.export import export_onnx, quantize_int8
from kp2d_core.int8_graph import int8_upsampling, lean_int8_graph, split_input_convolution
from kp2d_core.matching import unit_rows

ort = pytest.importorskip('onnxruntime', reason='pip install .[onnx]')
onnx = pytest.importorskip('onnx')

SIZES = [(64, 96), (8, 8), (72, 40), (120, 200)]  # heights not divisible by the bands too


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    """(plain, lean) int8 models of the bundled network, quantised alike."""
    out = tmp_path_factory.mktemp('int8')
    model = load_model(default_weights_path())
    fp32 = export_onnx(model, out / 'm.fp32.onnx', 'sha', (64, 96))
    generator = torch.Generator().manual_seed(2)
    images = [(torch.rand(1, 3, 64, 96, generator=generator) - 0.5).numpy() for _ in range(3)]
    plain = quantize_int8(fp32, out / 'plain.int8.onnx', images, 'sha', lean=False)
    lean = quantize_int8(fp32, out / 'lean.int8.onnx', images, 'sha')
    return plain, lean


def _run(model, image: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = model.SerializeToString() if hasattr(model, 'SerializeToString') else str(model)
    session = ort.InferenceSession(source, options, providers=['CPUExecutionProvider'])
    return session.run(None, {'image': image})


def _images():
    rng = np.random.default_rng(0)
    for hw in SIZES:
        yield rng.uniform(-1.0, 1.0, (1, 3, *hw)).astype(np.float32)


def test_first_convolution_in_bands_is_bit_identical(models):
    plain, _ = models
    banded = onnx.load(str(plain))
    assert split_input_convolution(banded, 4)
    convs = [n for n in banded.graph.node if n.op_type == 'Conv' and '_band' in n.name]
    assert len(convs) == 4
    for image in _images():
        for got, expected in zip(_run(banded, image), _run(plain, image)):
            assert np.array_equal(got, expected)


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


def test_rewrites_apply_once_and_leave_other_graphs_alone(models, tmp_path):
    _, lean = models
    proto = onnx.load(str(lean))
    assert lean_int8_graph(proto) == []  # already lean: nothing matches again
    torch.manual_seed(0)
    fp32 = onnx.load(str(export_onnx(KeypointNet().eval(), tmp_path / 'f.onnx', 'x', (64, 96))))
    nodes = len(fp32.graph.node)
    assert lean_int8_graph(fp32) == [] and len(fp32.graph.node) == nodes
    with pytest.raises(ValueError, match='bands'):
        split_input_convolution(onnx.load(str(lean)), 1)


MEMORY_SCRIPT = """
import sys, numpy as np
from kp2d_ros.memory import configure_allocator, rss_mib, trim
from kp2d_core.backends.onnx_backend import OnnxRuntimeBackend
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
    network measured 79 -> 49 MiB)."""
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
    assert kept['lean'] < kept['plain'] - 15.0, kept
