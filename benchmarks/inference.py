#!/usr/bin/env python3
"""Inference speed: KP2D network alone and extract() vs OpenCV ORB and SIFT, in one run.

Prints ms/frame and FPS per resolution, and each method's time as a ratio to ORB measured in
the same run (ratios are comparable across machines; absolute times are not).

    python benchmarks/inference.py [--repeats 20] [--device cpu] [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import statistics
import time

import cv2
import numpy as np
import torch

from kp2d_core import ExtractorConfig, KeypointExtractor, KeypointNet, load_model
from kp2d_core.checkpoint import resolve_device
from kp2d_core.frontend import image_to_tensor
from kp2d_core.geometry import normalize_image
from kp2d_core.samples import synthetic_pair

SETTINGS = ((240, 320, 300), (480, 640, 1000))  # (H, W, top-k) of the KP2D protocol


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


def methods(model: KeypointNet, image: np.ndarray, top_k: int) -> dict[str, Callable[[], object]]:
    device = next(model.parameters()).device
    extractor = KeypointExtractor(model, ExtractorConfig(top_k=top_k))
    net_input = normalize_image(image_to_tensor(image).to(device))
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    orb = cv2.ORB_create(nfeatures=top_k)
    sift = cv2.SIFT_create(nfeatures=top_k)

    @torch.no_grad()
    def network() -> object:
        return model(net_input)

    return {
        'KP2D network': network,
        'KP2D extract()': lambda: extractor.extract(image),
        'ORB': lambda: orb.detectAndCompute(gray, None),
        'SIFT': lambda: sift.detectAndCompute(gray, None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description='KP2D inference benchmark')
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--device', default='auto')
    parser.add_argument('--checkpoint', default=None, help='default: random init (same speed)')
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.checkpoint:
        model = load_model(args.checkpoint, device)
    else:
        torch.manual_seed(0)
        model = KeypointNet().eval().to(device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    print(
        f'device: {device}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads; '
        f'OpenCV {cv2.__version__}, {cv2.getNumThreads()} threads; {args.repeats} repeats'
    )
    print(
        f'{"resolution":>10} {"method":>15} {"ms/frame":>9} {"p90 ms":>7} {"FPS":>7} {"x ORB":>7}'
    )
    for height, width, top_k in SETTINGS:
        image = synthetic_pair((height, width))[0]
        results = {
            name: time_ms(fn, args.repeats, sync)
            for name, fn in methods(model, image, top_k).items()
        }
        orb = statistics.median(results['ORB'])
        for name, samples in results.items():
            med = statistics.median(samples)
            p90 = float(np.percentile(samples, 90))
            print(
                f'{height}x{width:<4} {name:>15} {med:9.2f} {p90:7.2f} {1e3 / med:7.1f} '
                f'{med / orb:7.2f}'
            )


if __name__ == '__main__':
    main()
