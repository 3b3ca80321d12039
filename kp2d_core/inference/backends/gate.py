"""The accuracy gate: which backend/precision choices may be offered as defaults for a model.

A choice passes when, on the dev set at 240x320 top-300, it stays within 0.01 matching score,
0.02 Cor-3 and 0.05 px localisation error of eager fp32 PyTorch. ``evaluation/evaluate.py
--gate`` measures it and writes ``<weights>.gate.json`` beside the weights; the front-end reads
it when choosing a backend automatically.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)
TOLERANCES = {'matching_score': 0.01, 'cor3': 0.02, 'localization_error': 0.05}
SETTING = {'size': [240, 320], 'top_k': 300}


def gate_path(weights: str | os.PathLike) -> Path:
    """``model.pt`` -> ``model.gate.json`` (beside the weights)."""
    return Path(weights).with_suffix('.gate.json')


def judge(reference: dict[str, float], candidate: dict[str, float]) -> dict[str, Any]:
    """Per-metric differences and whether all stay within :data:`TOLERANCES`."""
    deltas = {key: candidate[key] - reference[key] for key in TOLERANCES}
    passed = all(
        math.isfinite(delta) and abs(delta) <= tol
        for delta, tol in zip(deltas.values(), TOLERANCES.values())
    )
    return {'deltas': deltas, 'passed': passed}


def write_gate(
    path: Path,
    reference_label: str,
    summaries: dict[str, dict[str, float]],
    weights_sha256: str,
    dataset: str,
) -> dict[str, Any]:
    """Write the gate file for every evaluated choice (the reference passes trivially)."""
    reference = summaries[reference_label]
    results = {}
    for label, summary in summaries.items():
        metrics = {key: summary[key] for key in TOLERANCES}
        results[label] = {'metrics': metrics, **judge(reference, summary)}
    content = {
        'weights_sha256': weights_sha256,
        'reference': reference_label,
        'tolerances': TOLERANCES,
        'setting': SETTING,
        'dataset': dataset,
        'results': results,
    }
    path.write_text(json.dumps(content, indent=1) + '\n')
    return content


def passing_choices(weights: str | os.PathLike, weights_sha256: str) -> set[str]:
    """Labels ('onnxruntime:int8', ...) that passed the gate for exactly these weights."""
    path = gate_path(weights)
    if not path.is_file():
        return set()
    try:
        content = json.loads(path.read_text())
        if content.get('weights_sha256') != weights_sha256:
            LOG.warning('%s belongs to other weights; ignoring it', path)
            return set()
        return {label for label, r in content['results'].items() if r.get('passed') is True}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        LOG.warning('cannot read %s (%s); only fp32 is offered', path, exc)
        return set()
