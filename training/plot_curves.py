#!/usr/bin/env python3
"""Plot training curves of one or more runs side by side (from their metrics.jsonl).

    python training/plot_curves.py --run before=runs/a --run after=runs/b --steps 1500 \
        --out models/curves.png

Panels: total loss, descriptor recall, descriptor distances of positives and hardest
negatives (a collapse shows them together near 0), score spread (a saturation shows it near
0) and the location loss; each curve is a moving average over ``--smooth`` steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kp2d_core.training.state import read_metrics

PANELS = (
    ('total', 'total loss'),
    ('recall', 'descriptor recall'),
    (('desc_pos', 'desc_neg'), 'descriptor distance: positive (-), hardest negative (--)'),
    ('score_std', 'score spread (std over cells)'),
    ('loc', 'location loss (px)'),
)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode='valid')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--run', action='append', required=True, help='label=run folder')
    parser.add_argument('--steps', type=int, default=1500)
    parser.add_argument('--smooth', type=int, default=25)
    parser.add_argument('--out', type=Path, required=True)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for index, spec in enumerate(args.run):
        label, _, folder = spec.partition('=')
        color = f'C{index}'
        rows = [r for r in read_metrics(Path(folder) / 'metrics.jsonl') if r['step'] <= args.steps]
        steps = np.array([r['step'] for r in rows])
        for ax, (keys, title) in zip(axes, PANELS):
            for key, style in zip((keys,) if isinstance(keys, str) else keys, ('-', '--')):
                values = smooth(np.array([r.get(key, np.nan) for r in rows], float), args.smooth)
                x = steps[len(steps) - len(values) :]
                ax.plot(x, values, style, color=color, label=label if style == '-' else None)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel('step')
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
