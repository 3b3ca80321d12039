"""Self-supervised KP2D training: configuration, the loss module, the loop and its state.

``train(cfg)`` runs (or, with ``resume=True``, continues) a run; see :mod:`.loop`.
"""

from kp2d_core.training.config import OptimConfig, TrainConfig, learning_rate
from kp2d_core.training.distributed import Context, setup_distributed
from kp2d_core.training.loop import Trainer, train
from kp2d_core.training.module import KP2DTrainModule

__all__ = [
    'Context',
    'KP2DTrainModule',
    'OptimConfig',
    'TrainConfig',
    'Trainer',
    'learning_rate',
    'setup_distributed',
    'train',
]
