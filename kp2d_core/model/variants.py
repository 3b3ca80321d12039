"""The shipped network variants by name: 'default' (the paper's V4) and 'light' (for CPUs)."""

from __future__ import annotations

from kp2d_core.config import ModelConfig

DEFAULT = ModelConfig()
LIGHT = ModelConfig(
    architecture='light',
    use_color=False,
    do_upsample=True,
    with_dropout=False,
    widths=(8, 16, 32, 128),
    downsample='stride',
    head_conv='separable',
    descriptor_head_conv='full',
    descriptor_dim=256,
)  # chosen by measurement: models/light_model.md; trained by training/configs/light_distill*.yaml
VARIANTS = {'default': DEFAULT, 'light': LIGHT}
