"""The light model's descriptor lift in two parts: the same descriptors, sampled apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kp2d_core import KeypointNet
from kp2d_core.geometry.coordinates import sample_map, sample_upsampled_map, upsample_map
from kp2d_core.inference.backends.onnx_backend import OnnxRuntimeBackend
from kp2d_core.inference.descriptor_lift import FINE_OUTPUT, split_descriptor_lift
from kp2d_core.inference.export import export_onnx, quantize_int8
from kp2d_core.model.checkpoint import load_model
from kp2d_core.model.descriptors import unit_rows
from kp2d_core.model.files import QUANTISATION_KEYS, bundled_weights_path

ort = pytest.importorskip('onnxruntime', reason='pip install .[onnx]')
onnx = pytest.importorskip('onnx')

MAP_SIZES = [(60, 80), (3, 5), (1, 1), (2, 7), (7, 2)]


def _points(rng: np.random.Generator, height: int, width: int, n: int = 300) -> np.ndarray:
    """(1, N, 2) points inside, on the border of and outside an image."""
    inside = rng.uniform(-4.0, [width + 4.0, height + 4.0], (n, 2))
    edges = [[0, 0], [width - 1, height - 1], [-0.5, -0.5], [width - 0.5, height - 0.5]]
    return np.concatenate([inside, edges])[None].astype(np.float32)


def _torch_lifted(coarse: np.ndarray) -> torch.Tensor:
    return F.interpolate(
        torch.from_numpy(coarse), scale_factor=2.0, mode='bilinear', align_corners=False
    )


@pytest.mark.parametrize('hw', MAP_SIZES)
def test_sampling_the_upsampled_map_equals_torch(hw) -> None:
    rng = np.random.default_rng(sum(hw))
    coarse = rng.standard_normal((2, 16, *hw)).astype(np.float32)
    height, width = 8 * hw[0], 8 * hw[1]
    xy = np.repeat(_points(rng, height, width), 2, axis=0)
    lifted = _torch_lifted(coarse)
    expected = sample_map(lifted, torch.from_numpy(xy), height, width).numpy()
    got = sample_upsampled_map(coarse, xy, height, width)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.abs(got - expected).max() < 5e-5  # float rounding (grid_sample: normalised)
    assert np.abs(upsample_map(coarse) - lifted.numpy()).max() < 1e-5


def test_integer_maps_are_sampled_as_float32() -> None:
    rng = np.random.default_rng(1)
    coarse = rng.integers(0, 256, (1, 8, 6, 10), dtype=np.uint8)
    xy = _points(rng, 48, 80)
    got = sample_upsampled_map(coarse, xy, 48, 80)
    expected = sample_upsampled_map(coarse.astype(np.float32), xy, 48, 80)
    assert got.dtype == np.float32 and np.abs(got - expected).max() < 1e-3
    assert np.array_equal(sample_map(coarse, xy, 48, 80), sample_map(coarse, xy, 48, 80))


def _lift_graph(mode: str = 'linear', scale: float = 2.0, transform: str = 'half_pixel'):
    """descriptors = Resize(coarse) + fine, coarse and fine computed from graph inputs."""
    from onnx import TensorProto, helper, numpy_helper

    scales = numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), 'scales')
    resize = helper.make_node(
        'Resize',
        ['coarse', '', 'scales'],
        ['lifted'],
        mode=mode,
        coordinate_transformation_mode=transform,
    )
    add = helper.make_node('Add', ['lifted', 'fine'], ['descriptors'])
    parts = [helper.make_node('Relu', [f'{name}_in'], [name]) for name in ('coarse', 'fine')]
    graph = helper.make_graph(
        [*parts, resize, add],
        'lift',
        [
            helper.make_tensor_value_info('coarse_in', TensorProto.FLOAT, [1, 4, 'h', 'w']),
            helper.make_tensor_value_info('fine_in', TensorProto.FLOAT, [1, 4, 'h2', 'w2']),
        ],
        [helper.make_tensor_value_info('descriptors', TensorProto.FLOAT, [1, 4, 'h2', 'w2'])],
        [scales],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])


def test_only_a_bilinear_2x_lift_is_split() -> None:
    proto = _lift_graph()
    assert split_descriptor_lift(proto)
    onnx.checker.check_model(proto)
    assert [o.name for o in proto.graph.output] == ['descriptors', FINE_OUTPUT]
    assert [n.op_type for n in proto.graph.node] == ['Relu', 'Relu']
    session = ort.InferenceSession(proto.SerializeToString(), providers=['CPUExecutionProvider'])
    coarse = np.random.default_rng(9).standard_normal((1, 4, 3, 5)).astype(np.float32)
    fine = np.random.default_rng(10).standard_normal((1, 4, 6, 10)).astype(np.float32)
    got = session.run(None, {'coarse_in': coarse, 'fine_in': fine})
    assert np.array_equal(got[0], np.maximum(coarse, 0)) and np.array_equal(
        got[1], np.maximum(fine, 0)
    )
    assert not split_descriptor_lift(proto)  # already split
    for other in (
        _lift_graph('nearest'),
        _lift_graph(scale=3.0),
        _lift_graph(transform='asymmetric'),
    ):
        before = other.SerializeToString()
        assert not split_descriptor_lift(other)
        assert other.SerializeToString() == before


@pytest.fixture(scope='module')
def light_exports(tmp_path_factory):
    """The shipped light model, its fp32 export and an int8 one quantised on 3 images."""
    out = tmp_path_factory.mktemp('lift')
    model = load_model(bundled_weights_path('light'))
    fp32 = export_onnx(model, out / 'light.fp32.onnx', 'sha', (64, 96))
    generator = torch.Generator().manual_seed(5)
    images = [(torch.rand(1, 1, 64, 96, generator=generator) - 0.5).numpy() for _ in range(3)]
    int8 = quantize_int8(fp32, out / 'light.int8.onnx', images, 'sha')
    return model, fp32, int8


def _reference(model: KeypointNet, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(image)).descriptors.numpy()


def test_the_split_export_gives_the_models_descriptors(light_exports) -> None:
    model, fp32, _ = light_exports
    backend = OnnxRuntimeBackend(fp32, 'fp32')
    assert backend.outputs == ['score', 'coords', 'descriptors', FINE_OUTPUT]
    rng = np.random.default_rng(6)
    for hw in [(64, 96), (120, 160), (24, 40)]:
        image = rng.uniform(-0.5, 0.5, (1, 1, *hw)).astype(np.float32)
        out, expected = backend(image), _reference(model, image)
        assert out.fine is not None and out.descriptors.shape[-2:] == (hw[0] // 8, hw[1] // 8)
        assert np.abs(out.float_descriptors() - expected).max() < 1e-4
        xy = _points(rng, *hw, n=100)[0]
        dense = sample_map(expected, xy[None], *hw)[0]
        assert np.abs(out.sample_descriptors(0, xy, *hw) - dense).max() < 1e-4


def test_the_int8_light_model_outputs_both_parts_quantised(light_exports) -> None:
    model, _, int8 = light_exports
    backend = OnnxRuntimeBackend(int8, 'int8')
    assert set(backend.quantisation) == {'descriptors', FINE_OUTPUT}
    image = np.random.default_rng(7).uniform(-0.5, 0.5, (1, 1, 64, 96)).astype(np.float32)
    out = backend(image)
    assert out.descriptors.dtype == out.fine.dtype == np.uint8
    xy = _points(np.random.default_rng(8), 64, 96, n=100)[0]
    dense = sample_map(out.float_descriptors(), xy[None], 64, 96)[0]
    sampled = out.sample_descriptors(0, xy, 64, 96)
    assert np.abs(sampled - dense).max() < 1e-4
    expected = sample_map(_reference(model, image), xy[None], 64, 96)[0]
    cosine = (unit_rows(sampled) * unit_rows(expected)).sum(axis=1)
    assert cosine.mean() > 0.98, cosine.mean()


def test_a_fine_part_without_its_quantisation_is_refused(light_exports, tmp_path) -> None:
    _, _, int8 = light_exports
    proto = onnx.load(str(int8))
    kept = [p for p in proto.metadata_props if p.key != QUANTISATION_KEYS[FINE_OUTPUT]]
    assert len(kept) == len(proto.metadata_props) - 1
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(tmp_path / 'bare.onnx'))
    with pytest.raises(ValueError, match='uint8 descriptors_fine without a readable scale'):
        OnnxRuntimeBackend(tmp_path / 'bare.onnx', 'int8')


def test_only_wide_unrolled_inputs_get_padded_filters(light_exports) -> None:
    # The first convolution (1 -> 8 channels, 3x3: 9 values per pixel) keeps its 8 filters;
    # the score head's 128 -> 1 is padded to 16 and sliced back.
    _, _, int8 = light_exports
    graph = onnx.load(str(int8)).graph
    sliced = [
        n.input[0]
        for n in graph.node
        if n.op_type == 'Slice' and n.input[0].endswith('_QuantizeLinear_Output')
    ]
    assert any('score_head' in name for name in sliced)
    assert not any('stage0' in name for name in sliced)


def test_the_light_extractor_keeps_the_dense_map_of_its_descriptors() -> None:
    # The bundled light model on ONNX Runtime (its lift in two parts): the dense map the
    # tracker refines matches on gives, sampled at the keypoints, the keypoints' descriptors.
    from kp2d_core.images import read_image
    from kp2d_core.inference.extractor import KeypointExtractor
    from kp2d_core.inference.probe import sample_photo_path

    extractor = KeypointExtractor.from_checkpoint(device='cpu', variant='light')
    assert extractor.backend.name == 'onnxruntime'
    features = extractor.extract(read_image(sample_photo_path()), keep_dense=True)
    dense = features.dense
    assert dense is not None and dense.values.shape[-2:] == (
        dense.network_hw[0] // 4,
        dense.network_hw[1] // 4,
    )
    net = dense.to_network(features.keypoints).astype(np.float32)
    sampled = sample_map(dense.values[None], net[None], *dense.network_hw)[0]
    assert len(features) > 100
    assert np.abs(unit_rows(sampled) - features.descriptors).max() < 1e-4
