"""KP2D networks: :class:`KeypointNet` (detector/descriptor) and :class:`IONet` (training)."""

from kp2d_core.networks.io_net import IONet
from kp2d_core.networks.keypoint_net import KeypointNet, KeypointOutput

__all__ = ['IONet', 'KeypointNet', 'KeypointOutput']
