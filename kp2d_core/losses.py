"""The KP2D training losses (paper Sec. 3), as pure functions of dense network outputs.

Notation: B images, N = Hc * Wc cells, one keypoint per cell. The *source* view is a
homographic warp of the *target* view; ``H`` (B, 3, 3) maps source pixels to target pixels.
Every threshold and weight is a :class:`LossConfig` field. Choices where the paper and the
reference code differ are documented on the fields and in the README.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from kp2d_core.geometry import in_image, normalize_coords, sample_map, warp_points
from kp2d_core.matching import descriptor_distances
from kp2d_core.networks import IONet, KeypointOutput

SQRT_FLOOR = 1e-8  # squared-distance floor: finite gradients for identical descriptors
REPEATABILITY_PX = 3.0  # diagnostic only: share of usable source cells re-detected this close


@dataclass(frozen=True)
class LossConfig:
    """Weights and thresholds of Eq. 1-6 (paper defaults unless noted)."""

    keypoint_weight: float = 1.0  # alpha, Eq. 6
    descriptor_weight: float = 2.0  # beta, Eq. 6
    score_weight: float = 1.0  # lambda, Eq. 6
    io_weight: float = 1.0  # weight of L_IO (1 in Eq. 6)
    use_descriptor_loss: bool = True  # False gives V3 (descriptors trained through IONet only)
    use_io_loss: bool = True  # V3 / V4
    epsilon_uv: float = 4.0  # px: association validity (L_loc, L_score) and IO inlier label
    descriptor_margin: float = 0.2  # triplet margin m
    relax_field_px: float = 8.0  # c: negatives must be this far (Chebyshev px) from the anchor
    min_descriptor_cells: int = 20  # images with fewer usable cells skip L_desc
    io_top_k: int = 300  # K cells per image fed to IONet
    io_selection: Literal['lowest', 'highest'] = 'lowest'  # paper: the K lowest-score cells
    io_min_inliers: int = 10  # L_IO is applied only when the batch has more inlier pairs
    negative_mining: Literal['hardest', 'semihard'] = 'hardest'  # see triplet_loss
    semihard_steps: int = 0  # the first optimiser steps mine semi-hard negatives (no collapse)
    score_loss: Literal['paper', 'bce'] = 'paper'  # Eq. 4, or repeatability_score_loss
    score_consistency_weight: float = 1.0  # weight of (s - s_hat)^2 inside Eq. 4

    def __post_init__(self) -> None:
        if self.io_selection not in ('lowest', 'highest'):
            raise ValueError(
                f"io_selection must be 'lowest' or 'highest', got {self.io_selection}"
            )
        if self.epsilon_uv <= 0 or self.relax_field_px < 0 or self.io_top_k < 2:
            raise ValueError('epsilon_uv must be > 0, relax_field_px >= 0 and io_top_k >= 2')


def flatten(out: KeypointOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense (B,1,Hc,Wc) scores and (B,2,Hc,Wc) coords -> (B, N) and (B, N, 2)."""
    b = out.score.shape[0]
    return out.score.reshape(b, -1), out.coords.reshape(b, 2, -1).transpose(1, 2)


def interior_cells(hc: int, wc: int, device: torch.device) -> torch.Tensor:
    """(N,) bool: True for cells not on the outermost ring (whose score is zeroed)."""
    mask = torch.zeros(hc, wc, dtype=torch.bool, device=device)
    mask[1:-1, 1:-1] = True
    return mask.reshape(-1)


def associate(warped: torch.Tensor, target_xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest target keypoint of every warped source keypoint (Sec. 3.1).

    Args:
        warped: (B, N, 2) source keypoints warped into the target image (p*).
        target_xy: (B, M, 2) target keypoints.

    Returns:
        distance (B, N) to the nearest target keypoint and its index (B, N).
    """
    dist = torch.cdist(warped, target_xy, compute_mode='donot_use_mm_for_euclid_dist')
    return dist.min(dim=2)


def location_loss(distance: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Eq. 1: mean distance between warped source and associated target keypoints.

    Args:
        distance: (B, N) association distances.
        valid: (B, N) pairs to use (associated within epsilon_uv, interior, in view).

    Returns:
        Scalar; 0 (with a graph) when no pair is valid.
    """
    return _masked_mean(distance, valid)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def score_loss(
    score_s: torch.Tensor,
    score_t_assoc: torch.Tensor,
    distance: torch.Tensor,
    valid: torch.Tensor,
    consistency_weight: float = 1.0,
) -> torch.Tensor:
    """Eq. 4: ``(s + s_hat) / 2 * (d - mean d) + w * (s - s_hat)^2`` over valid pairs.

    Scores of pairs that land closer than average are pushed up, farther ones down, so a
    high score means a repeatable keypoint.

    Args:
        score_s: (B, N) source scores.
        score_t_assoc: (B, N) scores of the associated target keypoints.
        distance: (B, N) association distances.
        valid: (B, N) pairs to use.
        consistency_weight: weight of the squared score difference.
    """
    mean_d = _masked_mean(distance, valid)
    term = 0.5 * (score_s + score_t_assoc) * (distance - mean_d)
    term = term + consistency_weight * (score_s - score_t_assoc) ** 2
    return _masked_mean(term, valid)


def repeatability_score_loss(
    score_s: torch.Tensor,
    score_t_assoc: torch.Tensor,
    distance: torch.Tensor,
    usable: torch.Tensor,
    valid: torch.Tensor,
    consistency_weight: float = 1.0,
) -> torch.Tensor:
    """Eq. 4's ranking idea as a classification: is this keypoint re-detected closer than average?

    The label of a source cell is 1 when its association distance is below the mean distance of
    the valid pairs (the pivot of Eq. 4) and 0 otherwise, including usable cells with no target
    keypoint within epsilon_uv. Binary cross-entropy has a gradient ``s - label`` in logit
    space, so scores cannot all drift into the flat ends of the sigmoid and stall there, which
    Eq. 4's ``(d - mean d)`` weighting allows.

    Args:
        score_s: (B, N) source scores.
        score_t_assoc: (B, N) scores of the associated target keypoints.
        distance: (B, N) association distances.
        usable: (B, N) interior source cells whose warp lands in view.
        valid: (B, N) usable cells associated within epsilon_uv.
        consistency_weight: weight of (s - s_hat)^2 over the valid pairs.
    """
    with torch.no_grad():
        label = (distance < _masked_mean(distance, valid)).float()
    source, target = _bce(score_s, label), _bce(score_t_assoc, label)
    consistency = (score_s - score_t_assoc) ** 2
    return 0.5 * (_masked_mean(source, usable) + _masked_mean(target, valid)) + (
        consistency_weight * _masked_mean(consistency, valid)
    )


def _bce(probability: torch.Tensor, label: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Element-wise binary cross-entropy whose gradient survives probabilities of 0 or 1."""
    return -(label * torch.log(probability + eps) + (1 - label) * torch.log(1 - probability + eps))


def triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    positions: torch.Tensor,
    margin: float,
    relax_px: float,
    semihard: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel triplet loss with hardest-negative mining for one image (Eq. 3).

    The negative of anchor i is the positive descriptor closest to it whose position lies
    outside the (Chebyshev) box of half-side ``relax_px`` around anchor i's position.

    Args:
        anchor: (M, D) unit source descriptors.
        positive: (M, D) unit target descriptors at the warped source positions.
        positions: (M, 2) warped source positions in target pixels.
        margin: triplet margin m.
        relax_px: relaxation c.

    Returns:
        loss (scalar) and detached diagnostics (3,): recall (fraction of anchors whose nearest
        positive is their own), mean positive distance and mean hardest-negative distance.
        A collapsed descriptor shows positive ~ negative distance and a loss at the margin.
    """
    dist = descriptor_distances(anchor, positive, SQRT_FLOOR)
    near = (positions[:, None, :] - positions[None, :, :]).abs().amax(dim=2) <= relax_px
    candidates = dist.masked_fill(near, float('inf'))
    negative = candidates.amin(dim=1)
    if semihard:
        farther = candidates.masked_fill(candidates <= dist.diagonal()[:, None], float('inf'))
        semi = farther.amin(dim=1)
        negative = torch.where(torch.isfinite(semi), semi, negative)
    has_negative = torch.isfinite(negative)
    hinge = F.relu(dist.diagonal() - negative + margin)
    loss = _masked_mean(torch.where(has_negative, hinge, 0.0), has_negative)
    own = torch.arange(len(dist), device=dist.device)
    with torch.no_grad():
        recall = (dist.argmin(dim=1) == own).float().mean()
        neg = _masked_mean(torch.where(has_negative, negative, 0.0), has_negative)
        stats = torch.stack([recall, dist.diagonal().mean(), neg])
    return loss, stats


def descriptor_loss(
    desc_s: torch.Tensor,
    desc_t: torch.Tensor,
    source_xy: torch.Tensor,
    warped: torch.Tensor,
    usable: torch.Tensor,
    image_hw: tuple[int, int],
    cfg: LossConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_desc averaged over the images with enough usable cells.

    Args:
        desc_s, desc_t: (B, D, Hd, Wd) dense raw descriptors of source and target.
        source_xy: (B, N, 2) source keypoints (sampling positions are not differentiated).
        warped: (B, N, 2) the same keypoints warped into the target.
        usable: (B, N) interior cells whose warp lands in view.
        image_hw: (H, W) of the input images.

    Returns:
        loss (scalar) and diagnostics (3,) (see :func:`triplet_loss`), zeros when no image
        qualifies.
    """
    losses, stats = [], []
    for b in range(desc_s.shape[0]):
        keep = usable[b]
        if int(keep.sum()) < cfg.min_descriptor_cells:
            continue
        anchor = sample_map(desc_s[b : b + 1], source_xy[b : b + 1, keep].detach(), *image_hw)
        positive = sample_map(desc_t[b : b + 1], warped[b : b + 1, keep].detach(), *image_hw)
        loss, image_stats = triplet_loss(
            F.normalize(anchor[0], dim=1),
            F.normalize(positive[0], dim=1),
            warped[b, keep].detach(),
            cfg.descriptor_margin,
            cfg.relax_field_px,
            cfg.negative_mining == 'semihard',
        )
        losses.append(loss)
        stats.append(image_stats)
    if not losses:
        return desc_s.sum() * 0.0, desc_s.new_zeros(3)
    return torch.stack(losses).mean(), torch.stack(stats).mean(dim=0)


def select_cells(
    scores: torch.Tensor, allowed: torch.Tensor, k: int, lowest: bool
) -> torch.Tensor:
    """(B, k) indices of the k lowest (or highest) scores among ``allowed`` (B, N) cells."""
    fill = float('inf') if lowest else float('-inf')
    masked = scores.detach().masked_fill(~allowed, fill)
    return masked.topk(k, dim=1, largest=not lowest).indices


def _gather_xy(xy: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return xy.gather(1, index[..., None].expand(-1, -1, 2))


def io_loss(
    ionet: IONet,
    pred_s: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    pred_t: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    H: torch.Tensor,
    usable_s: torch.Tensor,
    usable_t: torch.Tensor,
    image_hw: tuple[int, int],
    cfg: LossConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5: IONet classifies descriptor-matched pairs as inliers (+1) or outliers (-1).

    K cells per image are selected by score; each source point is paired with its nearest
    target point in descriptor space. Gradients reach IONet and, through its inputs (point
    positions and descriptor distances), the keypoints and descriptors.

    Args:
        ionet: the IONet.
        pred_s, pred_t: (scores (B, N), coords (B, N, 2), dense descriptors (B, D, Hd, Wd)).
        H: (B, 3, 3) source-to-target homographies (pixels).
        usable_s: (B, N) source cells that may be selected (interior, warp in view).
        usable_t: (B, N) target cells that may be selected (interior).
        image_hw: (H, W) of the input images.

    Returns:
        loss (scalar, 0 when the batch has too few inliers) and the number of inlier pairs.
    """
    k = min(cfg.io_top_k, int(usable_s.sum(1).min()), int(usable_t.sum(1).min()))
    if k < 2:
        return pred_s[0].sum() * 0.0, pred_s[0].new_zeros(())
    lowest = cfg.io_selection == 'lowest'
    src = _gather_xy(pred_s[1], select_cells(pred_s[0], usable_s, k, lowest))
    tgt = _gather_xy(pred_t[1], select_cells(pred_t[0], usable_t, k, lowest))
    desc_src = F.normalize(sample_map(pred_s[2], src, *image_hw), dim=2)
    desc_tgt = F.normalize(sample_map(pred_t[2], tgt, *image_hw), dim=2)
    nearest_dist, nearest = descriptor_distances(desc_src, desc_tgt, SQRT_FLOOR).min(dim=2)
    matched = _gather_xy(tgt, nearest)
    pairs = torch.cat(
        [
            normalize_coords(src, *image_hw),
            normalize_coords(matched, *image_hw),
            nearest_dist[..., None],
        ],
        dim=2,
    ).transpose(1, 2)
    with torch.no_grad():
        error = (warp_points(H, src) - matched).norm(dim=2)
        label = torch.where(error < cfg.epsilon_uv, 1.0, -1.0)
    inliers = (label > 0).sum()
    loss = 0.5 * ((ionet(pairs) - label) ** 2).mean()
    return loss * (inliers > cfg.io_min_inliers).float(), inliers.float()


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
    hc, wc = out_s.score.shape[-2:]
    image_hw = (hc * 8, wc * 8)
    score_s, xy_s = flatten(out_s)
    score_t, xy_t = flatten(out_t)
    warped = warp_points(H.to(xy_s.dtype), xy_s)
    interior = interior_cells(hc, wc, xy_s.device)[None]
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
        'repeatability': _masked_mean((distance <= REPEATABILITY_PX).float(), usable).detach(),
    }
