#!/usr/bin/env python3
"""Evaluate KP2D and OpenCV baselines with the KP2D HPatches protocol.

    python evaluation/evaluate.py --checkpoint model.pt --hpatches /data/hpatches \
        --baselines orb,sift,akaze --out outputs/eval
    python evaluation/evaluate.py --default-model   # on the dev set (built if absent)

Settings default to the protocol's 240x320 / top-300 and 480x640 / top-1000, no NMS. Writes
``report.md`` (tables per setting and split), ``results_<H>x<W>.json`` (per-pair results) and
PNG plots (metric bars, homography accuracy against the corner-error threshold).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
import time

import torch

from kp2d_core import KeypointNet, load_model
from kp2d_core.checkpoint import default_weights_path, resolve_device
from kp2d_core.evaluation.devset import build_devset, holdout_photos
from kp2d_core.evaluation.extractors import kp2d_extractor, opencv_extractor
from kp2d_core.evaluation.harness import Evaluation, evaluate
from kp2d_core.evaluation.report import (
    markdown_table,
    plot_corner_curve,
    plot_metrics,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = ROOT / 'training' / 'devset_holdout.txt'
DEFAULT_POOL = ROOT / 'data' / 'train_pool'  # training/build_train_pool.py (make data)
DEFAULT_DEVSET = ROOT / 'data' / 'devset'


def parse_settings(text: str) -> list[tuple[tuple[int, int], int]]:
    """'240x320:300,480x640:1000' -> [((240, 320), 300), ((480, 640), 1000)]."""
    settings = []
    for item in text.split(','):
        size, _, k = item.partition(':')
        h, _, w = size.partition('x')
        settings.append(((int(h), int(w)), int(k)))
    return settings


def models(args: argparse.Namespace) -> dict[str, KeypointNet]:
    device = resolve_device(args.device)
    found: dict[str, KeypointNet] = {}
    for path in args.checkpoint or []:
        found[f'KP2D ({Path(path).stem})'] = load_model(path, device)
    if args.default_model:
        found['KP2D (bundled)'] = load_model(default_weights_path(), device)
    if args.random_init:
        torch.manual_seed(args.seed)
        found['KP2D (random init)'] = KeypointNet().eval().to(device)
    return found


def dataset_root(args: argparse.Namespace) -> Path:
    if args.hpatches is not None:
        return args.hpatches
    root = DEFAULT_DEVSET
    if not root.is_dir():
        logging.info('building the dev set in %s', root)
        build_devset(holdout_photos(args.pool, HOLDOUT), root)
    return root


def dataset_label(root: Path) -> str:
    """How the report names the data set: the dev set, or the folder name (no machine path)."""
    if root.resolve() == DEFAULT_DEVSET.resolve():
        return 'the dev set (`evaluation/build_devset.py`)'
    return f'`{root.name}`'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--checkpoint', action='append', help='model checkpoint (repeatable)')
    parser.add_argument('--default-model', action='store_true', help='the bundled weights')
    parser.add_argument('--random-init', action='store_true', help='a seeded random network')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--baselines', default='orb,sift,akaze', help="comma list or ''")
    parser.add_argument('--hpatches', type=Path, help='HPatches-layout folder (default: dev set)')
    parser.add_argument('--pool', type=Path, default=DEFAULT_POOL, help='to build the dev set')
    parser.add_argument('--settings', default='240x320:300,480x640:1000')
    parser.add_argument('--split', default='all', choices=('all', 'i', 'v'))
    parser.add_argument('--device', default='auto')
    parser.add_argument('--out', type=Path, default=Path('outputs/eval'))
    parser.add_argument('--no-progress', action='store_true')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    extractors = {name: kp2d_extractor(m) for name, m in models(args).items()}
    for name in filter(None, args.baselines.split(',')):
        extractors[name.upper()] = opencv_extractor(name.strip().lower())
    if not extractors:
        parser.error('nothing to evaluate: give --checkpoint, --random-init or --baselines')
    root = dataset_root(args)
    args.out.mkdir(parents=True, exist_ok=True)
    report = [f'# Evaluation on {dataset_label(root)}\n']
    for size, k in parse_settings(args.settings):
        evaluations = run_setting(extractors, root, size, k, args)
        report += section(evaluations, size, k, args.out)
        (args.out / 'report.md').write_text('\n'.join(report) + '\n')  # after every setting
    print(f'\nwrote {args.out}/report.md, results_*.json and *.png')


def run_setting(extractors, root, size, k, args) -> list[Evaluation]:
    evaluations = []
    for name, extractor in extractors.items():
        start = time.perf_counter()
        ev = evaluate(name, extractor, root, size, k, args.split, not args.no_progress)
        logging.info(
            '%s at %dx%d: %d pairs in %.1f s',
            name,
            *size,
            len(ev.pairs),
            time.perf_counter() - start,
        )
        evaluations.append(ev)
    return evaluations


def section(evaluations: list[Evaluation], size, k, out: Path) -> list[str]:
    tag = f'{size[0]}x{size[1]}'
    write_json(evaluations, out / f'results_{tag}.json')
    title = f'{tag}, top-{k}'
    plot_metrics(evaluations, out / f'metrics_{tag}.png', title)
    plot_corner_curve(evaluations, out / f'cor_curve_{tag}.png', title)
    lines = []
    for split, label in (('all', 'all pairs'), ('i', 'illumination'), ('v', 'viewpoint')):
        table = markdown_table(evaluations, split)
        lines += [f'\n## {title}: {label}\n', table]
        print(f'\n{title}: {label}\n{table}')
    skipped = sorted({s for ev in evaluations for s in ev.skipped})
    if skipped:
        lines += ['\nSkipped pairs:\n'] + [f'- {s}' for s in skipped]
    return lines


if __name__ == '__main__':
    main()
