"""All KP2D training losses for a batch (paper Sec. 3), as pure functions of dense outputs.

Notation: B images, N = Hc * Wc cells, one keypoint per cell. The *source* view is a
homographic warp of the *target* view; ``H`` (B, 3, 3) maps source pixels to target pixels.
"""

from __future__ import annotations

import torch

from kp2d_core.checks import check_shape
from kp2d_core.geometry.coordinates import in_image, interior_cells, warp_points
from kp2d_core.model.io_net import IONet
from kp2d_core.model.keypoint_net import KeypointOutput
from kp2d_core.model.losses.config import REPEATABILITY_PX, LossConfig
from kp2d_core.model.losses.descriptors import descriptor_loss, io_loss
from kp2d_core.model.losses.keypoints import (
    associate,
    flatten,
    location_loss,
    masked_mean,
    repeatability_score_loss,
    score_loss,
)


def kp2d_losses(
    out_s: KeypointOutput,
    out_t: KeypointOutput,
    H: torch.Tensor,
    cfg: LossConfig,
    ionet: IONet | None = None,
) -> dict[str, torch.Tensor]:
    """All KP2D losses for a batch of (source, target) predictions.

    Args:
        out_s, out_t: KeypointNet outputs for source and target images (B, C, H, W).
        H: (B, 3, 3) homographies mapping source pixels to target pixels.
        cfg: weights and thresholds.
        ionet: required when ``cfg.use_io_loss``.

    Returns:
        Dict of scalars: 'total' (differentiable), 'loc', 'desc', 'score', 'io' and the
        diagnostics 'recall', 'desc_pos', 'desc_neg' (descriptor distances of positives and
        hardest negatives), 'score_mean', 'score_std' (interior source cells), 'io_inliers',
        'valid_pairs', 'repeatability'.
    """
    batch = check_shape(out_s.score, 'B,1,Hc,Wc', 'out_s.score')
    check_shape(out_t.score, f'{batch["B"]},1,{batch["Hc"]},{batch["Wc"]}', 'out_t.score')
    check_shape(H, f'{batch["B"]},3,3', 'H')
    hc, wc = out_s.score.shape[-2:]
    image_hw = (hc * 8, wc * 8)
    score_s, xy_s = flatten(out_s)
    score_t, xy_t = flatten(out_t)
    warped = warp_points(H.to(xy_s.dtype), xy_s)
    interior = interior_cells(hc, wc, xy_s.device).reshape(1, -1)
    usable = interior & in_image(warped, *image_hw)
    distance, index = associate(warped, xy_t)
    valid = usable & (distance < cfg.epsilon_uv)
    score_t_assoc = score_t.gather(1, index)
    terms = {'loc': location_loss(distance, valid)}
    if cfg.score_loss == 'bce':
        terms['score'] = repeatability_score_loss(
            score_s, score_t_assoc, distance, usable, valid, cfg.score_consistency_weight
        )
    else:
        terms['score'] = score_loss(
            score_s, score_t_assoc, distance, valid, cfg.score_consistency_weight
        )
    terms['desc'], desc_stats = descriptor_loss(
        out_s.descriptors, out_t.descriptors, xy_s, warped, usable, image_hw, cfg
    )
    terms['io'], inliers = xy_s.sum() * 0.0, xy_s.new_zeros(())
    if cfg.use_io_loss:
        if ionet is None:
            raise ValueError('use_io_loss needs an IONet')
        pred_s = (score_s, xy_s, out_s.descriptors)
        pred_t = (score_t, xy_t, out_t.descriptors)
        usable_t = interior.expand_as(usable)
        terms['io'], inliers = io_loss(ionet, pred_s, pred_t, H, usable, usable_t, image_hw, cfg)
    total = cfg.keypoint_weight * terms['loc'] + cfg.score_weight * terms['score']
    total = total + cfg.io_weight * terms['io']
    if cfg.use_descriptor_loss:
        total = total + cfg.descriptor_weight * terms['desc']
    return {
        'total': total,
        **terms,
        'recall': desc_stats[0],
        'desc_pos': desc_stats[1],
        'desc_neg': desc_stats[2],
        'score_mean': score_s[interior.expand_as(score_s)].detach().mean(),
        'score_std': score_s[interior.expand_as(score_s)].detach().std(),
        'io_inliers': inliers.detach(),
        'valid_pairs': valid.sum().float(),
        'repeatability': masked_mean((distance <= REPEATABILITY_PX).float(), usable).detach(),
    }
