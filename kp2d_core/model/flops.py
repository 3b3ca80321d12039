"""The arithmetic of a network's forward pass, counted from its convolutions."""

from __future__ import annotations

import torch
from torch import nn


def conv_flops(model: nn.Module, height: int, width: int) -> int:
    """FLOPs (2 per multiply-add) of every convolution of ``model`` on one (H, W) image.

    Convolutions hold all but a fraction of a percent of KeypointNet's arithmetic; the count
    is exact for them (groups and strides included) and leaves out normalisation,
    activations, pooling and upsampling.

    Args:
        model: a network whose ``cfg.use_color`` says its input channels.
        height, width: input size (multiples of 8).
    """
    total = 0

    def count(module: nn.Conv2d, _: tuple, output: torch.Tensor) -> None:
        nonlocal total
        per_output = (module.in_channels // module.groups) * module.kernel_size[0]
        per_output *= module.kernel_size[1]
        total += 2 * per_output * output[0].numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    channels = 3 if model.cfg.use_color else 1
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, channels, height, width))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total
