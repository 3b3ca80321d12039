"""Declaring the parameter table on a node: types, ranges and choices in the descriptors, and
one clear line for every value that does not fit (from a params file, ``-p`` or the launch
file), instead of rclpy's traceback.
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

from kp2d_ros.options import check_value, unknown_names
from kp2d_ros.params import PARAMETERS, Param


def descriptor(param: Param) -> ParameterDescriptor:
    """The ROS descriptor of a table entry (``ros2 param describe`` shows its range)."""
    out = ParameterDescriptor(description=param.description, read_only=param.read_only)
    if param.choices:
        out.additional_constraints = f'one of: {", ".join(param.choices)}'
    elif param.low is not None and param.type_name == 'integer':
        out.integer_range = [IntegerRange(from_value=param.low, to_value=param.high, step=0)]
    elif param.low is not None:
        out.floating_point_range = [
            FloatingPointRange(from_value=float(param.low), to_value=float(param.high), step=0.0)
        ]
    return out


def declare_parameters(node: Any) -> None:
    """Declare every parameter; a value of the wrong type or range raises one ValueError."""
    for param in PARAMETERS:
        try:
            node.declare_parameter(param.name, param.default, descriptor(param))
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            override = _override(node, param.name)
            if override is not None:
                check_value(param, override)  # raises with the parameter's own words
            raise ValueError(f'{param.name}: {_first_line(exc)}') from None


def _override(node: Any, name: str) -> Any:
    overrides = getattr(node, '_parameter_overrides', {})
    return overrides[name].value if name in overrides else None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:200]


def warn_unknown_overrides(node: Any) -> list[str]:
    """Warn once about parameters given to the node (params file, ``-p``) that it does not
    have, e.g. a misspelled key; returns their names."""
    names = unknown_names(getattr(node, '_parameter_overrides', {}))
    if names:
        node.get_logger().warning(
            f'ignoring unknown parameters (misspelled?): {", ".join(names[:20])}'
        )
    return names
