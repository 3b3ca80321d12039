"""The shipped network variants by name: 'default' (the paper's V4) and 'light' (for CPUs)."""

from __future__ import annotations

from kp2d_core.config import ModelConfig

DEFAULT = ModelConfig()
LIGHT = ModelConfig(
    architecture='light',
    use_color=False,
    do_upsample=False,
    with_dropout=False,
    widths=(16, 32, 64, 128),
    downsample='stride',
    head_conv='full',
    descriptor_dim=256,
)
VARIANTS = {'default': DEFAULT, 'light': LIGHT}
