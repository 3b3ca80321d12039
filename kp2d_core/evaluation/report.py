"""Tables, JSON and PNG plots of evaluation results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from kp2d_core.evaluation.harness import METRICS, PIPELINE_METRICS, Evaluation

HEADERS = ('Rep', 'Loc', 'Cor-1', 'Cor-3', 'Cor-5', 'MScore')
PIPELINE_HEADERS = ('node Cor-1', 'node Cor-3', 'node Cor-5')


def _fmt(value: float) -> str:
    return 'n/a' if math.isnan(value) else f'{value:.3f}'


def markdown_table(evaluations: list[Evaluation], split: str = 'all') -> str:
    """One row per method: Rep, Loc (px), Cor-1/3/5, MScore, then the node pipeline's Cor-N
    (project matcher + robust estimator on each image's top-k) on the split."""
    headers = HEADERS + PIPELINE_HEADERS
    lines = [
        '| Method | pairs | ' + ' | '.join(headers) + ' |',
        '|---|---|' + '---|' * len(headers),
    ]
    for ev in evaluations:
        s = ev.summary(split)
        cells = ' | '.join(_fmt(s[m]) for m in METRICS + PIPELINE_METRICS)
        lines.append(f'| {ev.method} | {int(s["pairs"])} | {cells} |')
    return '\n'.join(lines)


def write_json(evaluations: list[Evaluation], path: Path) -> None:
    path.write_text(json.dumps([ev.to_json() for ev in evaluations], indent=1, default=float))


def plot_metrics(evaluations: list[Evaluation], path: Path, title: str) -> None:
    """Bar chart: one panel per metric, one bar per method and split."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.2 * len(METRICS), 3.4))
    splits = ('all', 'i', 'v')
    width = 0.8 / len(splits)
    x = np.arange(len(evaluations))
    for ax, metric, header in zip(axes, METRICS, HEADERS):
        for j, split in enumerate(splits):
            values = [ev.summary(split)[metric] for ev in evaluations]
            ax.bar(x + (j - 1) * width, values, width, label=split)
        ax.set_xticks(x, [ev.method for ev in evaluations], rotation=30, ha='right')
        ax.set_title(header + (' (px, lower is better)' if metric == 'localization_error' else ''))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, title='split', loc='upper right', fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.96, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_corner_curve(evaluations: list[Evaluation], path: Path, title: str) -> None:
    """Share of pairs whose estimated homography has a corner error <= t, for t = 0..10 px."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    thresholds = np.linspace(0, 10, 101)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for ev in evaluations:
        errors = np.array([p['corner_error'] for p in ev.pairs], np.float64)
        ax.plot(thresholds, [(errors <= t).mean() for t in thresholds], label=ev.method)
    ax.set_xlabel('corner error threshold (px)')
    ax.set_ylabel('homography accuracy')
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
