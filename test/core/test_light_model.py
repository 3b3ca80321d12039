"""The light network: same outputs as the paper's, a fraction of its arithmetic, distillable."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from kp2d_core import KeypointNet, ModelConfig
from kp2d_core.model.checkpoint import load_model
from kp2d_core.model.flops import conv_flops
from kp2d_core.model.losses import LossConfig
from kp2d_core.model.losses.distillation import DistillConfig, distillation_losses
from kp2d_core.model.variants import DEFAULT, LIGHT
from kp2d_core.training.module import KP2DTrainModule, Teacher

SIZES = [(240, 320), (480, 640), (120, 160), (24, 24), (64, 88)]
LIGHT_PAIR = ('default', 'light')  # the bundled variants


@pytest.mark.parametrize('hw', SIZES)
def test_the_light_network_gives_the_outputs_of_the_paper_network(hw) -> None:
    torch.manual_seed(0)
    light, big = KeypointNet(LIGHT).eval(), KeypointNet(DEFAULT).eval()
    with torch.no_grad():
        out = light(torch.rand(2, 1, *hw))
        ref = big(torch.rand(2, 3, *hw))
    hc, wc = hw[0] // 8, hw[1] // 8
    assert out.score.shape == ref.score.shape == (2, 1, hc, wc)
    assert out.coords.shape == ref.coords.shape == (2, 2, hc, wc)
    assert out.descriptors.shape == (2, LIGHT.descriptor_dim, 2 * hc, 2 * wc)  # lifted to H/4
    assert float(out.score[..., 0, :].abs().max()) == 0.0  # border ring, as the paper's
    assert light.descriptor_stride == 4


@pytest.mark.parametrize('hw', SIZES)
def test_the_light_network_needs_at_most_a_fifth_of_the_arithmetic(hw) -> None:
    light = conv_flops(KeypointNet(LIGHT), *hw)
    big = conv_flops(KeypointNet(DEFAULT), *hw)
    assert light * 5 <= big, f'{light / 1e9:.2f} vs {big / 1e9:.2f} GFLOP at {hw}'


def test_the_flop_count_is_exact_for_a_known_convolution() -> None:
    # One 3x3 conv 1 -> 16 at 24x24 is 2 * 9 * 16 * 576 FLOPs; the rest of the network adds.
    model = KeypointNet(replace(LIGHT, widths=(16, 16, 16, 16)))
    stage0 = 2 * 9 * 1 * 16 * 24 * 24
    stage1 = 2 * 9 * 16 * 16 * 12 * 12 * 2
    assert conv_flops(model, 24, 24) > stage0 + stage1
    alone = torch.nn.Sequential(model.encoder.stage0[0])
    alone.cfg = model.cfg
    assert conv_flops(alone, 24, 24) == stage0


def test_the_light_config_is_checked() -> None:
    with pytest.raises(ValueError, match='widths'):
        ModelConfig(architecture='light', widths=(16, 32, 0, 128))
    with pytest.raises(ValueError, match='architecture'):
        ModelConfig(architecture='resnet')


def test_distillation_terms_vanish_when_the_student_is_the_teacher() -> None:
    torch.manual_seed(0)
    net = KeypointNet(replace(LIGHT, use_color=True)).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 64, 96))
    terms = distillation_losses(out, out, DistillConfig())
    assert float(terms['kd_loc']) == pytest.approx(0.0, abs=1e-6)
    assert float(terms['kd_desc']) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match='channels'):
        small = replace(LIGHT, descriptor_dim=64)
        distillation_losses(KeypointNet(small)(torch.rand(2, 1, 64, 96)), out, DistillConfig())


def test_distillation_on_a_tiny_batch_decreases() -> None:
    torch.manual_seed(0)
    teacher = Teacher(load_model())
    module = KP2DTrainModule(
        LIGHT, LossConfig(use_io_loss=False), teacher=teacher, distill_cfg=DistillConfig('x')
    )
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 64, 96, generator=generator)
    H = torch.eye(3).expand(2, 3, 3).clone()
    optimizer = torch.optim.Adam(module.parameters(), 1e-3)
    totals = []
    for _ in range(12):
        terms = module(images, images, H)
        optimizer.zero_grad()
        terms['total'].backward()
        optimizer.step()
        totals.append(float(terms['kd_total'].detach()))
    assert totals[-1] < 0.6 * totals[0], totals
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert all(not name.startswith('teacher') for name in module.state_dict())


def test_int8_rewrites_are_exact_with_several_narrow_convolutions(tmp_path) -> None:
    ort = pytest.importorskip('onnxruntime')
    from kp2d_core.inference.export import export_onnx, quantize_int8

    torch.manual_seed(0)
    model = KeypointNet(replace(LIGHT, widths=(8, 16, 32, 64))).eval()  # 1 -> 8: narrow too
    fp32 = export_onnx(model, tmp_path / 'm.onnx', 'sha', (64, 96))
    rng = np.random.default_rng(0)
    images = [rng.uniform(-1, 1, (1, 1, 64, 96)).astype(np.float32) for _ in range(2)]
    plain = quantize_int8(fp32, tmp_path / 'plain.onnx', images, 'sha', lean=False)
    lean = quantize_int8(fp32, tmp_path / 'lean.onnx', images, 'sha')
    options = ort.SessionOptions()
    options.log_severity_level = 3
    runs = [
        ort.InferenceSession(str(p), options).run(None, {'image': images[0]})
        for p in (plain, lean)
    ]
    for got, expected in zip(runs[1][:2], runs[0][:2]):
        assert np.array_equal(got, expected)


@pytest.mark.parametrize('config', [LIGHT, DEFAULT], ids=['light', 'default'])
def test_int8_keeps_depthwise_convolutions_and_the_location_output_in_float(
    tmp_path, config
) -> None:
    pytest.importorskip('onnxruntime')
    import onnx

    from kp2d_core.inference.export import export_onnx, quantize_int8

    torch.manual_seed(0)
    model = KeypointNet(config).eval()
    fp32 = export_onnx(model, tmp_path / 'm.onnx', 'sha', (64, 96))
    channels = 3 if config.use_color else 1
    images = [np.zeros((1, channels, 64, 96), np.float32)]
    graph = onnx.load(str(quantize_int8(fp32, tmp_path / 'q.onnx', images, 'sha'))).graph
    makers = {out: node for node in graph.node for out in node.output}
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]

    def is_float(conv) -> bool:  # its weight is not dequantised from int8
        maker = makers.get(conv.input[1])
        return maker is None or maker.op_type != 'DequantizeLinear'

    assert bool(depthwise) == (config is LIGHT)
    convs = [node for node in graph.node if node.op_type == 'Conv']
    floats = [node for node in convs if is_float(node)]
    # The location head's output, plus the light heads' depthwise convolutions.
    assert len(floats) == 1 + len(depthwise), [n.name for n in floats]
    assert len(convs) > len(floats)


def test_the_bundled_light_descriptors_match_the_bundled_default_ones() -> None:
    """Hybrid tracking may detect with the light model where Lucas-Kanade failed and match
    against the default model's keyframes: its distilled descriptors must match the default
    model's across a change of view about as well as the default model's own."""
    from kp2d_core.data.samples import render_view
    from kp2d_core.geometry.coordinates import warp_points
    from kp2d_core.images import read_image
    from kp2d_core.inference.extractor import KeypointExtractor
    from kp2d_core.inference.matching import match_descriptors
    from kp2d_core.inference.probe import sample_photo_path

    photo = read_image(sample_photo_path())
    (image0, H0), (image1, H1) = (render_view(photo, (240, 320), t) for t in (0.1, 0.16))
    to_1 = H1 @ np.linalg.inv(H0)
    models = {v: KeypointExtractor.from_checkpoint(None, 'cpu', None, v) for v in LIGHT_PAIR}
    correct = {}
    for first, second in [('default', 'default'), ('default', 'light'), ('light', 'default')]:
        f0, f1 = models[first].extract(image0), models[second].extract(image1)
        pairs = match_descriptors(f0.descriptors, f1.descriptors).indices
        moved = warp_points(to_1, f0.keypoints[pairs[:, 0]].astype(np.float64))
        right = np.linalg.norm(moved - f1.keypoints[pairs[:, 1]], axis=1) < 3.0
        correct[first, second] = (int(right.sum()), float(right.mean()))
    same, precision = correct['default', 'default']
    assert same >= 100 and precision > 0.8, correct
    for pair in [('default', 'light'), ('light', 'default')]:
        assert correct[pair][0] >= 0.5 * same and correct[pair][1] >= 0.8 * precision, correct
