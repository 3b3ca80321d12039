"""The node's parameters: the one table of names, defaults and descriptions, and its mapping
onto the kp2d_core pipeline configuration.

Defaults of the pipeline come from the kp2d_core dataclasses (:class:`PipelineConfig`);
node-only settings are defined here. ``config/kp2d.yaml`` is generated from this table
(``python -m kp2d_ros.params > config/kp2d.yaml``; a test checks it) and the replay tool reads
the same table, so node, file and replay cannot disagree. Numbers where 0 means "off" are
documented per parameter. Importing this module needs no ROS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kp2d_core.config import ExtractorConfig
from kp2d_core.pipeline import PipelineConfig
from kp2d_core.tracking import TrackerConfig
from kp2d_ros.bookkeeping import HealthThresholds

_EXTRACTOR = ExtractorConfig()
_TRACKER = TrackerConfig()


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    read_only: bool = False


PARAMETERS: tuple[Param, ...] = (
    Param('model.weights', '', 'checkpoint path; empty = the bundled default weights', True),
    Param('model.device', 'auto', "'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'", True),
    Param(
        'model.backend',
        _EXTRACTOR.backend,
        "'auto' (fastest that passed the accuracy gate), 'torch' or 'onnxruntime'",
        True,
    ),
    Param(
        'model.precision', _EXTRACTOR.precision, "'auto', 'fp32', 'bf16', 'fp16' or 'int8'", True
    ),
    Param('detector.top_k', _EXTRACTOR.top_k, 'keep the k best keypoints (>= 1)'),
    Param('detector.score_threshold', _EXTRACTOR.score_threshold, 'keep scores above, in [0, 1)'),
    Param('detector.nms_radius', _EXTRACTOR.nms_radius, 'NMS radius in px; 0 = off'),
    Param('detector.resize', [0, 0], 'network input [height, width]; [0, 0] = native size'),
    Param(
        'detector.max_input_pixels',
        _EXTRACTOR.max_input_pixels,
        'larger frames are shrunk to this many pixels (memory bound)',
    ),
    Param('matcher.ratio', 0.0, 'Lowe ratio gate in (0, 1]; 0 = off'),
    Param('matcher.max_distance', 0.0, 'descriptor distance gate in (0, 2]; 0 = off'),
    Param('tracker.ransac_method', _TRACKER.ransac_method, "'magsac', 'ransac', 'usac', 'lmeds'"),
    Param('tracker.ransac_threshold_px', _TRACKER.ransac_threshold_px, 'inlier threshold, px'),
    Param(
        'tracker.min_keyframe_inliers',
        _TRACKER.min_keyframe_inliers,
        'new keyframe when inliers drop below this',
    ),
    Param('publish.keypoints', True, 'publish ~/keypoints'),
    Param('publish.homography', True, 'publish ~/homography'),
    Param('publish.odometry', True, 'publish ~/odometry (needs camera_info)'),
    Param('publish.tf', False, 'broadcast odom_frame -> camera frame on /tf (needs tf2_ros)'),
    Param('publish.debug_image', True, 'publish ~/debug_image when it has subscribers'),
    Param('odom_frame', 'kp2d_odom', 'frame_id of ~/odometry and parent frame of the TF'),
    Param('pose_frame', 'kp2d_camera', 'child frame of ~/odometry and of the TF (a new frame)'),
    Param('camera_info_max_age_s', 1.0, 'use a CameraInfo at most this far from the image stamp'),
    Param('image_transport', 'raw', "'raw' (sensor_msgs/Image) or 'compressed'", True),
    Param(
        'image_reliability', 'best_effort', "'best_effort' (cameras) or 'reliable' (bags)", True
    ),
    Param('max_future_stamp_s', 10.0, 'drop frames stamped further ahead of the clock (s)'),
    Param('diagnostics_period_s', 5.0, 'period of /diagnostics and the status line (> 0)', True),
    Param('diagnostics.window_s', 10.0, 'time window of the rates and latencies (s)', True),
    Param('diagnostics.warn_output_ratio', 0.5, 'WARN below this share of frames processed'),
    Param('diagnostics.warn_latency_s', 1.0, 'WARN above this p95 latency (s)'),
    Param('diagnostics.error_latency_s', 5.0, 'ERROR above this p95 latency (s)'),
)
CHOICES = {
    'image_transport': ('raw', 'compressed'),
    'image_reliability': ('best_effort', 'reliable'),
}
DEFAULTS: dict[str, Any] = {p.name: p.default for p in PARAMETERS}


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


def options_from_values(values: dict[str, Any]) -> NodeOptions:
    """Validate parameter values (missing ones take their defaults) and build the options.

    Raises:
        ValueError: naming the offending parameter.
    """
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise ValueError(f'unknown parameters {unknown}')
    values = {**DEFAULTS, **values}
    positive = ('camera_info_max_age_s', 'diagnostics_period_s', 'max_future_stamp_s')
    for name in positive + tuple(k for k in DEFAULTS if k.startswith('diagnostics.')):
        if not float(values[name]) > 0:
            raise ValueError(f'{name} must be > 0, got {values[name]}')
    for name, choices in CHOICES.items():
        if values[name] not in choices:
            raise ValueError(f'{name} must be one of {choices}, got {values[name]!r}')
    frames = (str(values['odom_frame']), str(values['pose_frame']))
    if not all(frames) or frames[0] == frames[1]:
        raise ValueError(f'odom_frame and pose_frame must be two different names, got {frames}')
    try:
        pipeline = PipelineConfig(_extractor(values), _tracker(values))
    except (TypeError, ValueError) as exc:
        raise ValueError(f'invalid parameter: {exc}') from exc
    publish = {k.split('.', 1)[1]: bool(v) for k, v in values.items() if k.startswith('publish.')}
    health = HealthThresholds(
        float(values['diagnostics.warn_output_ratio']),
        float(values['diagnostics.warn_latency_s']),
        float(values['diagnostics.error_latency_s']),
    )
    return NodeOptions(
        pipeline,
        publish,
        frames,
        float(values['camera_info_max_age_s']),
        float(values['max_future_stamp_s']),
        float(values['diagnostics_period_s']),
        health,
        str(values['image_transport']),
        str(values['image_reliability']),
    )


def _extractor(values: dict[str, Any]) -> ExtractorConfig:
    resize = [int(v) for v in values['detector.resize']]
    if len(resize) != 2 or (resize != [0, 0] and min(resize) <= 0):
        raise ValueError(f'detector.resize must be [height, width] or [0, 0], got {resize}')
    return ExtractorConfig(
        top_k=int(values['detector.top_k']),
        score_threshold=float(values['detector.score_threshold']),
        nms_radius=float(values['detector.nms_radius']),
        resize=tuple(resize) if resize[0] else None,
        channel_order='bgr',
        backend=str(values['model.backend']),
        precision=str(values['model.precision']),
        max_input_pixels=int(values['detector.max_input_pixels']),
    )


def _tracker(values: dict[str, Any]) -> TrackerConfig:
    ratio, max_distance = float(values['matcher.ratio']), float(values['matcher.max_distance'])
    if not 0.0 <= max_distance <= 2.0:
        raise ValueError(f'matcher.max_distance must be in [0, 2], got {max_distance}')
    return TrackerConfig(
        ratio=ratio or None,
        max_distance=max_distance or None,
        ransac_method=str(values['tracker.ransac_method']),
        ransac_threshold_px=float(values['tracker.ransac_threshold_px']),
        min_keyframe_inliers=int(values['tracker.min_keyframe_inliers']),
    )


def params_file_values(path: str) -> dict[str, Any]:
    """The kp2d parameters of a ROS 2 parameters file (any node-name key, or ``/**``)."""
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
    return {k: v for k, v in values.items() if k in DEFAULTS}


def _flatten(params: dict[str, Any], prefix: str = '') -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def yaml_text() -> str:
    """``config/kp2d.yaml``: every parameter with its default and description."""
    lines = [
        '# Parameters of the kp2d node, generated by `python -m kp2d_ros.params` from the',
        '# table in kp2d_ros/params.py (do not edit by hand). `/**` applies them under any',
        '# namespace and node name.',
        '/**:',
        '  ros__parameters:',
    ]
    for p in PARAMETERS:
        note = ' (read-only)' if p.read_only else ''
        lines.append(f'    {p.name}: {_yaml_value(p.default)}  # {p.description}{note}')
    return '\n'.join(lines) + '\n'


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, list):
        return '[' + ', '.join(_yaml_value(v) for v in value) + ']'
    return repr(value)


def markdown_table() -> str:
    """The README's parameter table (``python -m kp2d_ros.params --markdown``)."""
    lines = ['| parameter | default | |', '|---|---|---|']
    for p in PARAMETERS:
        note = ' Read-only.' if p.read_only else ''
        lines.append(f'| `{p.name}` | `{_yaml_value(p.default)}` | {p.description}.{note} |')
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    import sys

    sys.stdout.write(markdown_table() if '--markdown' in sys.argv else yaml_text())
