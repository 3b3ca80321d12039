#!/usr/bin/env python3
"""Several renders of the same scenes in one table: the medians across renders.

    python evaluation/build_sequences.py --out hard_s1 --seed 1 --scenes poster_fast,...
    python evaluation/evaluate_vo.py hard_s1/* --out outputs/vo_s1 --front-ends kp2d_hybrid,klt
    python evaluation/compare_renders.py outputs/vo_s0/vo_results.json \
        outputs/vo_s1/vo_results.json outputs/vo_s2/vo_results.json [--out renders.md]

A render's seed changes the photos, the noise and the gains of a scene, not its trajectory.
One render of a hard scene decides little: on fast motion KLT's RPE rotation was 0.75, 2.30
and 3.13 °/s on three renders. Each row is one sequence and front-end: the RPE rotation of
every render, then the median across renders of each figure (a render without the figure is
left out of its median; '—' where none has it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from kp2d_core.output_files import atomic_write_text, describe_os_error

COLUMNS = (  # key in vo_results.json, title, format
    ('rpe_rot_deg', 'RPE r (°/s)', '{:.3f}'),
    ('h_corner_err_px_median', 'H err (px)', '{:.3f}'),
    ('track_length_per_observation', 'track length per obs.', '{:.0f}'),
    ('detection_ratio', 'net', '{:.2f}'),
    ('wrong_id_per_1000', 'wrong ids / 1000', '{:.1f}'),
    ('reid_after_blackout', 're-id after blackout', '{:.2f}'),
    ('latency_ms_median', 'ms/frame', '{:.0f}'),
)
KEYS = ('sequence', 'front_end')


def read_results(path: Path) -> list[dict]:
    """The rows of one ``vo_results.json``; a file that is not one stops with its reason."""
    try:
        rows = json.loads(path.read_text(encoding='utf-8'))
    except OSError as exc:
        raise SystemExit(f'error: {path}: {describe_os_error(exc)}') from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SystemExit(f'error: {path}: not a vo_results.json file ({exc})') from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise SystemExit(f'error: {path}: not a vo_results.json file (a list of results)')
    for index, row in enumerate(rows):
        missing = [k for k in KEYS if not isinstance(row.get(k), str)]
        if missing:
            raise SystemExit(f'error: {path}: result {index} has no {", ".join(missing)}')
    return rows


def _median(values: list) -> float | None:
    present = [float(v) for v in values if v is not None]
    return float(np.median(present)) if present else None


def _cell(value: float | None, fmt: str) -> str:
    return '—' if value is None else fmt.format(value)


def renders_table(renders: list[list[dict]]) -> str:
    """Markdown: a row per sequence and front-end (in the order first seen) with the RPE
    rotation of each render and the medians across renders."""
    groups: dict[tuple[str, str], list[dict | None]] = {}
    for index, rows in enumerate(renders):
        for row in rows:
            group = groups.setdefault((row['sequence'], row['front_end']), [None] * len(renders))
            group[index] = row
    titles = ['sequence', 'front-end', 'RPE r per render', *(title for _, title, _ in COLUMNS)]
    lines = ['| ' + ' | '.join(titles) + ' |', '|' + '---|' * len(titles)]
    for (sequence, front_end), rows in groups.items():
        each = ' / '.join(
            _cell(None if row is None else row.get('rpe_rot_deg'), '{:.3f}') for row in rows
        )
        cells = [
            _cell(_median([row.get(key) for row in rows if row is not None]), fmt)
            for key, _, fmt in COLUMNS
        ]
        lines.append('| ' + ' | '.join([sequence, front_end, each, *cells]) + ' |')
    return '\n'.join(lines) + '\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('results', nargs='+', type=Path, help='vo_results.json, one per render')
    parser.add_argument('--out', type=Path, default=None, help='write the table here too')
    args = parser.parse_args()
    table = renders_table([read_results(path) for path in args.results])
    print(table, end='')
    if args.out is not None:
        try:
            atomic_write_text(args.out, table)
        except OSError as exc:
            raise SystemExit(f'error: cannot write {args.out}: {describe_os_error(exc)}') from None


if __name__ == '__main__':
    main()
