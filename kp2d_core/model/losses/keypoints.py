"""Keypoint terms: association of warped source keypoints to target keypoints (Sec. 3.1),
the location loss (Eq. 1) and the score loss (Eq. 4, or its classification form)."""

from __future__ import annotations

import torch

from kp2d_core.model.keypoint_net import KeypointOutput


def flatten(out: KeypointOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense (B,1,Hc,Wc) scores and (B,2,Hc,Wc) coords -> (B, N) and (B, N, 2)."""
    b = out.score.shape[0]
    return out.score.reshape(b, -1), out.coords.reshape(b, 2, -1).transpose(1, 2)


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
    return masked_mean(distance, valid)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
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
    mean_d = masked_mean(distance, valid)
    term = 0.5 * (score_s + score_t_assoc) * (distance - mean_d)
    term = term + consistency_weight * (score_s - score_t_assoc) ** 2
    return masked_mean(term, valid)


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
        label = (distance < masked_mean(distance, valid)).float()
    source, target = _bce(score_s, label), _bce(score_t_assoc, label)
    consistency = (score_s - score_t_assoc) ** 2
    return 0.5 * (masked_mean(source, usable) + masked_mean(target, valid)) + (
        consistency_weight * masked_mean(consistency, valid)
    )


def _bce(probability: torch.Tensor, label: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Element-wise binary cross-entropy whose gradient survives probabilities of 0 or 1."""
    return -(label * torch.log(probability + eps) + (1 - label) * torch.log(1 - probability + eps))
