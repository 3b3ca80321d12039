"""The node's parameters declared on a node, from the table of :mod:`kp2d_ros.parameters`:
each with its ROS descriptor (``ros2 param describe`` shows its range or choices), a value of
the wrong type or range refused in the parameter's own words, and a warning for parameters
given to the node that it does not have. rclpy's types are imported when a function runs.
"""

from __future__ import annotations

from typing import Any

from kp2d_ros.parameters import PARAMETERS, Param, check_value, unknown_names


def descriptor(param: Param) -> Any:
    """The ROS descriptor (rcl_interfaces/ParameterDescriptor) of a table entry (``ros2 param
    describe`` shows its range)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

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
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

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
