#!/usr/bin/env python3
"""Inference speed of every backend and precision against eager fp32 and classical detectors.

    python -m benchmarks.inference [--repeats 20] [--variants default,light] [--device cpu]
    python -m benchmarks.inference --checkpoint PATH

For 240x320 (top-300) and 480x640 (top-1000) it prints, per model variant and per
backend/precision available here, the network's and extract()'s median and p90 milliseconds,
the ratio of the network time to the variant's eager fp32 PyTorch and of extract() to ORB,
SIFT and AKAZE measured in the same run, and the peak memory (RSS) of a process that only runs
that backend. With several variants it also prints how many times faster each variant's
extract() is than the bundled default model's on the same backend. Each row runs in a fresh
process, one after the other, so peaks and caches do not mix. Ratios are comparable across
machines, absolute times are not.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import json
import statistics
import subprocess
import sys
import time

import cv2
import numpy as np
import torch

SETTINGS = ((240, 320, 300), (480, 640, 1000))  # (H, W, top-k) of the KP2D protocol
CLASSICAL = ('ORB', 'SIFT', 'AKAZE')
CHOICES = (
    'torch:fp32',
    'torch:bf16',
    'torch:fp16',
    'onnxruntime:fp32',
    'onnxruntime:int8',
    'onnxruntime:fp16',
)


def time_ms(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> list[float]:
    """Wall-clock milliseconds of ``repeats`` calls after two warm-up calls."""
    for _ in range(2):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    return {'median': statistics.median(samples), 'p90': float(np.percentile(samples, 90))}


def measure_one(args: argparse.Namespace) -> dict:
    """In this process: one backend (or OpenCV) at one setting; peak RSS included."""
    from kp2d_core import ExtractorConfig, KeypointExtractor, load_model
    from kp2d_core.data.samples import synthetic_pair
    from kp2d_core.images import image_to_array, normalize_image
    from kp2d_core.inference.backends import create_backend
    from kp2d_core.model.checkpoint import resolve_device
    from kp2d_core.model.files import bundled_weights_path, file_sha256

    height, width, top_k = (int(v) for v in args.setting.split(','))
    image = synthetic_pair((height, width))[0]
    if args.single in CLASSICAL:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        detector = _classical(args.single, top_k)
        times = time_ms(lambda: detector.detectAndCompute(gray, None), args.repeats, lambda: None)
        return {'extract': summary(times), 'peak_mib': _peak_mib()}
    weights = args.checkpoint or bundled_weights_path(args.variant)
    model = load_model(weights, resolve_device(args.device))
    name, precision = args.single.split(':')
    backend = create_backend(name, precision, model, weights, file_sha256(weights))
    extractor = KeypointExtractor(backend, ExtractorConfig(top_k=top_k))
    net_input = normalize_image(image_to_array(image), model.cfg.use_color)
    network = time_ms(lambda: backend(net_input), args.repeats, lambda: None)  # host outputs
    extract = time_ms(lambda: extractor.extract(image), args.repeats, lambda: None)
    return {'network': summary(network), 'extract': summary(extract), 'peak_mib': _peak_mib()}


def _classical(name: str, top_k: int) -> cv2.Feature2D:
    """OpenCV's detector+descriptor ``name`` (AKAZE keeps its own threshold: no top-k)."""
    if name == 'AKAZE':
        return cv2.AKAZE_create()
    return (cv2.ORB_create if name == 'ORB' else cv2.SIFT_create)(nfeatures=top_k)


def _peak_mib() -> float:
    from kp2d_ros.process_memory import peak_rss_mib

    return peak_rss_mib()  # this program's own peak (ru_maxrss would include the parent's)


def run_child(
    args: argparse.Namespace, variant: str, choice: str, setting: tuple[int, int, int]
) -> dict | None:
    command = [
        sys.executable,
        '-m',
        'benchmarks.inference',
        '--single',
        choice,
        '--setting',
        ','.join(map(str, setting)),
        '--repeats',
        str(args.repeats),
        '--device',
        args.device,
        '--checkpoint',
        args.checkpoint,
        '--variants',
        variant,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:  # not available here (e.g. fp16 without CUDA), or it failed
        reason = (result.stderr.strip().splitlines() or ['no output'])[-1]
        print(f'({variant} {choice} at {setting[0]}x{setting[1]} skipped: {reason})')
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(setting: tuple[int, int, int], rows: dict[str, dict]) -> None:
    """One table per setting: rows keyed '<variant> <backend:precision>' or a classical name."""
    classical = {name: rows[name]['extract']['median'] for name in CLASSICAL if name in rows}
    print(f'\n{setting[0]}x{setting[1]}, top-{setting[2]}')
    print(
        f'{"method":>26} {"net ms":>7} {"net p90":>7} {"vs fp32":>7} {"extract":>8} '
        f'{"p90":>7} {"FPS":>6} '
        + ' '.join(f'{"x " + name:>7}' for name in classical)
        + f' {"peak MiB":>8}'
    )
    for name, row in rows.items():
        net = row.get('network')
        fp32 = rows.get(f'{name.split(" ")[0]} torch:fp32', {}).get('network')
        ext = row['extract']['median']
        cells = [
            f'{net["median"]:7.1f}' if net else f'{"":>7}',
            f'{net["p90"]:7.1f}' if net else f'{"":>7}',
            f'{fp32["median"] / net["median"]:6.2f}x' if net and fp32 else f'{"":>7}',
        ]
        ratios = ' '.join(f'{ext / base:7.2f}' for base in classical.values())
        print(
            f'{name:>26} {" ".join(cells)} {ext:8.1f} {row["extract"]["p90"]:7.1f} '
            f'{1e3 / ext:6.1f} {ratios} {row["peak_mib"]:8.0f}'
        )
    _report_variants(rows)


def _report_variants(rows: dict[str, dict]) -> None:
    """extract() of each non-default variant against the default model's, per backend."""
    variants = sorted({name.split(' ')[0] for name in rows if ' ' in name} - {'default'})
    for variant in variants if any(name.startswith('default ') for name in rows) else ():
        for name, row in rows.items():
            if not name.startswith(f'{variant} '):
                continue
            base = rows.get(name.replace(variant, 'default', 1))
            if base is not None:
                speedup = base['extract']['median'] / row['extract']['median']
                print(f"{name}: extract() {speedup:.2f}x faster than the default model's")


def main() -> None:
    parser = argparse.ArgumentParser(description='KP2D inference benchmark')
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--device', default='auto')
    parser.add_argument('--variants', default='default,light', help='comma list of variants')
    parser.add_argument('--checkpoint', default='', help='these weights instead of --variants')
    parser.add_argument('--single', help=argparse.SUPPRESS)
    parser.add_argument('--setting', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        args.variant = args.variants
        print(json.dumps(measure_one(args)))
        return
    print(
        f'torch {torch.__version__}, {torch.get_num_threads()} CPU threads, CUDA '
        f'{"available" if torch.cuda.is_available() else "not available"}; OpenCV '
        f'{cv2.__version__}; {args.repeats} repeats; every row in its own process'
    )
    variants = ['checkpoint'] if args.checkpoint else args.variants.split(',')
    for setting in SETTINGS:
        rows = {}
        for variant in variants:
            for choice in CHOICES:
                result = run_child(args, variant, choice, setting)
                if result is not None:
                    rows[f'{variant} {choice}'] = result
        for name in CLASSICAL:
            rows[name] = run_child(args, 'default', name, setting)
        report(setting, rows)


if __name__ == '__main__':
    main()
