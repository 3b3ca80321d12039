"""The node's validated options: parameter values -> :class:`NodeOptions` (the pipeline
configuration and the node-only settings), and the parameters of a ROS 2 params file.

Type and range rules come from the table in :mod:`kp2d_ros.params`; the rules between
parameters (a resize within the pixel budget, two different frame names, a known device)
are here. Importing this module needs no ROS.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any

from kp2d_core.config import ExtractorConfig
from kp2d_core.pipeline import PipelineConfig
from kp2d_core.tracking import TrackerConfig
from kp2d_core.tracks import TrackConfig
from kp2d_ros.bookkeeping import HealthThresholds
from kp2d_ros.params import (
    BY_NAME,
    DEFAULTS,
    DEVICE,
    MAX_RESIZE_SIDE,
    STANDARD,
    Param,
    type_name,
)


def check_value(param: Param, value: Any) -> Any:
    """``value`` for ``param`` if its type and range are right.

    Raises:
        ValueError: one line naming the parameter, the expected type or range and the value.
    """
    if hasattr(value, 'tolist'):  # array.array / NumPy from a parameter message
        value = value.tolist()
    expected, got = param.type_name, type_name(value)
    if got != expected:
        hint = (
            ' (write it with a decimal point, e.g. 5.0)'
            if (expected, got)
            == (
                'double',
                'integer',
            )
            else ''
        )
        raise ValueError(f'{param.name} must be {expected}, got {got} {_short(value)}{hint}')
    if expected == 'double' and not math.isfinite(value):
        raise ValueError(f'{param.name} must be finite, got {value}')
    if param.low is not None and not param.low <= value <= param.high:
        raise ValueError(f'{param.name} must be in {param.describe_range()}, got {value}')
    if param.choices and value not in param.choices:
        raise ValueError(f'{param.name} must be one of {param.choices}, got {_short(value)}')
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + '...'


def unknown_names(names: Any) -> list[str]:
    """The names that are neither kp2d parameters nor standard ROS 2 node parameters."""
    return sorted(
        n for n in names if n not in DEFAULTS and n not in STANDARD and not n.startswith('qos_')
    )


@dataclass(frozen=True)
class NodeOptions:
    """Everything the node reads from its parameters, validated."""

    pipeline: PipelineConfig
    publish: dict[str, bool]
    frames: tuple[str, str]  # (odom_frame, pose_frame)
    camera_info_max_age_s: float
    max_future_stamp_s: float
    diagnostics_period_s: float
    health: HealthThresholds
    image_transport: str
    image_reliability: str
    device: str


def options_from_values(values: dict[str, Any]) -> NodeOptions:
    """Validate parameter values (missing ones take their defaults) and build the options.

    Raises:
        ValueError: one line naming the offending parameter.
    """
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise ValueError(f'unknown parameters {unknown}')
    values = {name: check_value(BY_NAME[name], v) for name, v in {**DEFAULTS, **values}.items()}
    device = values['model.device']
    if not DEVICE.match(device):
        raise ValueError(f"model.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    frames = (str(values['odom_frame']), str(values['pose_frame']))
    if not all(frames) or frames[0] == frames[1]:
        raise ValueError(f'odom_frame and pose_frame must be two different names, got {frames}')
    try:
        pipeline = PipelineConfig(_extractor(values), _tracker(values), _tracks(values))
    except (TypeError, ValueError) as exc:
        raise ValueError(f'invalid parameter: {exc}') from exc
    publish = {k.split('.', 1)[1]: v for k, v in values.items() if k.startswith('publish.')}
    health = HealthThresholds(
        values['diagnostics.warn_output_ratio'],
        values['diagnostics.warn_latency_s'],
        values['diagnostics.error_latency_s'],
    )
    return NodeOptions(
        pipeline,
        publish,
        frames,
        values['camera_info_max_age_s'],
        values['max_future_stamp_s'],
        values['diagnostics_period_s'],
        health,
        values['image_transport'],
        values['image_reliability'],
        device,
    )


def _extractor(values: dict[str, Any]) -> ExtractorConfig:
    resize = list(values['detector.resize'])
    budget = values['detector.max_input_pixels']
    if resize != [0, 0]:
        if len(resize) != 2 or not all(24 <= v <= MAX_RESIZE_SIDE for v in resize):
            raise ValueError(
                f'detector.resize must be [0, 0] or [height, width] with sides in '
                f'[24, {MAX_RESIZE_SIDE}], got {resize}'
            )
        if resize[0] * resize[1] > budget:
            raise ValueError(
                f'detector.resize {resize} exceeds detector.max_input_pixels ({budget})'
            )
    return ExtractorConfig(
        top_k=values['detector.top_k'],
        score_threshold=values['detector.score_threshold'],
        nms_radius=values['detector.nms_radius'],
        resize=tuple(resize) if resize != [0, 0] else None,
        channel_order='bgr',
        backend=values['model.backend'],
        precision=values['model.precision'],
        max_input_pixels=budget,
    )


def _tracker(values: dict[str, Any]) -> TrackerConfig:
    return TrackerConfig(
        ratio=values['matcher.ratio'] or None,
        max_distance=values['matcher.max_distance'] or None,
        ransac_method=values['tracker.ransac_method'],
        ransac_threshold_px=values['tracker.ransac_threshold_px'],
        min_keyframe_inliers=values['tracker.min_keyframe_inliers'],
        subpixel=values['tracker.subpixel'],
        align=values['tracker.align'],
    )


def _tracks(values: dict[str, Any]) -> TrackConfig:
    return TrackConfig(
        max_tracks=values['tracks.max_count'],
        min_distance_px=values['tracks.min_distance_px'],
        max_descriptor_distance=values['tracks.max_descriptor_distance'],
        max_epipolar_px=values['tracks.max_epipolar_px'],
    )


def params_file_values(path: str) -> tuple[dict[str, Any], list[str]]:
    """(kp2d parameters, unknown keys) of a ROS 2 parameters file (any node key or ``/**``).

    Raises:
        ValueError: the file is not YAML or not a parameters file.
    """
    import yaml

    try:
        with open(path) as handle:
            data = yaml.safe_load(handle) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f'{path} is not valid YAML: {exc}') from exc
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a mapping of node names to ros__parameters')
    values: dict[str, Any] = {}
    for section in data.values():
        params = section.get('ros__parameters') if isinstance(section, dict) else None
        if isinstance(params, dict):
            values.update(_flatten(params))
    known = {k: v for k, v in values.items() if k in DEFAULTS}
    return known, sorted(unknown_names(values))


def _flatten(params: dict[str, Any], prefix: str = '') -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat
