#!/usr/bin/env python3
"""Inference speed of every backend and precision against eager fp32, ORB and SIFT, in one run.

    python -m benchmarks.inference [--repeats 20] [--checkpoint PATH] [--device cpu]

For 240x320 (top-300) and 480x640 (top-1000) it prints, per backend/precision available here,
the network's and extract()'s median and p90 milliseconds, the ratio of the network time to
eager fp32 PyTorch (the reference network's speed) and of extract() to ORB and SIFT measured
in the same run, and the peak memory (RSS) of a process that only runs that backend. Each
backend runs in a fresh process, one after the other, so peaks and caches do not mix. Ratios
are comparable across machines, absolute times are not.
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
    from kp2d_core.model.files import default_weights_path, file_sha256

    height, width, top_k = (int(v) for v in args.setting.split(','))
    image = synthetic_pair((height, width))[0]
    if args.single in ('ORB', 'SIFT'):
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        detector = (cv2.ORB_create if args.single == 'ORB' else cv2.SIFT_create)(nfeatures=top_k)
        times = time_ms(lambda: detector.detectAndCompute(gray, None), args.repeats, lambda: None)
        return {'extract': summary(times), 'peak_mib': _peak_mib()}
    weights = args.checkpoint or default_weights_path()
    model = load_model(weights, resolve_device(args.device))
    name, precision = args.single.split(':')
    backend = create_backend(name, precision, model, weights, file_sha256(weights))
    extractor = KeypointExtractor(backend, ExtractorConfig(top_k=top_k))
    net_input = normalize_image(image_to_array(image))
    network = time_ms(lambda: backend(net_input), args.repeats, lambda: None)  # host outputs
    extract = time_ms(lambda: extractor.extract(image), args.repeats, lambda: None)
    return {'network': summary(network), 'extract': summary(extract), 'peak_mib': _peak_mib()}


def _peak_mib() -> float:
    from kp2d_ros.process_memory import peak_rss_mib

    return peak_rss_mib()  # this program's own peak (ru_maxrss would include the parent's)


def run_child(args: argparse.Namespace, choice: str, setting: tuple[int, int, int]) -> dict | None:
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
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        return None  # not available here (e.g. fp16 without CUDA)
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(setting, rows: dict[str, dict]) -> None:
    reference = rows['torch:fp32']['network']['median']
    orb, sift = rows['ORB']['extract']['median'], rows['SIFT']['extract']['median']
    print(f'\n{setting[0]}x{setting[1]}, top-{setting[2]}')
    print(
        f'{"method":>18} {"net ms":>7} {"net p90":>7} {"vs fp32":>7} {"extract":>8} '
        f'{"p90":>7} {"FPS":>6} {"x ORB":>6} {"x SIFT":>6} {"peak MiB":>8}'
    )
    for name, row in rows.items():
        net = row.get('network')
        ext = row['extract']['median']
        cells = [
            f'{net["median"]:7.1f}' if net else f'{"":>7}',
            f'{net["p90"]:7.1f}' if net else f'{"":>7}',
            f'{reference / net["median"]:6.2f}x' if net else f'{"":>7}',
        ]
        print(
            f'{name:>18} {" ".join(cells)} {ext:8.1f} {row["extract"]["p90"]:7.1f} '
            f'{1e3 / ext:6.1f} {ext / orb:6.1f} {ext / sift:6.1f} {row["peak_mib"]:8.0f}'
        )


def main() -> None:
    parser = argparse.ArgumentParser(description='KP2D inference benchmark')
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--device', default='auto')
    parser.add_argument('--checkpoint', default='', help='default: the bundled weights')
    parser.add_argument('--single', help=argparse.SUPPRESS)
    parser.add_argument('--setting', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(measure_one(args)))
        return
    print(
        f'torch {torch.__version__}, {torch.get_num_threads()} CPU threads, CUDA '
        f'{"available" if torch.cuda.is_available() else "not available"}; OpenCV '
        f'{cv2.__version__}; {args.repeats} repeats; every row in its own process'
    )
    for setting in SETTINGS:
        rows = {}
        for choice in (*CHOICES, 'ORB', 'SIFT'):
            result = run_child(args, choice, setting)
            if result is not None:
                rows[choice] = result
        report(setting, rows)


if __name__ == '__main__':
    main()
