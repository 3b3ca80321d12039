"""ROS 2 parameters files (``--params-file``, ``ros__parameters``) read without ROS: the
kp2d parameters they set (:mod:`kp2d_ros.parameters`' table) and the keys it does not know."""

from __future__ import annotations

from typing import Any

from kp2d_ros.parameters import DEFAULTS, unknown_names


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
        raise ValueError(f'{path} is not valid YAML: {" ".join(str(exc).split())}') from None
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
