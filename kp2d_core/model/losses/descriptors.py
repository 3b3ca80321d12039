"""Descriptor terms: the per-pixel triplet loss (Eq. 3) and the IONet loss (Eq. 5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kp2d_core.geometry.coordinates import normalize_coords, sample_map, warp_points
from kp2d_core.model.descriptors import descriptor_distances
from kp2d_core.model.io_net import IONet
from kp2d_core.model.losses.config import SQRT_FLOOR, LossConfig
from kp2d_core.model.losses.keypoints import masked_mean


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
    loss = masked_mean(torch.where(has_negative, hinge, 0.0), has_negative)
    own = torch.arange(len(dist), device=dist.device)
    with torch.no_grad():
        recall = (dist.argmin(dim=1) == own).float().mean()
        neg = masked_mean(torch.where(has_negative, negative, 0.0), has_negative)
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
