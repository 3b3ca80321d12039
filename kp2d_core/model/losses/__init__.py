"""The KP2D training losses (paper Sec. 3): keypoint, descriptor, score and IONet terms."""

from kp2d_core.model.losses.config import LossConfig
from kp2d_core.model.losses.descriptors import descriptor_loss, io_loss, select_cells, triplet_loss
from kp2d_core.model.losses.keypoints import (
    associate,
    location_loss,
    repeatability_score_loss,
    score_loss,
)
from kp2d_core.model.losses.total import kp2d_losses

__all__ = [
    'LossConfig',
    'associate',
    'descriptor_loss',
    'io_loss',
    'kp2d_losses',
    'location_loss',
    'repeatability_score_loss',
    'score_loss',
    'select_cells',
    'triplet_loss',
]
