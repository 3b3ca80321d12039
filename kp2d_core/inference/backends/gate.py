"""The accuracy gate: which backend/precision choices may be offered as defaults for a model.

A choice passes when, on the dev set at 240x320 top-300, it stays within 0.01 matching score,
0.02 Cor-3 and 0.05 px localisation error of eager fp32 PyTorch. ``evaluation/evaluate.py
--gate`` measures it and writes ``<weights>.gate.json`` beside the weights; the front-end reads
it when choosing a backend automatically.

Cor-3 counts pairs whose homography lands within 3 px, and some pairs' homographies jump by
many pixels with any small change of the descriptors: the bundled int8 model's descriptors
perturbed to cosine 0.9999 (six seeds) moved its Cor-3 by -0.024 to +0.010, matching score
and localisation error not at all (docs/performance.md). So where the per-pair results are
given, a Cor-3 difference beyond the tolerance fails a choice only when the pairs that change
sides are significantly one-sided (McNemar's exact test, :data:`SIGNIFICANCE`).
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
SIGNIFICANCE = 0.05  # two-sided, of the paired test on the pairs whose Cor-3 changes


def gate_path(weights: str | os.PathLike) -> Path:
    """``model.pt`` -> ``model.gate.json`` (beside the weights)."""
    return Path(weights).with_suffix('.gate.json')


def judge(
    reference: dict[str, float],
    candidate: dict[str, float],
    flips: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Per-metric differences and whether all stay within :data:`TOLERANCES`; with ``flips``
    (:func:`cor3_flips`), a Cor-3 difference beyond its tolerance counts only when the flips
    are significantly one-sided (:func:`paired_p_value` < :data:`SIGNIFICANCE`)."""
    deltas = {key: candidate[key] - reference[key] for key in TOLERANCES}
    within = {
        key: math.isfinite(delta) and abs(delta) <= TOLERANCES[key]
        for key, delta in deltas.items()
    }
    result: dict[str, Any] = {'deltas': deltas}
    if flips is not None:
        p_value = paired_p_value(*flips)
        result.update(cor3_flips=list(flips), cor3_p=p_value)
        if math.isfinite(deltas['cor3']) and p_value >= SIGNIFICANCE:
            within['cor3'] = True
    result['passed'] = all(within.values())
    return result


def cor3_flips(reference: list[dict], candidate: list[dict]) -> tuple[int, int]:
    """(pairs within 3 px only for the candidate, only for the reference) of two evaluations'
    per-pair results (``scene``, ``index``, ``cor3`` of each pair).

    Raises:
        ValueError: the two were not evaluated on the same pairs.
    """

    def outcomes(pairs: list[dict]) -> dict[tuple, bool]:
        return {(pair['scene'], pair['index']): bool(pair['cor3']) for pair in pairs}

    ours, theirs = outcomes(candidate), outcomes(reference)
    if ours.keys() != theirs.keys():
        raise ValueError('the candidate and the reference were evaluated on different pairs')
    up = sum(ours[key] and not theirs[key] for key in ours)
    down = sum(theirs[key] and not ours[key] for key in ours)
    return up, down


def paired_p_value(up: int, down: int) -> float:
    """Two-sided exact McNemar p-value of ``up`` against ``down`` discordant pairs (1 when
    there are none)."""
    total = up + down
    tail = sum(math.comb(total, k) for k in range(min(up, down) + 1)) / 2.0**total
    return min(1.0, 2.0 * tail)


def write_gate(
    path: Path,
    reference_label: str,
    summaries: dict[str, dict[str, float]],
    weights_sha256: str,
    dataset: str,
    pairs: dict[str, list[dict]] | None = None,
) -> dict[str, Any]:
    """Write the gate file for every evaluated choice (the reference passes trivially);
    ``pairs``, each choice's per-pair results, for the paired Cor-3 test."""
    reference = summaries[reference_label]
    results = {}
    for label, summary in summaries.items():
        metrics = {key: summary[key] for key in TOLERANCES}
        flips = cor3_flips(pairs[reference_label], pairs[label]) if pairs else None
        results[label] = {'metrics': metrics, **judge(reference, summary, flips)}
    content = {
        'weights_sha256': weights_sha256,
        'reference': reference_label,
        'tolerances': TOLERANCES,
        'significance': SIGNIFICANCE if pairs else None,
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
