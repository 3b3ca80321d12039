"""Typed configuration for the networks and the inference front-end.

Every default lives here, once. Configs are frozen dataclasses; ``from_dict`` rejects unknown
keys so a typo in a YAML file or a checkpoint fails loudly instead of being ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, is_dataclass
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar('T')

CELL_SIZE = 8
"""Side of one detection cell in pixels (sigma_2 in the paper); the encoder downsamples by it."""
MIN_NETWORK_PIXELS = (3 * CELL_SIZE) ** 2
MAX_NETWORK_PIXELS = 40_000_000  # the network input bounds memory: ~12 GB of activations here
MAX_NMS_RADIUS = 1000.0
MAX_CROSS_RATIO = 8.0  # offsets beyond 8 cells would not be keypoints of their cell any more
MAX_DESCRIPTOR_DIM = 4096
MAX_WIDTH = 1024


@dataclass(frozen=True)
class ModelConfig:
    """KeypointNet architecture switches (the V0-V4 ablations are combinations of these).

    ``architecture`` 'vgg' is the paper's network; 'light' is the fast variant for CPUs
    (:mod:`kp2d_core.model.light_blocks`), shaped by ``widths``, ``downsample``,
    ``head_conv`` and ``descriptor_head_conv``, which the paper's network ignores.
    """

    architecture: Literal['vgg', 'light'] = 'vgg'
    use_color: bool = True  # 3-channel RGB input; False averages the channels into one.
    do_upsample: bool = True  # pixel-shuffle descriptor upsampling to H/4 with a skip connection
    do_cross: bool = True  # cross-border keypoints: offsets may leave their 8x8 cell
    cross_ratio: float = 2.0  # sigma_1 of Eq. 2 when do_cross is on (it is 1.0 when off)
    descriptor_dim: int = 256
    with_dropout: bool = True  # Dropout2d(p=dropout) in encoder and heads (training only)
    dropout: float = 0.2
    bn_momentum: float = 0.1
    widths: tuple[int, int, int, int] = (16, 32, 64, 128)  # light: channels of the 4 stages
    downsample: Literal['pool', 'stride'] = 'stride'  # light: max-pooling or strided convs
    head_conv: Literal['full', 'separable'] = 'full'  # light: score and location heads' 3x3
    descriptor_head_conv: Literal['full', 'separable'] = 'full'  # light: descriptor head's 3x3

    def __post_init__(self) -> None:
        # Written so that NaN fails every test; bounds keep a tampered config from allocating.
        if self.architecture not in ('vgg', 'light'):
            raise ValueError(f"architecture must be 'vgg' or 'light', got {self.architecture!r}")
        if len(self.widths) != 4 or not all(1 <= w <= MAX_WIDTH for w in self.widths):
            raise ValueError(f'widths must be 4 channel counts in [1, {MAX_WIDTH}]')
        heads = (self.head_conv, self.descriptor_head_conv)
        if self.downsample not in ('pool', 'stride') or not set(heads) <= {'full', 'separable'}:
            raise ValueError(
                f'downsample must be pool or stride and the head convolutions full or '
                f'separable, got {self.downsample!r}, {heads}'
            )
        if not 1.0 <= self.cross_ratio <= MAX_CROSS_RATIO:
            raise ValueError(
                f'cross_ratio must be in [1, {MAX_CROSS_RATIO}], got {self.cross_ratio}'
            )
        if not 1 <= self.descriptor_dim <= MAX_DESCRIPTOR_DIM:
            raise ValueError(
                f'descriptor_dim must be in [1, {MAX_DESCRIPTOR_DIM}], got {self.descriptor_dim}'
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f'dropout must be in [0, 1), got {self.dropout}')
        if not 0.0 < self.bn_momentum <= 1.0:
            raise ValueError(f'bn_momentum must be in (0, 1], got {self.bn_momentum}')

    @property
    def sigma1(self) -> float:
        """Offset range in cells (sigma_1 of Eq. 2): cross_ratio with do_cross, else 1."""
        return self.cross_ratio if self.do_cross else 1.0


@dataclass(frozen=True)
class ExtractorConfig:
    """How keypoints are selected from the dense network output at inference time."""

    top_k: int | None = 1000  # keep the k best-scored keypoints; None keeps all
    score_threshold: float = 0.0  # keep scores strictly above; 0 drops the zeroed border ring
    nms_radius: float = 0.0  # pixels in network-input resolution; 0 disables NMS
    resize: tuple[int, int] | None = None  # (H, W) the network sees; None: native (padded to 8)
    channel_order: Literal['bgr', 'rgb'] = 'bgr'  # order of 3/4-channel numpy inputs
    backend: Literal['auto', 'torch', 'onnxruntime'] = 'auto'  # 'auto': fastest gated choice
    precision: Literal['auto', 'fp32', 'bf16', 'fp16', 'int8'] = 'auto'
    max_input_pixels: int = 2_100_000  # larger inputs are shrunk to this (about 1920x1088)

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f'top_k must be positive or None, got {self.top_k}')
        if not 0.0 <= self.score_threshold < 1.0:
            raise ValueError(f'score_threshold must be in [0, 1), got {self.score_threshold}')
        if not 0.0 <= self.nms_radius <= MAX_NMS_RADIUS:
            raise ValueError(f'nms_radius must be in [0, {MAX_NMS_RADIUS}], got {self.nms_radius}')
        if self.channel_order not in ('bgr', 'rgb'):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {self.channel_order!r}")
        if self.backend not in ('auto', 'torch', 'onnxruntime'):
            raise ValueError(
                f"backend must be 'auto', 'torch' or 'onnxruntime', got {self.backend!r}"
            )
        if self.precision not in ('auto', 'fp32', 'bf16', 'fp16', 'int8'):
            raise ValueError(
                f'precision must be auto, fp32, bf16, fp16 or int8, got {self.precision!r}'
            )
        if not MIN_NETWORK_PIXELS <= self.max_input_pixels <= MAX_NETWORK_PIXELS:
            raise ValueError(
                f'max_input_pixels must be in [{MIN_NETWORK_PIXELS}, {MAX_NETWORK_PIXELS}], '
                f'got {self.max_input_pixels}'
            )
        if self.resize is not None:
            h, w = self.resize
            if h < 3 * CELL_SIZE or w < 3 * CELL_SIZE:
                raise ValueError(f'resize must be at least 24x24, got {self.resize}')
            if h * w > self.max_input_pixels:
                raise ValueError(
                    f'resize {h}x{w} exceeds max_input_pixels ({self.max_input_pixels})'
                )
            object.__setattr__(self, 'resize', (int(h), int(w)))


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict view of a (nested) config dataclass, safe for YAML and ``weights_only`` load."""
    if not is_dataclass(cfg):
        raise TypeError(f'expected a config dataclass, got {type(cfg).__name__}')
    return _plain(asdict(cfg))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build config ``cls`` from a plain dict, recursing into nested config dataclasses.

    Raises:
        ValueError: on unknown keys or values of the wrong type.
    """
    data = dict(data or {})
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f'unknown {cls.__name__} keys: {unknown}; known: {sorted(known)}')
    hints = get_type_hints(cls)
    kwargs = {
        name: _coerce(hints[name], value, f'{cls.__name__}.{name}') for name, value in data.items()
    }
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Check/convert one YAML value against a type hint (bool, int, float, str, tuples, None)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError('; '.join(errors))
    if origin is Literal:
        if value not in get_args(hint):
            raise ValueError(f'{where} must be one of {get_args(hint)}, got {value!r}')
        return value
    if origin is tuple:
        return _coerce_tuple(hint, value, where)
    if is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ValueError(f'{where} must be a mapping, got {value!r}')
        return from_dict(hint, value)
    return _coerce_scalar(hint, value, where)


def _coerce_tuple(hint: Any, value: Any, where: str) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f'{where} must be a list, got {value!r}')
    args = get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(args[0], v, where) for v in value)
    if len(args) != len(value):
        raise ValueError(f'{where} must have {len(args)} items, got {value!r}')
    return tuple(_coerce(a, v, where) for a, v in zip(args, value))


def _coerce_scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ValueError(f'{where} must be {hint.__name__}, got {value!r}')


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of nested ``data`` with ``a.b.c=value`` overrides applied.

    Values are parsed as YAML scalars/lists (``3``, ``0.5``, ``true``, ``[240, 320]``).

    Raises:
        ValueError: an override without ``=`` or one that descends into a non-mapping.
    """
    import yaml

    result = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition('=')
        if not sep or not key:
            raise ValueError(f'override {item!r} is not of the form key.sub=value')
        *parents, leaf = key.split('.')
        node = result
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f'override {item!r}: {part!r} is not a section')
        node[leaf] = yaml.safe_load(raw)
    return result


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def load_yaml_config(cls: type[T], path: str | None, overrides: list[str] | None = None) -> T:
    """Build ``cls`` from a YAML file (optional) plus ``key=value`` overrides.

    Unknown keys anywhere raise ``ValueError``, so typos fail loudly.
    """
    import yaml

    data: dict[str, Any] = {}
    if path:
        with open(path) as handle:
            loaded = yaml.safe_load(handle) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f'{path} must hold a mapping at the top level')
        data = loaded
    return from_dict(cls, apply_overrides(data, overrides or []))
