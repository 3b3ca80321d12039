#!/usr/bin/env python3
"""Evaluate KP2D (any backend and precision) and OpenCV baselines with the KP2D protocol.

    python evaluation/evaluate.py --default-model                 # dev set, all baselines
    python evaluation/evaluate.py --checkpoint model.pt --hpatches /data/hpatches
    python evaluation/evaluate.py --default-model --baselines '' --settings 240x320:300 \\
        --backends torch:fp32,torch:bf16,onnxruntime:fp32,onnxruntime:int8 --gate

Settings default to the protocol's 240x320 / top-300 and 480x640 / top-1000, no NMS. Writes
``report.md`` (tables per setting and split, with the node pipeline's Cor-N beside the
protocol's), ``results_<H>x<W>.json`` (per-pair results) and PNG plots. ``--gate`` compares
every backend with eager fp32 at 240x320 / top-300 and writes ``<weights>.gate.json``, which
the automatic backend choice reads.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
import time

import torch

from kp2d_core import KeypointNet, load_model
from kp2d_core.evaluation.devset import build_devset, holdout_photos
from kp2d_core.evaluation.extractors import Extractor, kp2d_extractor, opencv_extractor
from kp2d_core.evaluation.harness import Evaluation, evaluate
from kp2d_core.evaluation.report import markdown_table, plot_corner_curve, plot_metrics, write_json
from kp2d_core.inference.backends import create_backend, label, time_backend
from kp2d_core.inference.backends.base import REFERENCE
from kp2d_core.inference.backends.gate import SETTING, gate_path, write_gate
from kp2d_core.model.checkpoint import resolve_device
from kp2d_core.model.files import bundled_weights_path, file_sha256

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


def weights_files(args: argparse.Namespace) -> dict[str, Path]:
    paths = [Path(p) for p in args.checkpoint or []]
    stems = [p.stem for p in paths]
    found = {
        f'KP2D ({p.stem if stems.count(p.stem) == 1 else f"{p.parent.name}/{p.stem}"})': p
        for p in paths
    }
    for variant in args.default_model or []:
        name = 'KP2D (bundled)' if variant == 'default' else f'KP2D (bundled {variant})'
        found[name] = bundled_weights_path(variant)
    return found


def kp2d_methods(args: argparse.Namespace) -> tuple[dict[str, Extractor], dict[str, object]]:
    """Extractors per (model, backend) and the backends themselves (for timing)."""
    device = resolve_device(args.device)
    extractors: dict[str, Extractor] = {}
    backends: dict[str, object] = {}
    for name, path in weights_files(args).items():
        model, sha = load_model(path, device), file_sha256(path)
        for choice in args.backends.split(','):
            backend, _, precision = choice.strip().partition(':')
            runner = create_backend(backend, precision or 'fp32', model, path, sha)
            method = name if choice.strip() == 'torch:fp32' else f'{name} [{label(runner)}]'
            extractors[method], backends[method] = kp2d_extractor(runner), runner
    if args.random_init:
        torch.manual_seed(args.seed)
        extractors['KP2D (random init)'] = kp2d_extractor(KeypointNet().eval().to(device))
    return extractors, backends


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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--checkpoint', action='append', help='model checkpoint (repeatable)')
    parser.add_argument(
        '--default-model',
        nargs='?',
        const=['default'],
        type=lambda text: text.split(','),
        help="the bundled weights: 'default' (no value), 'light', or 'default,light'",
    )
    parser.add_argument('--random-init', action='store_true', help='a seeded random network')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--backends', default='torch:fp32', help='comma list of backend:precision')
    parser.add_argument('--gate', action='store_true', help='write <weights>.gate.json')
    parser.add_argument('--baselines', default='orb,sift,akaze', help="comma list or ''")
    parser.add_argument('--hpatches', type=Path, help='HPatches-layout folder (default: dev set)')
    parser.add_argument('--pool', type=Path, default=DEFAULT_POOL, help='to build the dev set')
    parser.add_argument('--settings', default='240x320:300,480x640:1000')
    parser.add_argument('--split', default='all', choices=('all', 'i', 'v'))
    parser.add_argument('--device', default='auto')
    parser.add_argument('--out', type=Path, default=Path('outputs/eval'))
    parser.add_argument('--no-progress', action='store_true')
    args = parser.parse_args()
    if args.gate and (len(weights_files(args)) != 1 or 'torch:fp32' not in args.backends):
        parser.error('--gate needs exactly one model and torch:fp32 among --backends')
    return args


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    extractors, backends = kp2d_methods(args)
    for name in filter(None, args.baselines.split(',')):
        extractors[name.upper()] = opencv_extractor(name.strip().lower())
    if not extractors:
        raise SystemExit('nothing to evaluate: give --checkpoint, --default-model or --baselines')
    root = dataset_root(args)
    args.out.mkdir(parents=True, exist_ok=True)
    report = [f'# Evaluation on {dataset_label(root)}\n']
    for size, k in parse_settings(args.settings):
        evaluations = run_setting(extractors, root, size, k, args)
        report += section(evaluations, size, k, args.out)
        if args.gate and list(size) == SETTING['size'] and k == SETTING['top_k']:
            report += gate_section(evaluations, backends, args, root)
        (args.out / 'report.md').write_text('\n'.join(report) + '\n')  # after every setting
    print(f'\nwrote {args.out}/report.md, results_*.json and *.png')


def run_setting(extractors, root, size, k, args) -> list[Evaluation]:
    evaluations = []
    for name, extractor in extractors.items():
        start = time.perf_counter()
        ev = evaluate(name, extractor, root, size, k, args.split, not args.no_progress)
        elapsed = time.perf_counter() - start
        logging.info('%s at %dx%d: %d pairs in %.1f s', name, *size, len(ev.pairs), elapsed)
        evaluations.append(ev)
    return evaluations


def gate_section(evaluations, backends, args, root) -> list[str]:
    """Judge every backend against eager fp32, time each, write the gate file."""
    (weights,) = weights_files(args).values()
    summaries, pairs, lines = {}, {}, []
    for ev in evaluations:
        if ev.method in backends:
            summaries[label(backends[ev.method])] = ev.summary('all')
            pairs[label(backends[ev.method])] = ev.pairs
    reference, sha = ':'.join(REFERENCE), file_sha256(weights)
    content = write_gate(gate_path(weights), reference, summaries, sha, dataset_label(root), pairs)
    lines += [
        '\n## Accuracy gate (240x320, top-300, all pairs) and network speed\n',
        '| backend | MScore | Cor-3 | Cor-3 pairs up / down (p) | Loc (px) | passes | ms / image '
        '| speed-up |',
        '|---|---|---|---|---|---|---|---|',
    ]
    reference_ms = None
    for backend in backends.values():
        result = content['results'][label(backend)]
        ms = 1e3 * time_backend(backend, tuple(SETTING['size']), runs=15)
        reference_ms = reference_ms or ms  # torch:fp32 comes first in --backends
        m, (up, down) = result['metrics'], result['cor3_flips']
        lines.append(
            f'| {label(backend)} | {m["matching_score"]:.3f} | {m["cor3"]:.3f} | '
            f'{up} / {down} ({result["cor3_p"]:.2f}) | '
            f'{m["localization_error"]:.3f} | {"yes" if result["passed"] else "no"} | '
            f'{ms:.1f} | {reference_ms / ms:.2f}x |'
        )
    print('\n'.join(lines))
    return lines


def section(evaluations: list[Evaluation], size, k, out: Path) -> list[str]:
    tag = f'{size[0]}x{size[1]}'
    write_json(evaluations, out / f'results_{tag}.json')
    title = f'{tag}, top-{k}'
    plot_metrics(evaluations, out / f'metrics_{tag}.png', title)
    plot_corner_curve(evaluations, out / f'cor_curve_{tag}.png', title)
    lines = []
    for split, name in (('all', 'all pairs'), ('i', 'illumination'), ('v', 'viewpoint')):
        table = markdown_table(evaluations, split)
        lines += [f'\n## {title}: {name}\n', table]
        print(f'\n{title}: {name}\n{table}')
    skipped = sorted({s for ev in evaluations for s in ev.skipped})
    if skipped:
        lines += ['\nSkipped pairs:\n'] + [f'- {s}' for s in skipped]
    return lines


if __name__ == '__main__':
    main()
