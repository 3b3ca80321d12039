#!/usr/bin/env python3
"""Export a checkpoint to ONNX (fp32) and, with --int8, a statically quantised int8 model.

    python training/export_onnx.py                          # the bundled weights, int8 beside
    python training/export_onnx.py --checkpoint runs/x/model.pt --fp32 --int8 \\
        --calibration data/train_pool
    python training/export_onnx.py --reference-only         # see below

Writes ``<weights>.fp32.onnx`` and/or ``<weights>.int8.onnx`` beside the weights (or in
``--out-dir``), which the 'onnxruntime' backend picks up. int8 calibration uses training
photos (never the dev-set hold-out), cover-cropped to 240x320. Check the result with
``evaluation/evaluate.py --gate`` before relying on it. Every model records the PyTorch
network's outputs on a probe image, which the backend checks it against before use;
``--reference-only`` adds them to models beside the weights that were exported without.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
import tempfile

import numpy as np

from kp2d_core.data.dataset import split_files
from kp2d_core.images import cover_crop, image_to_array, normalize_image, read_image
from kp2d_core.inference.export import export_onnx, quantize_int8, store_reference
from kp2d_core.model.checkpoint import load_model
from kp2d_core.model.files import default_weights_path, file_sha256

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION_HW = (240, 320)


def calibration_images(pool: Path, count: int, seed: int, use_color: bool = True):
    """Normalised (1, 3|1, 240, 320) training photos, a seeded sample of ``count`` (grey for
    a network without colour input)."""
    files, _ = split_files(pool, str(ROOT / 'training' / 'devset_holdout.txt'), 0, seed)
    chosen = np.random.default_rng(seed).choice(len(files), min(count, len(files)), False)
    for index in sorted(chosen):
        image = cover_crop(read_image(files[index]), CALIBRATION_HW)
        yield normalize_image(image_to_array(image), use_color)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--checkpoint', type=Path, default=None, help='default: bundled weights')
    parser.add_argument('--out-dir', type=Path, default=None, help='default: beside the weights')
    parser.add_argument('--fp32', action='store_true', help='also keep the fp32 model')
    parser.add_argument('--int8', action='store_true', help='write the int8 model')
    parser.add_argument('--calibration', type=Path, default=ROOT / 'data' / 'train_pool')
    parser.add_argument('--calibration-images', type=int, default=32)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--conv-at-keypoints',
        action='store_true',
        help="int8: leave the descriptor head's last convolution to the front-end",
    )
    parser.add_argument(
        '--reference-only',
        action='store_true',
        help='only record the reference outputs in the ONNX models beside the weights',
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    if not (args.fp32 or args.int8):
        args.int8 = True
    weights = args.checkpoint or default_weights_path()
    out_dir = args.out_dir or weights.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    sha = file_sha256(weights)
    model = load_model(weights)
    if args.reference_only:
        for path in sorted(weights.parent.glob(f'{weights.stem}.*.onnx')):
            print(f'reference recorded: {store_reference(model, path, sha)}')
        return
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = out_dir / f'{weights.stem}.fp32.onnx' if args.fp32 else Path(tmp) / 'model.onnx'
        export_onnx(model, fp32, sha)
        print(f'fp32: {fp32}' if args.fp32 else 'fp32 exported (temporary)')
        if args.int8:
            images = calibration_images(
                args.calibration, args.calibration_images, args.seed, model.cfg.use_color
            )
            int8 = quantize_int8(
                fp32,
                out_dir / f'{weights.stem}.int8.onnx',
                images,
                sha,
                conv_at_keypoints=args.conv_at_keypoints,
            )
            print(f'int8: {int8} ({int8.stat().st_size / 2**20:.1f} MiB)')


if __name__ == '__main__':
    main()
