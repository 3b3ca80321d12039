"""The node's ROS parameters: names, defaults, descriptions, and mapping to core configs.

``config/kp2d.yaml`` holds the same defaults. Numbers where 0 means "off" (nms radius,
ratio, max distance, resize) are documented per parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kp2d_core.config import ExtractorConfig
from kp2d_core.tracking import TrackerConfig

# name: (default, description, read_only)
PARAMETERS: dict[str, tuple[Any, str, bool]] = {
    'model.weights': ('', 'checkpoint path; empty = the bundled default weights', True),
    'model.device': ('auto', "'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'", True),
    'model.half_precision': (False, 'fp16 inference (CUDA only)', True),
    'detector.top_k': (1000, 'keep the k best keypoints (>= 1)', False),
    'detector.score_threshold': (0.0, 'keep scores above this, in [0, 1)', False),
    'detector.nms_radius': (0.0, 'non-maximum suppression radius in px; 0 = off', False),
    'detector.resize_height': (0, 'network input height; 0 = native (with width 0)', False),
    'detector.resize_width': (0, 'network input width; 0 = native (with height 0)', False),
    'matcher.ratio': (0.0, 'Lowe ratio gate in (0, 1]; 0 = off', False),
    'matcher.max_distance': (0.0, 'descriptor distance gate in (0, 2]; 0 = off', False),
    'tracker.ransac_method': ('magsac', "'magsac', 'ransac', 'usac' or 'lmeds'", False),
    'tracker.ransac_threshold_px': (3.0, 'RANSAC inlier threshold in px (> 0)', False),
    'tracker.min_keyframe_inliers': (40, 'new keyframe when inliers drop below this', False),
    'publish.keypoints': (True, 'publish ~/keypoints', False),
    'publish.homography': (True, 'publish ~/homography', False),
    'publish.odometry': (True, 'publish ~/odometry (needs camera_info)', False),
    'publish.tf': (False, 'broadcast odom_frame -> camera frame on /tf (needs tf2_ros)', False),
    'publish.debug_image': (True, 'publish ~/debug_image when it has subscribers', False),
    'odom_frame': ('kp2d_odom', 'frame_id of ~/odometry and of the TF parent', False),
    'camera_info_max_age_s': (
        1.0,
        'use a CameraInfo at most this far from the image stamp',
        False,
    ),
    'diagnostics_period_s': (5.0, 'period of /diagnostics and the status line (> 0)', True),
}


@dataclass(frozen=True)
class NodeOptions:
    """Everything the node reads from its parameters, validated."""

    extractor: ExtractorConfig
    tracker: TrackerConfig
    publish: dict[str, bool]
    odom_frame: str
    camera_info_max_age_s: float
    diagnostics_period_s: float


def options_from_values(values: dict[str, Any]) -> NodeOptions:
    """Validate parameter values and build :class:`NodeOptions`.

    Raises:
        ValueError: naming the offending parameter.
    """
    resize = (int(values['detector.resize_height']), int(values['detector.resize_width']))
    if (resize[0] == 0) != (resize[1] == 0):
        raise ValueError('detector.resize_height and _width must both be 0 or both be set')
    ratio, max_distance = float(values['matcher.ratio']), float(values['matcher.max_distance'])
    if not 0.0 <= max_distance <= 2.0:
        raise ValueError(f'matcher.max_distance must be in [0, 2], got {max_distance}')
    for name in ('camera_info_max_age_s', 'diagnostics_period_s'):
        if float(values[name]) <= 0:
            raise ValueError(f'{name} must be > 0, got {values[name]}')
    if not str(values['odom_frame']):
        raise ValueError('odom_frame must not be empty')
    try:
        extractor = ExtractorConfig(
            top_k=int(values['detector.top_k']),
            score_threshold=float(values['detector.score_threshold']),
            nms_radius=float(values['detector.nms_radius']),
            resize=resize if resize[0] else None,
            channel_order='bgr',
            half_precision=bool(values['model.half_precision']),
        )
        tracker = TrackerConfig(
            ratio=ratio or None,
            max_distance=max_distance or None,
            ransac_method=str(values['tracker.ransac_method']),
            ransac_threshold_px=float(values['tracker.ransac_threshold_px']),
            min_keyframe_inliers=int(values['tracker.min_keyframe_inliers']),
        )
    except ValueError as exc:
        raise ValueError(f'invalid parameter: {exc}') from exc
    publish = {k.split('.', 1)[1]: bool(v) for k, v in values.items() if k.startswith('publish.')}
    return NodeOptions(
        extractor,
        tracker,
        publish,
        str(values['odom_frame']),
        float(values['camera_info_max_age_s']),
        float(values['diagnostics_period_s']),
    )
