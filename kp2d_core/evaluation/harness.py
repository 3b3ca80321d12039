"""Run any extractor over HPatches-layout pairs and summarise the KP2D metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kp2d_core.evaluation.extractors import Extractor, MethodFeatures
from kp2d_core.evaluation.hpatches import Pair, count_pairs, iter_pairs
from kp2d_core.evaluation.metrics import (
    homography_accuracy,
    matching_score,
    pipeline_accuracy,
    repeatability,
)

METRICS = ('repeatability', 'localization_error', 'cor1', 'cor3', 'cor5', 'matching_score')
PIPELINE_METRICS = ('pipe_cor1', 'pipe_cor3', 'pipe_cor5')


def evaluate_pair(f0: MethodFeatures, f1: MethodFeatures, pair: Pair, k: int) -> dict[str, Any]:
    """All metrics of one pair from its two extracted keypoint sets."""
    shape = pair.image0.shape[:2]
    det = (f0.keypoints, f0.scores, f1.keypoints, f1.scores, pair.H, shape, k)
    desc = (f0.keypoints, f0.descriptors, f0.scores, f1.keypoints, f1.descriptors, f1.scores)
    result: dict[str, Any] = {'scene': pair.scene, 'index': pair.index, 'split': pair.split}
    result.update(repeatability(*det))
    result.update(homography_accuracy(*desc, pair.H, shape, k, f0.norm))
    result['matching_score'] = matching_score(*desc, pair.H, shape, k, f0.norm)
    result.update(pipeline_accuracy(*desc, pair.H, shape, k, f0.norm))
    result['num_keypoints'] = [len(f0.keypoints), len(f1.keypoints)]
    return result


@dataclass
class Evaluation:
    """Per-pair results of one method at one setting, and the pairs that could not be read."""

    method: str
    size: tuple[int, int]
    top_k: int
    pairs: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self, split: str = 'all') -> dict[str, float]:
        """Mean of each metric over the split's pairs (localisation error over defined ones)."""
        rows = [p for p in self.pairs if split == 'all' or p['split'] == split]
        out: dict[str, float] = {'pairs': float(len(rows))}
        for key in METRICS + PIPELINE_METRICS:
            values = np.array([r[key] for r in rows], np.float64)
            out[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float('nan')
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            'method': self.method,
            'size': list(self.size),
            'top_k': self.top_k,
            'summary': {s: self.summary(s) for s in ('all', 'i', 'v')},
            'skipped': self.skipped,
            'pairs': self.pairs,
        }


def evaluate(
    method: str,
    extractor: Extractor,
    root: str | Path,
    size: tuple[int, int],
    top_k: int,
    split: str = 'all',
    progress: bool = True,
) -> Evaluation:
    """Evaluate ``extractor`` on every (1, k) pair under ``root`` at ``size`` (H, W)."""
    result = Evaluation(method, size, top_k)
    bar = _progress(count_pairs(root, split), f'{method} {size[0]}x{size[1]}', progress)
    cache: tuple[str, MethodFeatures] | None = None  # image 1 is shared by a scene's 5 pairs
    for pair in iter_pairs(root, size, split, result.skipped):
        if cache is None or cache[0] != pair.scene:
            cache = (pair.scene, extractor(pair.image0))
        result.pairs.append(evaluate_pair(cache[1], extractor(pair.image1), pair, top_k))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return result


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit='pair', leave=False)
