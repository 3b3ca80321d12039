"""Distillation: a student network learns a teacher's dense outputs on the same images.

The teacher (the bundled model) runs on every training image of the batch, source and target
alike, so the student is taught on the same warped and photometrically augmented views that
the KP2D losses see. Three terms, each over the interior cells of every image:

* score: binary cross-entropy of the student's score against the teacher's (soft labels);
* location: the distance in pixels between the two keypoints of a cell (Huber, 1 px), weighted
  by the teacher's score, so the cells the teacher would select count most;
* descriptors: one minus the cosine of the student's and the teacher's descriptors sampled at
  the teacher's keypoints, with the same weights. The student's descriptor map may have
  another resolution than the teacher's (H/8 against H/4); both are sampled at pixels.

The weights of the terms are in :class:`DistillConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kp2d_core.checks import check_shape
from kp2d_core.geometry.coordinates import interior_cells, sample_map
from kp2d_core.model.keypoint_net import KeypointOutput

LOCATION_HUBER_PX = 1.0


@dataclass(frozen=True)
class DistillConfig:
    """Where the teacher comes from and how much each distillation term weighs.

    ``teacher`` is a checkpoint path, 'default' for the bundled model, or '' for no
    distillation (plain KP2D training).
    """

    teacher: str = ''
    score_weight: float = 1.0
    location_weight: float = 1.0
    descriptor_weight: float = 2.0

    def __post_init__(self) -> None:
        weights = (self.score_weight, self.location_weight, self.descriptor_weight)
        if not all(w >= 0 for w in weights):  # NaN fails too
            raise ValueError(f'distillation weights must be >= 0, got {weights}')


def teacher_weights(score: torch.Tensor) -> torch.Tensor:
    """(B, N) weights of the interior cells from the teacher's (B, 1, Hc, Wc) score, each
    image's summing to one (cells of the border ring weigh 0)."""
    hc, wc = score.shape[-2:]
    interior = interior_cells(hc, wc, score.device).reshape(1, -1).to(score.dtype)
    weights = score.reshape(score.shape[0], -1) * interior
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-6)


def distillation_losses(
    student: KeypointOutput, teacher: KeypointOutput, cfg: DistillConfig
) -> dict[str, torch.Tensor]:
    """The distillation terms for a batch of images both networks saw.

    Args:
        student: dense outputs, score (B, 1, Hc, Wc), coords (B, 2, Hc, Wc) in pixels,
            descriptors (B, D, Hs, Ws), float32.
        teacher: the same for the teacher (no gradient), descriptors (B, D, Ht, Wt).
        cfg: the terms' weights.

    Returns:
        'kd_score', 'kd_loc' (px), 'kd_desc' (1 - cosine) and 'kd_total' (their weighted sum).
    """
    dims = check_shape(student.score, 'B,1,Hc,Wc', 'student.score')
    check_shape(teacher.score, f'{dims["B"]},1,{dims["Hc"]},{dims["Wc"]}', 'teacher.score')
    if student.descriptors.shape[1] != teacher.descriptors.shape[1]:
        raise ValueError(
            f'student descriptors have {student.descriptors.shape[1]} channels, the '
            f"teacher's {teacher.descriptors.shape[1]}"
        )
    image_hw = (dims['Hc'] * 8, dims['Wc'] * 8)
    weights = teacher_weights(teacher.score.detach())
    hc, wc = dims['Hc'], dims['Wc']
    interior = interior_cells(hc, wc, student.score.device)
    score_s = student.score[:, 0][:, interior].clamp(1e-6, 1 - 1e-6)
    score_t = teacher.score[:, 0][:, interior].detach()
    kd_score = F.binary_cross_entropy(score_s, score_t)
    xy_s = student.coords.flatten(2).transpose(1, 2)  # (B, N, 2)
    xy_t = teacher.coords.flatten(2).transpose(1, 2).detach()
    gap = F.huber_loss(xy_s, xy_t, reduction='none', delta=LOCATION_HUBER_PX).sum(dim=2)
    kd_loc = (gap * weights).sum(dim=1).mean()
    desc_s = F.normalize(sample_map(student.descriptors, xy_t, *image_hw), dim=2)
    desc_t = F.normalize(sample_map(teacher.descriptors.detach(), xy_t, *image_hw), dim=2)
    kd_desc = ((1.0 - (desc_s * desc_t).sum(dim=2)) * weights).sum(dim=1).mean()
    total = cfg.score_weight * kd_score + cfg.location_weight * kd_loc
    total = total + cfg.descriptor_weight * kd_desc
    return {'kd_total': total, 'kd_score': kd_score, 'kd_loc': kd_loc, 'kd_desc': kd_desc}
