"""What each choice of the light network costs: FLOPs, parameters and ONNX Runtime time.

    python -m benchmarks.light_architectures [--repeats 15] [--size 480,640]

Every candidate is a ``ModelConfig`` of the light architecture with one choice changed from
the chosen one (``LIGHT`` in :mod:`kp2d_core.model.variants`); each is exported to ONNX,
quantised to int8 (random weights: the time does not depend on their values) and timed on one
image of ``--size`` with the same session settings as the node, fp32 and int8, in this process,
one after the other. The bundled model (its shipped int8 file and a fresh fp32 export) and
OpenCV's ORB, AKAZE and SIFT run in the same process on the same image as the baselines.
Ratios are comparable across machines, absolute times are not.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
import statistics
import tempfile
import time

import cv2
import numpy as np
import torch

from kp2d_core.data.samples import synthetic_pair
from kp2d_core.evaluation.cpu import cpu_description
from kp2d_core.images import image_to_array, normalize_image
from kp2d_core.inference.backends.onnx_backend import OnnxRuntimeBackend
from kp2d_core.inference.export import export_onnx, quantize_int8
from kp2d_core.model.checkpoint import load_model
from kp2d_core.model.files import default_weights_path
from kp2d_core.model.flops import conv_flops
from kp2d_core.model.keypoint_net import KeypointNet
from kp2d_core.model.variants import LIGHT

CANDIDATES: dict[str, dict] = {
    'light (chosen): 8-16-32-128, separable detector heads, descriptors lifted to H/4': {},
    'descriptors at H/8 (no lift)': {'do_upsample': False},
    'full detector heads': {'head_conv': 'full'},
    'separable descriptor head too': {'descriptor_head_conv': 'separable'},
    'max-pooling instead of strided convs': {'downsample': 'pool'},
    'RGB input': {'use_color': True},
    'widths 16-32-64-128, full heads, no lift': {
        'widths': (16, 32, 64, 128),
        'head_conv': 'full',
        'do_upsample': False,
    },
    'widths 16-32-64-128, full heads, lift': {'widths': (16, 32, 64, 128), 'head_conv': 'full'},
    'widths 16-32-64-128, separable heads, no lift': {
        'widths': (16, 32, 64, 128),
        'descriptor_head_conv': 'separable',
        'do_upsample': False,
    },
    'widths 8-16-32-64, full heads, no lift': {
        'widths': (8, 16, 32, 64),
        'head_conv': 'full',
        'do_upsample': False,
    },
}


def median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def onnx_times(
    model: KeypointNet,
    image: np.ndarray,
    repeats: int,
    folder: Path,
    int8_path: Path | None,
    name: str = '',
) -> tuple[float, float]:
    """(fp32 ms, int8 ms) of ``model`` on ``image`` (int8: ``int8_path`` or quantised here)."""
    fp32 = export_onnx(model, folder / 'model.fp32.onnx')
    net_input = normalize_image(image_to_array(image), model.cfg.use_color)
    if int8_path is None:
        generator = np.random.default_rng(0)
        calibration = [
            normalize_image(
                image_to_array(generator.integers(0, 255, (120, 160, 3), np.uint8)),
                model.cfg.use_color,
            )
            for _ in range(4)
        ]
        int8_path = _int8_model(fp32, folder, calibration, name)
    times = []
    for path, precision in ((fp32, 'fp32'), (int8_path, 'int8')):
        backend = OnnxRuntimeBackend(path, precision)
        times.append(median_ms(lambda b=backend: b(net_input), repeats))
    return times[0], times[1]


def _int8_model(fp32: Path, folder: Path, calibration: list[np.ndarray], name: str) -> Path:
    """The int8 model with the memory rewrites; as quantised where they break the graph
    (max-pooling: the graph then fails ONNX Runtime's shape check), which is said."""
    lean = quantize_int8(fp32, folder / 'model.int8.onnx', calibration)
    try:
        OnnxRuntimeBackend(lean, 'int8')
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own exception types
        print(f'({name}: int8 timed without the memory rewrites: {str(exc)[-100:]})')
        return quantize_int8(fp32, folder / 'plain.int8.onnx', calibration, lean=False)
    return lean


def opencv_times(image: np.ndarray, repeats: int, top_k: int) -> dict[str, float]:
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    detectors = {
        'ORB': cv2.ORB_create(nfeatures=top_k),
        'AKAZE': cv2.AKAZE_create(threshold=1e-4),
        'SIFT': cv2.SIFT_create(nfeatures=top_k),
    }
    return {
        name: median_ms(lambda d=d: d.detectAndCompute(gray, None), repeats)
        for name, d in detectors.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--size', default='480,640', help='H,W of the timed image')
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split(','))
    image = synthetic_pair((height, width))[0]
    print(f'{cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads')
    print(f'{height}x{width}, median of {args.repeats} runs after 3 warm-ups, batch 1')
    bundled = load_model(default_weights_path())
    shipped_int8 = default_weights_path().with_suffix('.int8.onnx')
    with tempfile.TemporaryDirectory(prefix='kp2d-arch-') as scratch:
        base = onnx_times(bundled, image, args.repeats, Path(scratch), shipped_int8)
        rows = {'bundled (vgg)': (bundled.cfg, *base)}
        for name, change in CANDIDATES.items():
            cfg = replace(LIGHT, **change)
            torch.manual_seed(0)
            model = KeypointNet(cfg).eval()
            with tempfile.TemporaryDirectory(dir=scratch) as folder:
                times = onnx_times(model, image, args.repeats, Path(folder), None, name)
                rows[name] = (cfg, *times)
    print_table(rows, bundled, (height, width))
    for name, ms in opencv_times(image, args.repeats, 1000).items():
        print(f'{name} detectAndCompute (top-1000): {ms:.1f} ms')


def print_table(rows: dict, bundled: KeypointNet, hw: tuple[int, int]) -> None:
    base_flops = conv_flops(bundled, *hw)
    base_fp32, base_int8 = rows['bundled (vgg)'][1:]
    print(
        '| network | GFLOP | x fewer | params (M) | fp32 ms | int8 ms | fp32 speed-up '
        '| int8 speed-up |'
    )
    print('|---|---|---|---|---|---|---|---|')
    for name, (cfg, fp32, int8) in rows.items():
        model = KeypointNet(cfg)
        flops = conv_flops(model, *hw)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(
            f'| {name} | {flops / 1e9:.2f} | {base_flops / flops:.1f} | {params:.2f} '
            f'| {fp32:.1f} | {int8:.1f} | {base_fp32 / fp32:.1f}x | {base_int8 / int8:.1f}x |'
        )


if __name__ == '__main__':
    main()
