"""The descriptor head's last convolution, applied by the front-end at its keypoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kp2d_core.geometry.coordinates import sample_map
from kp2d_core.inference.backends.onnx_backend import OnnxRuntimeBackend
from kp2d_core.inference.descriptor_conv import (
    FEATURES_OUTPUT,
    DescriptorConv,
    encode_conv,
    split_descriptor_conv,
)
from kp2d_core.inference.export import export_onnx, quantize_int8
from kp2d_core.inference.extractor import KeypointExtractor
from kp2d_core.inference.features import DescriptorMap
from kp2d_core.inference.int8_heads import int8_upsampling, pad_output_channels
from kp2d_core.inference.subpixel import refine_matches
from kp2d_core.model.checkpoint import load_model
from kp2d_core.model.descriptors import unit_rows
from kp2d_core.model.files import (
    DESCRIPTOR_CONV_KEY,
    bundled_weights_path,
)

ort = pytest.importorskip('onnxruntime', reason='pip install .[onnx]')
onnx = pytest.importorskip('onnx')

SCALE, ZERO = 0.05, 7


def _conv(rng: np.random.Generator, channels: int = 8, depth: int = 5):
    kernel = rng.standard_normal((depth, channels, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(depth).astype(np.float32)
    return kernel, bias, DescriptorConv.from_kernel(kernel, bias, SCALE, ZERO)


def _torch_output(features: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> torch.Tensor:
    """(1, D, h, w) the convolution of the dequantised (h, w, C) features, zero padded."""
    x = torch.from_numpy((features.astype(np.float32) - ZERO) * SCALE).permute(2, 0, 1)[None]
    return F.conv2d(x, torch.from_numpy(kernel), torch.from_numpy(bias), padding=1)


@pytest.mark.parametrize('hw', [(6, 9), (1, 1), (2, 5), (30, 40)])
def test_at_points_samples_the_convolved_map(hw) -> None:
    rng = np.random.default_rng(sum(hw))
    kernel, bias, conv = _conv(rng)
    features = rng.integers(0, 256, (*hw, 8), dtype=np.uint8)
    height, width = 4 * hw[0], 4 * hw[1]
    inside = rng.uniform(-3.0, [width + 3.0, height + 3.0], (400, 2))
    edges = [[0, 0], [width - 1, height - 1], [-0.5, -0.5], [width - 0.5, height - 0.5]]
    xy = np.concatenate([inside, edges]).astype(np.float32)
    expected = sample_map(
        _torch_output(features, kernel, bias), torch.from_numpy(xy)[None], height, width
    )
    got = conv.at_points(features, xy, height, width)
    assert got.shape == (len(xy), 5) and got.dtype == np.float32
    assert np.abs(got - expected[0].numpy()).max() < 1e-3


def test_cells_and_dense_map_are_the_convolution() -> None:
    rng = np.random.default_rng(1)
    kernel, bias, conv = _conv(rng)
    features = rng.integers(0, 256, (7, 11, 8), dtype=np.uint8)
    expected = _torch_output(features, kernel, bias)[0].numpy()
    assert np.abs(conv.dense(features) - expected).max() < 1e-3
    rows, cols = np.array([[0, 6], [3, 2]]), np.array([[0, 10], [5, 0]])
    got = conv.at_cells(features, rows, cols)
    assert got.shape == (2, 2, 5)
    assert np.abs(got - np.moveaxis(expected[:, rows, cols], 0, -1)).max() < 1e-3


def test_bad_convolutions_and_inputs_are_refused() -> None:
    rng = np.random.default_rng(2)
    kernel, bias, conv = _conv(rng)
    with pytest.raises(ValueError, match='kernel'):
        DescriptorConv.from_kernel(kernel[:, :, :2], bias, SCALE, ZERO)
    with pytest.raises(ValueError, match='bias'):
        DescriptorConv.from_kernel(kernel, bias[:3], SCALE, ZERO)
    with pytest.raises(ValueError, match='finite'):
        DescriptorConv.from_kernel(np.full_like(kernel, np.nan), bias, SCALE, ZERO)
    with pytest.raises(ValueError, match='quantisation'):
        DescriptorConv.from_kernel(kernel, bias, 0.0, ZERO)
    with pytest.raises(ValueError, match='uint8 features'):
        conv.at_points(np.zeros((4, 4, 8), np.float32), np.zeros((1, 2)), 16, 16)
    with pytest.raises(ValueError, match=r'\(h, w, 8\)'):
        conv.dense(np.zeros((4, 4, 3), np.uint8))


@pytest.fixture(scope='module')
def models(bundled_int8, tmp_path_factory):
    """(reference, lean) int8 models of the bundled network, quantised alike: the reference
    computes the last convolution in the graph, in float (its output not quantised: the
    quantisation clips what exceeds the calibration's range), after the lean model's other
    rewrites that change values."""
    fp32, images, plain = bundled_int8
    out = tmp_path_factory.mktemp('conv')
    lean = quantize_int8(fp32, out / 'lean.int8.onnx', images, 'sha', conv_at_keypoints=True)
    reference = onnx.load(str(plain))
    assert int8_upsampling(reference) and pad_output_channels(reference)
    graph = reference.graph
    dq = next(n for n in graph.node if 'descriptors' in n.output)
    q = next(n for n in graph.node if dq.input[0] in n.output)
    conv = next(n for n in graph.node if q.input[0] in n.output)
    graph.node.remove(dq)
    graph.node.remove(q)
    conv.output[0] = 'descriptors'
    onnx.save(reference, str(out / 'reference.onnx'))
    return out / 'reference.onnx', lean


def test_lean_model_leaves_the_convolution_to_the_front_end(models) -> None:
    reference, lean = models
    proto = onnx.load(str(lean))
    outputs = {o.name: o for o in proto.graph.output}
    assert set(outputs) == {'score', 'coords', FEATURES_OUTPUT}
    assert outputs[FEATURES_OUTPUT].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert DESCRIPTOR_CONV_KEY in {p.key for p in proto.metadata_props}
    ours, theirs = OnnxRuntimeBackend(lean, 'int8'), OnnxRuntimeBackend(reference, 'int8')
    rng = np.random.default_rng(6)
    for hw in [(64, 96), (120, 160), (24, 40)]:
        image = rng.uniform(-1.0, 1.0, (1, 3, *hw)).astype(np.float32)
        got, expected = ours(image), theirs(image)
        assert np.array_equal(got.score, expected.score)
        assert np.array_equal(got.coords, expected.coords)
        assert got.descriptors.shape == (1, hw[0] // 4, hw[1] // 4, 256)
        xy = rng.uniform(0, [hw[1], hw[0]], (200, 2)).astype(np.float32)
        sampled = got.sample_descriptors(0, xy, *hw)
        assert np.abs(sampled - expected.sample_descriptors(0, xy, *hw)).max() < 1e-3
        assert np.abs(got.float_descriptors() - expected.float_descriptors()).max() < 1e-3


def test_rewrite_applies_once_and_needs_its_pattern(models) -> None:
    reference, lean = models
    assert not split_descriptor_conv(onnx.load(str(lean)))  # already split
    assert split_descriptor_conv(onnx.load(str(reference)))  # the convolution in float
    proto = onnx.load(str(reference))
    conv = next(n for n in proto.graph.node if n.op_type == 'Conv' and 'out.1' in n.name)
    conv.attribute.append(onnx.helper.make_attribute('group', 2))  # not a plain convolution
    assert not split_descriptor_conv(proto)


def test_models_without_a_readable_convolution_are_refused(models, tmp_path) -> None:
    _, lean = models
    for name, value in (('missing', None), ('corrupt', 'bm90IGFuIG5weg==')):
        proto = onnx.load(str(lean))
        kept = [p for p in proto.metadata_props if p.key != DESCRIPTOR_CONV_KEY]
        del proto.metadata_props[:]
        proto.metadata_props.extend(kept)
        if value is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = DESCRIPTOR_CONV_KEY, value
        onnx.save(proto, str(tmp_path / f'{name}.onnx'))
        with pytest.raises(ValueError, match='convolution'):
            OnnxRuntimeBackend(tmp_path / f'{name}.onnx', 'int8')


def test_stored_weights_that_do_not_fit_are_refused(models, tmp_path) -> None:
    _, lean = models
    proto = onnx.load(str(lean))
    rng = np.random.default_rng(7)
    wrong = {
        'weight': rng.integers(-64, 64, (256, 256, 3, 3), dtype=np.int8),
        'weight_scale': np.ones(256, np.float32),
        'weight_zero_point': np.zeros(256, np.int32),
        'bias': np.zeros(7, np.float32),  # not one per filter
        'scale': np.float32(0.1),
        'zero_point': np.int32(0),
    }
    for entry in proto.metadata_props:
        if entry.key == DESCRIPTOR_CONV_KEY:
            entry.value = encode_conv(wrong)
    onnx.save(proto, str(tmp_path / 'wrong.onnx'))
    with pytest.raises(ValueError, match='bias'):
        OnnxRuntimeBackend(tmp_path / 'wrong.onnx', 'int8')


def test_matches_are_refined_on_the_convolution_where_read(models) -> None:
    extractor = KeypointExtractor(OnnxRuntimeBackend(models[1], 'int8'))
    rng = np.random.default_rng(8)
    image = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    features = extractor.extract(image, keep_dense=True)
    dense = features.dense
    assert dense is not None and dense.conv is not None and dense.grid_hw == (24, 32)
    plain = DescriptorMap(
        dense.conv.dense(dense.values), dense.network_hw, dense.input_hw, dense.resized_hw
    )
    partners = unit_rows(rng.standard_normal((20, 256)).astype(np.float32))
    xy = features.keypoints[:20]
    refined = refine_matches(partners, dense, xy)
    assert np.abs(refined - refine_matches(partners, plain, xy)).max() < 1e-3


def test_the_light_graph_is_refused(tmp_path) -> None:
    light = load_model(bundled_weights_path('light'))
    fp32 = export_onnx(light, tmp_path / 'light.onnx', 'sha', (64, 96))
    channels = 3 if light.cfg.use_color else 1
    image = np.random.default_rng(9).uniform(-1, 1, (1, channels, 64, 96)).astype(np.float32)
    with pytest.raises(ValueError, match='not a 3x3 convolution'):
        quantize_int8(fp32, tmp_path / 'light.int8.onnx', [image], 'sha', conv_at_keypoints=True)
